"""Platform operations across tenants: tenants and subscriptions, fleet-wide devices and alerts, system health and
the operator audit log.

Every function takes an operator transaction (role `pulse_operator`, all tenants visible) and never commits.
A change that alters what ingest accepts from a device (a tenant or subscription status) announces every affected
device on `pulse_device_changed`, delivered at commit, so ingest instances drop their cached registry records at
once instead of after the cache TTL.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import msgspec
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import Conflict, Forbidden, NotFound, ValidationError
from pulse.fleet.service import DEVICE_CHANGED_CHANNEL, check_tenant_id, create_tenant

MAX_PAGE = 500
MAX_OFFSET = 1_000_000_000
MAX_DEVICE_LIMIT = 10_000_000
MAX_TERM_DAYS = 3650
ALIVE_WITHIN_S = 15
TELEMETRY_COUNT_TIMEOUT_MS = 3000

TENANT_STATUSES = ("ACTIVE", "SUSPENDED", "DELETED")
SUBSCRIPTION_KINDS = ("MAIN", "ADDON", "TRIAL", "TEMPORARY")
SUBSCRIPTION_STATUSES = ("TRIAL", "ACTIVE", "GRACE", "SUSPENDED", "EXPIRED")
USABLE_STATUSES = ("TRIAL", "ACTIVE", "GRACE")  # ingest accepts devices of these (see pulse.ingest.validate)
DEVICE_STATES = ("UNKNOWN", "ONLINE", "STALE", "OFFLINE")
DEVICE_STATUSES = ("ACTIVE", "DISABLED", "REVOKED", "DECOMMISSIONED")
ALERT_STATUSES = ("OPEN", "ACKNOWLEDGED", "CLOSED")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# --- messages ------------------------------------------------------------------------------------------------------

class Subscription(msgspec.Struct, kw_only=True):
    """`expires_at` is the end of the current term (null: open-ended); `device_count` excludes decommissioned."""

    subscription_id: str
    tenant_id: str
    kind: str
    status: str
    device_limit: int
    device_count: int
    parent_subscription_id: str | None
    term_start_at: datetime
    expires_at: datetime | None
    grace_days: int
    description: str | None
    status_changed_at: datetime
    created_at: datetime
    updated_at: datetime


class TenantSummary(msgspec.Struct, kw_only=True):
    """`device_limit` sums the usable (TRIAL, ACTIVE, GRACE) subscriptions; open alerts are OPEN or ACKNOWLEDGED."""

    tenant_id: str
    name: str
    status: str
    timezone: str
    contact_email: str | None
    device_count: int
    device_limit: int
    open_alert_count: int
    created_at: datetime
    updated_at: datetime


class Tenant(TenantSummary, kw_only=True):
    heartbeat_interval_s: int
    subscriptions: list[Subscription]


class TenantPage(msgspec.Struct, kw_only=True):
    items: list[TenantSummary]
    total: int
    limit: int
    offset: int


class SubscriptionPage(msgspec.Struct, kw_only=True):
    items: list[Subscription]
    total: int
    limit: int
    offset: int


class FleetDevice(msgspec.Struct, kw_only=True):
    """A device of any tenant: registry `status` and liveness `state`."""

    tenant_id: str
    device_id: str
    name: str | None
    device_type: str | None
    site_id: str | None
    subscription_id: str | None
    status: str
    state: str
    last_seen_at: datetime | None
    tags: list[str]
    created_at: datetime


class DevicePage(msgspec.Struct, kw_only=True):
    items: list[FleetDevice]
    total: int
    limit: int
    offset: int


class FleetAlert(msgspec.Struct, kw_only=True):
    alert_id: str
    tenant_id: str
    alert_type: str
    device_id: str | None
    site_id: str | None
    severity: int
    status: str
    title: str
    opened_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    closed_at: datetime | None


class AlertPage(msgspec.Struct, kw_only=True):
    items: list[FleetAlert]
    total: int
    limit: int
    offset: int


class ProcessInstance(msgspec.Struct, kw_only=True):
    """One service_heartbeats row; `alive` when it beat within ALIVE_WITHIN_S seconds."""

    instance: str
    ready: bool
    ready_since: datetime | None
    beat_at: datetime
    beat_age_s: float
    alive: bool
    detail: str


class ProcessHealth(msgspec.Struct, kw_only=True):
    process_type: str
    alive: int
    ready: int
    instances: list[ProcessInstance]


class NotificationQueue(msgspec.Struct, kw_only=True):
    pending_due: int
    pending_later: int
    in_progress: int
    in_progress_lease_expired: int
    dead: int
    oldest_due_age_s: float | None


class QuarantineLastHour(msgspec.Struct, kw_only=True):
    total: int
    by_reason: dict[str, int]


class SystemHealth(msgspec.Struct, kw_only=True):
    """`telemetry_rows_last_minute` counts rows by message time; null when counting took too long."""

    checked_at: datetime
    alive_within_s: int
    processes: list[ProcessHealth]
    notifications: NotificationQueue
    telemetry_rows_last_minute: int | None
    quarantine_last_hour: QuarantineLastHour


class OperatorAuditEntry(msgspec.Struct, kw_only=True):
    audit_id: int
    at: datetime
    actor: str
    actor_roles: list[str]
    action: str
    tenant_id: str | None
    resource: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]


class OperatorAuditPage(msgspec.Struct, kw_only=True):
    """Newest first."""

    items: list[OperatorAuditEntry]
    total: int
    limit: int
    offset: int


# --- checks ------------------------------------------------------------------------------------------------------

def _page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"must be 1-{MAX_PAGE}", field="limit")
    if not 0 <= offset <= MAX_OFFSET:
        raise ValidationError(f"must be 0-{MAX_OFFSET}", field="offset")


def check_filter(value: str | None, field: str) -> str | None:
    """A free-text filter as given; NUL cannot be stored in PostgreSQL text, so it is a 400 rather than an error
    from the database."""
    if value is not None and "\x00" in value:
        raise ValidationError("must not contain NUL characters", field=field)
    return value


def _member(value: Any, allowed: tuple[str, ...], field: str) -> str:
    """`value` (any case) as one of `allowed`, or a 400 naming the field and the choices."""
    if not isinstance(value, str) or value.upper() not in allowed:
        raise ValidationError(f"must be one of {', '.join(allowed)}", field=field)
    return value.upper()


def parse_statuses(value: str | None, allowed: tuple[str, ...], field: str = "status") -> list[str]:
    """A comma-separated filter of status names (any case), each checked; empty means no filter."""
    out = [part.strip().upper() for part in (value or "").split(",") if part.strip()]
    return [_member(status, allowed, field) for status in out]


def _name(value: Any, field: str = "name", max_len: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"must be 1-{max_len} characters", field=field)
    value = value.strip()
    if len(value) > max_len or not value.isprintable():
        raise ValidationError(f"must be 1-{max_len} printable characters on one line", field=field)
    return value


def _email(value: Any, field: str = "contact_email") -> str | None:
    if value is None:
        return None
    email = value.strip() if isinstance(value, str) else ""
    if not email or len(email) > 254 or not _EMAIL_RE.match(email) or not email.isprintable():
        raise ValidationError("must be an email address such as noc@example.com", field=field)
    return email


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def _timezone(value: Any, field: str = "timezone") -> str:
    if not isinstance(value, str) or value not in _zones():
        raise ValidationError("must be an IANA time zone name such as Europe/Berlin or UTC", field=field)
    try:
        ZoneInfo(value)
    except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValidationError("must be an IANA time zone name such as Europe/Berlin or UTC", field=field) from exc
    return value


def _device_limit(value: Any, field: str = "device_limit") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DEVICE_LIMIT:
        raise ValidationError(f"must be a whole number from 0 to {MAX_DEVICE_LIMIT}", field=field)
    return value


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValidationError("must be an ISO-8601 time with a UTC offset, e.g. 2027-01-01T00:00:00Z", field=field)
    return value


def parse_time(value: str | None, field: str) -> datetime | None:
    """An ISO-8601 time with a UTC offset (a query parameter), or a 400 naming the field."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError("must be an ISO-8601 time such as 2027-01-01T00:00:00Z", field=field) from None
    return _aware(parsed, field)


def parse_subscription_id(value: Any, field: str = "subscription_id") -> str:
    """A canonical UUID string, or a 400 naming the field."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValidationError("must be a UUID", field=field) from None


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# --- tenants -----------------------------------------------------------------------------------------------------

_TENANT_SQL = """
SELECT t.tenant_id, t.name, t.status, t.timezone, t.contact_email, t.heartbeat_interval_s, t.created_at,
       t.updated_at,
       (SELECT count(*) FROM devices d
         WHERE d.tenant_id = t.tenant_id AND d.status <> 'DECOMMISSIONED') AS device_count,
       (SELECT coalesce(sum(s.device_limit), 0) FROM subscriptions s
         WHERE s.tenant_id = t.tenant_id AND s.status IN ('TRIAL', 'ACTIVE', 'GRACE')) AS device_limit,
       (SELECT count(*) FROM alerts a
         WHERE a.tenant_id = t.tenant_id AND a.status IN ('OPEN', 'ACKNOWLEDGED')) AS open_alert_count
FROM tenants t
"""

_SUMMARY_FIELDS = ("tenant_id", "name", "status", "timezone", "contact_email", "device_count", "device_limit",
                   "open_alert_count", "created_at", "updated_at")


def _summary(row: Any) -> TenantSummary:
    m = row._mapping
    return TenantSummary(**{k: m[k] for k in _SUMMARY_FIELDS})


async def list_tenants(conn: AsyncConnection, *, q: str | None = None, status: str | None = None, limit: int = 50,
                       offset: int = 0) -> TenantPage:
    """Tenants by id; `q` matches part of the id or name (any case), `status` one of TENANT_STATUSES."""
    _page(limit, offset)
    q = check_filter(q, "q")
    where: list[str] = ["true"]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status is not None:
        where.append("t.status = :status")
        params["status"] = _member(status, TENANT_STATUSES, "status")
    if q:
        where.append("(t.tenant_id ILIKE :q ESCAPE '\\' OR t.name ILIKE :q ESCAPE '\\')")
        params["q"] = _like(q)
    condition = " AND ".join(where)
    total = (await conn.execute(text(f"SELECT count(*) FROM tenants t WHERE {condition}"), params)).scalar_one()
    rows = (await conn.execute(text(f"{_TENANT_SQL} WHERE {condition} ORDER BY t.tenant_id LIMIT :limit "
                                    f"OFFSET :offset"), params)).all()
    return TenantPage(items=[_summary(r) for r in rows], total=int(total), limit=limit, offset=offset)


async def get_tenant(conn: AsyncConnection, tenant_id: str) -> Tenant | None:
    """A tenant with its counts and every subscription (MAIN first); None when there is no such tenant."""
    row = (await conn.execute(text(f"{_TENANT_SQL} WHERE t.tenant_id = :t"), {"t": tenant_id})).first()
    if row is None:
        return None
    subs = await _subscriptions(conn, "s.tenant_id = :t", {"t": tenant_id, "limit": MAX_PAGE, "offset": 0})
    return Tenant(**msgspec.structs.asdict(_summary(row)), heartbeat_interval_s=row.heartbeat_interval_s,
                  subscriptions=subs)


async def require_tenant(conn: AsyncConnection, tenant_id: str) -> Tenant:
    tenant = await get_tenant(conn, check_tenant_id(tenant_id))
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    return tenant


async def provision_tenant(conn: AsyncConnection, tenant_id: str, name: str, *, device_limit: int = 1000,
                           timezone: str = "UTC", contact_email: str | None = None,
                           subscription_kind: str = "MAIN", term_days: int = 365, now: datetime) -> Tenant:
    """Create a tenant with its first subscription (MAIN, or TRIAL); 409 when the id is taken."""
    check_tenant_id(tenant_id)
    name, email = _name(name), _email(contact_email)
    device_limit, timezone = _device_limit(device_limit), _timezone(timezone)
    kind = _member(subscription_kind, ("MAIN", "TRIAL"), "subscription_kind")
    if isinstance(term_days, bool) or not isinstance(term_days, int) or not 1 <= term_days <= MAX_TERM_DAYS:
        raise ValidationError(f"must be a whole number from 1 to {MAX_TERM_DAYS}", field="term_days")
    # Two requests for the same id: the second waits here and then answers 409 rather than failing on the key.
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('pulse-tenant:' || :t))"), {"t": tenant_id})
    await create_tenant(conn, tenant_id, name, device_limit=device_limit, timezone=timezone,
                        subscription_kind=kind, term_days=term_days, now=now)
    if email is not None:
        await conn.execute(text("UPDATE tenants SET contact_email = :e WHERE tenant_id = :t"),
                           {"e": email, "t": tenant_id})
    return await require_tenant(conn, tenant_id)


async def update_tenant(conn: AsyncConnection, tenant_id: str, changes: dict[str, Any], *, now: datetime,
                        may_delete: bool = False) -> Tenant:
    """Change name, contact_email, timezone or status. A status change reaches ingest at commit (a SUSPENDED
    tenant's devices are refused with SUBSCRIPTION_SUSPENDED); moving to or from DELETED needs `may_delete`."""
    check_tenant_id(tenant_id)
    current = (await conn.execute(text("SELECT status FROM tenants WHERE tenant_id = :t FOR UPDATE"),
                                  {"t": tenant_id})).first()
    if current is None:
        raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    sets, params = ["updated_at = :now"], {"t": tenant_id, "now": now}
    if "name" in changes:
        sets.append("name = :name")
        params["name"] = _name(changes["name"])
    if "contact_email" in changes:
        sets.append("contact_email = :email")
        params["email"] = _email(changes["contact_email"])
    if "timezone" in changes:
        sets.append("timezone = :tz")
        params["tz"] = _timezone(changes["timezone"])
    status_changed = False
    if "status" in changes:
        status = _member(changes["status"], TENANT_STATUSES, "status")
        if "DELETED" in (status, current.status) and status != current.status and not may_delete:
            raise Forbidden("deleting a tenant, or restoring a deleted one, needs the operator-admin role",
                            details={"field": "status", "required_roles": ["operator-admin"]})
        sets.append("status = :status")
        params["status"] = status
        status_changed = status != current.status
    await conn.execute(text(f"UPDATE tenants SET {', '.join(sets)} WHERE tenant_id = :t"), params)
    if status_changed:
        await notify_devices_changed(conn, tenant_id=tenant_id)
    return await require_tenant(conn, tenant_id)


async def notify_devices_changed(conn: AsyncConnection, *, tenant_id: str | None = None,
                                 subscription_id: str | None = None) -> int:
    """Announce every device of a tenant (or of one subscription) on `pulse_device_changed`; returns how many.

    One statement, not a round trip per device; PostgreSQL delivers the notifications at commit and every
    ingest instance drops those devices from its auth cache.
    """
    if subscription_id is not None:
        where, params = "subscription_id = :s", {"s": subscription_id}
    elif tenant_id is not None:
        where, params = "tenant_id = :t", {"t": tenant_id}
    else:
        raise ValueError("notify_devices_changed needs a tenant_id or a subscription_id")
    result = await conn.execute(text(
        f"WITH sent AS (SELECT pg_notify(:c, tenant_id || '/' || device_id) FROM devices WHERE {where}) "
        f"SELECT count(*) FROM sent"), {**params, "c": DEVICE_CHANGED_CHANNEL})
    return int(result.scalar_one())


# --- subscriptions -----------------------------------------------------------------------------------------------

_SUBSCRIPTION_SQL = """
SELECT s.subscription_id, s.tenant_id, s.kind, s.status, s.device_limit, s.parent_subscription_id,
       s.term_start_at, s.term_end_at AS expires_at, s.grace_days, s.description, s.status_changed_at,
       s.created_at, s.updated_at,
       (SELECT count(*) FROM devices d
         WHERE d.subscription_id = s.subscription_id AND d.status <> 'DECOMMISSIONED') AS device_count
FROM subscriptions s
"""


def _subscription(row: Any) -> Subscription:
    m = dict(row._mapping)
    m["subscription_id"] = str(m["subscription_id"])
    if m["parent_subscription_id"] is not None:
        m["parent_subscription_id"] = str(m["parent_subscription_id"])
    return Subscription(**m)


async def _subscriptions(conn: AsyncConnection, where: str, params: dict[str, Any]) -> list[Subscription]:
    rows = (await conn.execute(text(
        f"{_SUBSCRIPTION_SQL} WHERE {where} ORDER BY (s.kind = 'MAIN') DESC, s.created_at, s.subscription_id "
        f"LIMIT :limit OFFSET :offset"), params)).all()
    return [_subscription(r) for r in rows]


async def list_subscriptions(conn: AsyncConnection, tenant_id: str, *, limit: int = 50,
                             offset: int = 0) -> SubscriptionPage:
    """A tenant's subscriptions, MAIN first then by age; 404 for an unknown tenant."""
    _page(limit, offset)
    check_tenant_id(tenant_id)
    if (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t"), {"t": tenant_id})).first() is None:
        raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    params = {"t": tenant_id, "limit": limit, "offset": offset}
    total = (await conn.execute(text("SELECT count(*) FROM subscriptions WHERE tenant_id = :t"),
                                params)).scalar_one()
    items = await _subscriptions(conn, "s.tenant_id = :t", params)
    return SubscriptionPage(items=items, total=int(total), limit=limit, offset=offset)


async def get_subscription(conn: AsyncConnection, subscription_id: str) -> Subscription | None:
    rows = await _subscriptions(conn, "s.subscription_id = CAST(:s AS uuid)",
                                {"s": parse_subscription_id(subscription_id), "limit": 1, "offset": 0})
    return rows[0] if rows else None


async def require_subscription(conn: AsyncConnection, subscription_id: str) -> Subscription:
    sub = await get_subscription(conn, subscription_id)
    if sub is None:
        raise NotFound(f"subscription {subscription_id} not found", details={"field": "subscription_id"})
    return sub


async def create_subscription(conn: AsyncConnection, tenant_id: str, *, kind: str, device_limit: int,
                              expires_at: datetime | None = None, parent_subscription_id: str | None = None,
                              description: str | None = None, grace_days: int = 14, now: datetime) -> Subscription:
    """Add a subscription to a tenant: TRIAL starts in status TRIAL, others ACTIVE. An ADDON names its tenant's
    parent subscription; a TEMPORARY one needs `expires_at`; a tenant has at most one MAIN that has not expired."""
    check_tenant_id(tenant_id)
    kind = _member(kind, SUBSCRIPTION_KINDS, "kind")
    expires_at = _aware(expires_at, "expires_at")
    if expires_at is not None and expires_at <= now:
        raise ValidationError("must be in the future", field="expires_at")
    if kind == "TEMPORARY" and expires_at is None:
        raise ValidationError("a TEMPORARY subscription needs expires_at", field="expires_at")
    if isinstance(grace_days, bool) or not isinstance(grace_days, int) or not 0 <= grace_days <= 365:
        raise ValidationError("must be a whole number from 0 to 365", field="grace_days")
    if description is not None:
        description = _name(description, "description", 500)
    tenant = (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t FOR UPDATE"),
                                 {"t": tenant_id})).first()
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    parent = None
    if kind == "ADDON":
        if parent_subscription_id is None:
            raise ValidationError("an ADDON subscription needs parent_subscription_id", field="parent_subscription_id")
        parent = parse_subscription_id(parent_subscription_id, "parent_subscription_id")
        found = (await conn.execute(text(
            "SELECT 1 FROM subscriptions WHERE subscription_id = CAST(:p AS uuid) AND tenant_id = :t"),
            {"p": parent, "t": tenant_id})).first()
        if found is None:
            raise ValidationError(f"no subscription {parent} in tenant {tenant_id}", field="parent_subscription_id")
    elif parent_subscription_id is not None:
        raise ValidationError("only ADDON subscriptions have a parent", field="parent_subscription_id")
    if kind == "MAIN":
        main = (await conn.execute(text(
            "SELECT subscription_id FROM subscriptions WHERE tenant_id = :t AND kind = 'MAIN' "
            "AND status <> 'EXPIRED' LIMIT 1"), {"t": tenant_id})).first()
        if main is not None:
            raise Conflict(f"tenant {tenant_id} already has MAIN subscription {main.subscription_id}; change that "
                           f"one, or add an ADDON", details={"field": "kind"})
    sub_id = (await conn.execute(text(
        "INSERT INTO subscriptions (tenant_id, kind, parent_subscription_id, status, device_limit, term_start_at, "
        "  term_end_at, grace_days, description, status_changed_at, created_at, updated_at) "
        "VALUES (:t, :k, CAST(:p AS uuid), :st, :l, :now, :end, :g, :d, :now, :now, :now) RETURNING subscription_id"),
        {"t": tenant_id, "k": kind, "p": parent, "st": "TRIAL" if kind == "TRIAL" else "ACTIVE",
         "l": _device_limit(device_limit), "now": now, "end": expires_at, "g": grace_days,
         "d": description})).scalar_one()
    return await require_subscription(conn, str(sub_id))


async def update_subscription(conn: AsyncConnection, subscription_id: str, changes: dict[str, Any], *,
                              now: datetime) -> Subscription:
    """Change status, device_limit, expires_at, grace_days or description. A status change reaches ingest at
    commit: devices of a SUSPENDED subscription are refused with SUBSCRIPTION_SUSPENDED, of an EXPIRED one with
    SUBSCRIPTION_EXPIRED. Lowering device_limit below the devices registered keeps them; it only stops new ones."""
    subscription_id = parse_subscription_id(subscription_id)
    current = (await conn.execute(text(
        "SELECT status FROM subscriptions WHERE subscription_id = CAST(:s AS uuid) FOR UPDATE"),
        {"s": subscription_id})).first()
    if current is None:
        raise NotFound(f"subscription {subscription_id} not found", details={"field": "subscription_id"})
    sets, params = ["updated_at = :now"], {"s": subscription_id, "now": now}
    if "device_limit" in changes:
        sets.append("device_limit = :limit")
        params["limit"] = _device_limit(changes["device_limit"])
    if "expires_at" in changes:
        sets.append("term_end_at = :end")
        params["end"] = _aware(changes["expires_at"], "expires_at")
    if "grace_days" in changes:
        grace = changes["grace_days"]
        if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 365:
            raise ValidationError("must be a whole number from 0 to 365", field="grace_days")
        sets.append("grace_days = :grace")
        params["grace"] = grace
    if "description" in changes:
        sets.append("description = :d")
        params["d"] = None if changes["description"] is None else _name(changes["description"], "description", 500)
    status_changed = False
    if "status" in changes:
        status = _member(changes["status"], SUBSCRIPTION_STATUSES, "status")
        status_changed = status != current.status
        if status_changed:
            sets += ["status = :status", "status_changed_at = :now"]
            params["status"] = status
    await conn.execute(text(f"UPDATE subscriptions SET {', '.join(sets)} WHERE subscription_id = CAST(:s AS uuid)"),
                       params)
    if status_changed:
        await notify_devices_changed(conn, subscription_id=subscription_id)
    return await require_subscription(conn, subscription_id)


async def suspend_subscription(conn: AsyncConnection, subscription_id: str, *, now: datetime) -> Subscription:
    """TRIAL, ACTIVE or GRACE → SUSPENDED (409 otherwise); ingest refuses its devices from the commit on."""
    sub = await require_subscription(conn, subscription_id)
    if sub.status not in USABLE_STATUSES:
        raise Conflict(f"subscription {sub.subscription_id} is {sub.status}; only TRIAL, ACTIVE or GRACE "
                       f"subscriptions can be suspended", details={"field": "status", "status": sub.status})
    return await update_subscription(conn, sub.subscription_id, {"status": "SUSPENDED"}, now=now)


async def resume_subscription(conn: AsyncConnection, subscription_id: str, *, now: datetime) -> Subscription:
    """SUSPENDED → ACTIVE (TRIAL for a TRIAL subscription); 409 for any other status."""
    sub = await require_subscription(conn, subscription_id)
    if sub.status != "SUSPENDED":
        raise Conflict(f"subscription {sub.subscription_id} is {sub.status}, not SUSPENDED",
                       details={"field": "status", "status": sub.status})
    status = "TRIAL" if sub.kind == "TRIAL" else "ACTIVE"
    return await update_subscription(conn, sub.subscription_id, {"status": status}, now=now)


# --- fleet-wide views --------------------------------------------------------------------------------------------

async def list_fleet_devices(conn: AsyncConnection, *, tenant_id: str | None = None, state: str | None = None,
                             status: str | None = None, q: str | None = None, limit: int = 50,
                             offset: int = 0) -> DevicePage:
    """Devices of every tenant by (tenant, device); `q` matches part of the device id or name."""
    _page(limit, offset)
    tenant_id, q = check_filter(tenant_id, "tenant_id"), check_filter(q, "q")
    where: list[str] = ["true"]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if tenant_id is not None:
        where.append("d.tenant_id = :t")
        params["t"] = tenant_id
    if state is not None:
        where.append("coalesce(ds.status, 'UNKNOWN') = :state")
        params["state"] = _member(state, DEVICE_STATES, "state")
    if status is not None:
        where.append("d.status = :status")
        params["status"] = _member(status, DEVICE_STATUSES, "status")
    if q:
        where.append("(d.device_id ILIKE :q ESCAPE '\\' OR d.name ILIKE :q ESCAPE '\\')")
        params["q"] = _like(q)
    condition = " AND ".join(where)
    source = "FROM devices d LEFT JOIN device_state ds USING (tenant_id, device_id)"
    total = (await conn.execute(text(f"SELECT count(*) {source} WHERE {condition}"), params)).scalar_one()
    rows = (await conn.execute(text(
        f"SELECT d.tenant_id, d.device_id, d.name, d.device_type, d.site_id, CAST(d.subscription_id AS text) "
        f"  AS subscription_id, d.status, coalesce(ds.status, 'UNKNOWN') AS state, ds.last_seen_at, d.tags, "
        f"  d.created_at {source} WHERE {condition} ORDER BY d.tenant_id, d.device_id LIMIT :limit OFFSET :offset"),
        params)).mappings().all()
    return DevicePage(items=[msgspec.convert(dict(r), FleetDevice) for r in rows], total=int(total), limit=limit,
                      offset=offset)


async def list_fleet_alerts(conn: AsyncConnection, *, tenant_id: str | None = None, statuses: list[str] | None = None,
                            severity_min: int | None = None, limit: int = 50, offset: int = 0) -> AlertPage:
    """Alerts of every tenant, newest opened first."""
    _page(limit, offset)
    tenant_id = check_filter(tenant_id, "tenant_id")
    where: list[str] = ["true"]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if tenant_id is not None:
        where.append("tenant_id = :t")
        params["t"] = tenant_id
    if statuses:
        where.append("status = ANY(:statuses)")
        params["statuses"] = [_member(s, ALERT_STATUSES, "status") for s in statuses]
    if severity_min is not None:
        if not 1 <= severity_min <= 5:
            raise ValidationError("must be 1 (info) to 5 (critical)", field="severity_min")
        where.append("severity >= :sev")
        params["sev"] = severity_min
    condition = " AND ".join(where)
    total = (await conn.execute(text(f"SELECT count(*) FROM alerts WHERE {condition}"), params)).scalar_one()
    rows = (await conn.execute(text(
        f"SELECT CAST(alert_id AS text) AS alert_id, tenant_id, alert_type, device_id, site_id, severity, status, "
        f"  title, opened_at, last_seen_at, acknowledged_at, closed_at FROM alerts WHERE {condition} "
        f"ORDER BY opened_at DESC, alert_id LIMIT :limit OFFSET :offset"), params)).mappings().all()
    return AlertPage(items=[msgspec.convert(dict(r), FleetAlert) for r in rows], total=int(total), limit=limit,
                     offset=offset)


# --- system health -----------------------------------------------------------------------------------------------

async def _processes(conn: AsyncConnection, now: datetime) -> list[ProcessHealth]:
    rows = (await conn.execute(text(
        "SELECT instance, process_type, ready, ready_since, beat_at, detail FROM service_heartbeats "
        "ORDER BY process_type, instance"))).all()
    by_type: dict[str, list[ProcessInstance]] = {}
    for r in rows:
        age = (now - r.beat_at).total_seconds()
        by_type.setdefault(r.process_type, []).append(ProcessInstance(
            instance=r.instance, ready=r.ready, ready_since=r.ready_since, beat_at=r.beat_at,
            beat_age_s=round(age, 3), alive=age <= ALIVE_WITHIN_S, detail=r.detail))
    return [ProcessHealth(process_type=kind, alive=sum(i.alive for i in items),
                          ready=sum(i.alive and i.ready for i in items), instances=items)
            for kind, items in by_type.items()]


async def _notification_queue(conn: AsyncConnection, now: datetime) -> NotificationQueue:
    r = (await conn.execute(text(
        "SELECT count(*) FILTER (WHERE status = 'PENDING' AND next_attempt_at <= :now) AS pending_due, "
        "  count(*) FILTER (WHERE status = 'PENDING' AND next_attempt_at > :now) AS pending_later, "
        "  count(*) FILTER (WHERE status = 'IN_PROGRESS') AS in_progress, "
        "  count(*) FILTER (WHERE status = 'IN_PROGRESS' AND lease_expires_at < :now) AS lease_expired, "
        "  count(*) FILTER (WHERE status = 'DEAD') AS dead, "
        "  min(next_attempt_at) FILTER (WHERE status = 'PENDING' AND next_attempt_at <= :now) AS oldest_due_at "
        "FROM notification_jobs WHERE status IN ('PENDING', 'IN_PROGRESS', 'DEAD')"), {"now": now})).one()
    oldest = None if r.oldest_due_at is None else round(max((now - r.oldest_due_at).total_seconds(), 0.0), 3)
    return NotificationQueue(pending_due=r.pending_due, pending_later=r.pending_later, in_progress=r.in_progress,
                             in_progress_lease_expired=r.lease_expired, dead=r.dead, oldest_due_age_s=oldest)


async def _telemetry_last_minute(conn: AsyncConnection, now: datetime) -> int | None:
    """Rows whose time is in the last minute, or None when counting exceeds TELEMETRY_COUNT_TIMEOUT_MS (there is
    no index on time alone, so a busy day partition is scanned); the health answer must not hang on it."""
    previous = (await conn.execute(text("SELECT current_setting('statement_timeout')"))).scalar_one()
    try:
        async with conn.begin_nested():
            await conn.execute(text("SELECT set_config('statement_timeout', :ms, true)"),
                               {"ms": str(TELEMETRY_COUNT_TIMEOUT_MS)})
            count = (await conn.execute(text("SELECT count(*) FROM telemetry WHERE time > :since AND time <= :now"),
                                        {"since": now - timedelta(minutes=1), "now": now})).scalar_one()
            await conn.execute(text("SELECT set_config('statement_timeout', :prev, true)"), {"prev": previous})
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "57014":  # query_canceled
            raise
        return None
    return int(count)


async def get_system_health(conn: AsyncConnection, *, now: datetime) -> SystemHealth:
    """Heartbeats per process type, the notification queue, recent telemetry and quarantine volume."""
    quarantine = (await conn.execute(text(
        "SELECT reason, sum(count) AS n FROM quarantine_counters WHERE minute >= :since GROUP BY reason "
        "ORDER BY reason"), {"since": now - timedelta(hours=1)})).all()
    by_reason = {r.reason: int(r.n) for r in quarantine}
    return SystemHealth(checked_at=now, alive_within_s=ALIVE_WITHIN_S, processes=await _processes(conn, now),
                        notifications=await _notification_queue(conn, now),
                        telemetry_rows_last_minute=await _telemetry_last_minute(conn, now),
                        quarantine_last_hour=QuarantineLastHour(total=sum(by_reason.values()), by_reason=by_reason))


# --- operator audit log ------------------------------------------------------------------------------------------

def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


async def write_operator_audit(conn: AsyncConnection, *, actor: str, roles: list[str], action: str,
                               tenant_id: str | None, resource: str | None, ip: str | None, user_agent: str | None,
                               request_id: str | None, details: dict[str, Any], at: datetime) -> None:
    """One operator_audit_log row in the caller's transaction. NUL characters (which PostgreSQL text and jsonb
    cannot hold) are recorded as U+FFFD, so a request carrying them is still audited."""
    actor, action, tenant_id, resource, ip, user_agent, request_id = (
        _storable(v) for v in (actor, action, tenant_id, resource, ip, user_agent, request_id))
    details = _storable(details)
    await conn.execute(text(
        "INSERT INTO operator_audit_log (at, actor, actor_roles, action, tenant_id, resource, ip, user_agent, "
        "  request_id, details) "
        "VALUES (:at, :actor, :roles, :action, :tenant, :resource, :ip, :ua, :rid, CAST(:details AS jsonb))"),
        {"at": at, "actor": actor, "roles": roles, "action": action, "tenant": tenant_id, "resource": resource,
         "ip": ip, "ua": user_agent, "rid": request_id, "details": msgspec.json.encode(details).decode()})


async def list_operator_audit(conn: AsyncConnection, *, actor: str | None = None, tenant_id: str | None = None,
                              action: str | None = None, since: datetime | None = None, until: datetime | None = None,
                              limit: int = 50, offset: int = 0) -> OperatorAuditPage:
    """Audit rows newest first; `actor`, `tenant_id` and `action` match exactly, `since` ≤ at < `until`."""
    _page(limit, offset)
    actor, action = check_filter(actor, "actor"), check_filter(action, "action")
    tenant_id = check_filter(tenant_id, "tenant_id")
    _aware(since, "from")
    _aware(until, "to")
    if since is not None and until is not None and until <= since:
        raise ValidationError("must be after from", field="to")
    where: list[str] = ["true"]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for column, value in (("actor", actor), ("tenant_id", tenant_id), ("action", action)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    if since is not None:
        where.append("at >= :since")
        params["since"] = since
    if until is not None:
        where.append("at < :until")
        params["until"] = until
    condition = " AND ".join(where)
    total = (await conn.execute(text(f"SELECT count(*) FROM operator_audit_log WHERE {condition}"),
                                params)).scalar_one()
    rows = (await conn.execute(text(
        f"SELECT audit_id, at, actor, actor_roles, action, tenant_id, resource, ip, user_agent, request_id, details "
        f"FROM operator_audit_log WHERE {condition} ORDER BY at DESC, audit_id DESC LIMIT :limit OFFSET :offset"),
        params)).mappings().all()
    return OperatorAuditPage(items=[msgspec.convert(dict(r), OperatorAuditEntry) for r in rows], total=int(total),
                             limit=limit, offset=offset)
