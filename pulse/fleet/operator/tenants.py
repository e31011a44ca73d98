"""Tenants and their subscriptions: onboarding, changes and suspension, and announcing their devices to ingest."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_line, check_no_nul, check_optional_line, check_timezone, is_whole_number, parse_uuid
from pulse.errors import Conflict, Forbidden, NotFound, ValidationError
from pulse.fleet.operator import Subscription, SubscriptionPage, Tenant, TenantPage, TenantSummary
from pulse.fleet.operator.common import MAX_PAGE, aware, check_operator_page, member
from pulse.fleet.service import DEVICE_CHANGED_CHANNEL, check_tenant_id, create_tenant
from pulse.sql import fetch_page, like_pattern

MAX_DEVICE_LIMIT = 10_000_000
MAX_TERM_DAYS = 3650
MAX_GRACE_DAYS = 365
TENANT_STATUSES = ("ACTIVE", "SUSPENDED", "DELETED")
SUBSCRIPTION_KINDS = ("MAIN", "ADDON", "TRIAL", "TEMPORARY")
SUBSCRIPTION_STATUSES = ("TRIAL", "ACTIVE", "GRACE", "SUSPENDED", "EXPIRED")
USABLE_STATUSES = ("TRIAL", "ACTIVE", "GRACE")  # ingest accepts devices of these (see pulse.ingest.validate)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# --- checks ------------------------------------------------------------------------------------------------------

def _email(value: Any, field: str = "contact_email") -> str | None:
    if value is None:
        return None
    email = value.strip() if isinstance(value, str) else ""
    if not email or len(email) > 254 or not _EMAIL_RE.match(email) or not email.isprintable():
        raise ValidationError("must be an email address such as noc@example.com", field=field)
    return email


def _device_limit(value: Any, field: str = "device_limit") -> int:
    if not is_whole_number(value, 0, MAX_DEVICE_LIMIT):
        raise ValidationError(f"must be a whole number from 0 to {MAX_DEVICE_LIMIT}", field=field)
    return value


def _grace_days(value: Any) -> int:
    if not is_whole_number(value, 0, MAX_GRACE_DAYS):
        raise ValidationError(f"must be a whole number from 0 to {MAX_GRACE_DAYS}", field="grace_days")
    return value


# --- tenants -----------------------------------------------------------------------------------------------------

_TENANT_COLUMNS = """
       t.tenant_id, t.name, t.status, t.timezone, t.contact_email, t.heartbeat_interval_s, t.created_at,
       t.updated_at,
       (SELECT count(*) FROM devices d
         WHERE d.tenant_id = t.tenant_id AND d.status <> 'DECOMMISSIONED') AS device_count,
       (SELECT coalesce(sum(s.device_limit), 0) FROM subscriptions s
         WHERE s.tenant_id = t.tenant_id AND s.status IN ('TRIAL', 'ACTIVE', 'GRACE')) AS device_limit,
       (SELECT count(*) FROM alerts a
         WHERE a.tenant_id = t.tenant_id AND a.status IN ('OPEN', 'ACKNOWLEDGED')) AS open_alert_count
"""
_TENANT_SQL = f"SELECT {_TENANT_COLUMNS} FROM tenants t"

_SUMMARY_FIELDS = ("tenant_id", "name", "status", "timezone", "contact_email", "device_count", "device_limit",
                   "open_alert_count", "created_at", "updated_at")


def _summary(row: Any) -> TenantSummary:
    m = row._mapping
    return TenantSummary(**{k: m[k] for k in _SUMMARY_FIELDS})


async def list_tenants(conn: AsyncConnection, *, q: str | None = None, status: str | None = None, limit: int = 50,
                       offset: int = 0) -> TenantPage:
    """Tenants by id; `q` matches part of the id or name (any case), `status` one of TENANT_STATUSES."""
    check_operator_page(limit, offset)
    q = check_no_nul(q, "q")
    where: list[str] = []
    params: dict[str, Any] = {}
    if status is not None:
        where.append("t.status = :status")
        params["status"] = member(status, TENANT_STATUSES, "status")
    if q:
        where.append("(t.tenant_id ILIKE :q ESCAPE '\\' OR t.name ILIKE :q ESCAPE '\\')")
        params["q"] = like_pattern(q)
    total, rows = await fetch_page(conn, columns=_TENANT_COLUMNS, source="tenants t", where=where,
                                   order_by="t.tenant_id", params=params, limit=limit, offset=offset)
    return TenantPage(items=[_summary(r) for r in rows], total=total, limit=limit, offset=offset)


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
    name, email = check_line(name, "name", 200), _email(contact_email)
    device_limit, timezone = _device_limit(device_limit), check_timezone(timezone).key
    kind = member(subscription_kind, ("MAIN", "TRIAL"), "subscription_kind")
    if not is_whole_number(term_days, 1, MAX_TERM_DAYS):
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
        params["name"] = check_line(changes["name"], "name", 200)
    if "contact_email" in changes:
        sets.append("contact_email = :email")
        params["email"] = _email(changes["contact_email"])
    if "timezone" in changes:
        sets.append("timezone = :tz")
        params["tz"] = check_timezone(changes["timezone"]).key
    status_changed = False
    if "status" in changes:
        status = member(changes["status"], TENANT_STATUSES, "status")
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

_SUBSCRIPTION_COLUMNS = """
       s.subscription_id, s.tenant_id, s.kind, s.status, s.device_limit, s.parent_subscription_id,
       s.term_start_at, s.term_end_at AS expires_at, s.grace_days, s.description, s.status_changed_at,
       s.created_at, s.updated_at,
       (SELECT count(*) FROM devices d
         WHERE d.subscription_id = s.subscription_id AND d.status <> 'DECOMMISSIONED') AS device_count
"""
_SUBSCRIPTION_ORDER = "(s.kind = 'MAIN') DESC, s.created_at, s.subscription_id"


def _subscription(row: Any) -> Subscription:
    m = dict(row._mapping)
    m["subscription_id"] = str(m["subscription_id"])
    if m["parent_subscription_id"] is not None:
        m["parent_subscription_id"] = str(m["parent_subscription_id"])
    return Subscription(**m)


async def _subscriptions(conn: AsyncConnection, where: str, params: dict[str, Any]) -> list[Subscription]:
    rows = (await conn.execute(text(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE {where} ORDER BY {_SUBSCRIPTION_ORDER} "
        f"LIMIT :limit OFFSET :offset"), params)).all()
    return [_subscription(r) for r in rows]


async def list_subscriptions(conn: AsyncConnection, tenant_id: str, *, limit: int = 50,
                             offset: int = 0) -> SubscriptionPage:
    """A tenant's subscriptions, MAIN first then by age; 404 for an unknown tenant."""
    check_operator_page(limit, offset)
    check_tenant_id(tenant_id)
    if (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t"), {"t": tenant_id})).first() is None:
        raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    total, rows = await fetch_page(conn, columns=_SUBSCRIPTION_COLUMNS, source="subscriptions s",
                                   where=["s.tenant_id = :t"], order_by=_SUBSCRIPTION_ORDER, params={"t": tenant_id},
                                   limit=limit, offset=offset)
    return SubscriptionPage(items=[_subscription(r) for r in rows], total=total, limit=limit, offset=offset)


async def get_subscription(conn: AsyncConnection, subscription_id: str) -> Subscription | None:
    rows = await _subscriptions(conn, "s.subscription_id = CAST(:s AS uuid)",
                                {"s": parse_uuid(subscription_id, "subscription_id"), "limit": 1, "offset": 0})
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
    kind = member(kind, SUBSCRIPTION_KINDS, "kind")
    expires_at = aware(expires_at, "expires_at")
    if expires_at is not None and expires_at <= now:
        raise ValidationError("must be in the future", field="expires_at")
    if kind == "TEMPORARY" and expires_at is None:
        raise ValidationError("a TEMPORARY subscription needs expires_at", field="expires_at")
    _grace_days(grace_days)
    description = check_optional_line(description, "description", 500)
    tenant = (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t FOR UPDATE"),
                                 {"t": tenant_id})).first()
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    parent = None
    if kind == "ADDON":
        if parent_subscription_id is None:
            raise ValidationError("an ADDON subscription needs parent_subscription_id", field="parent_subscription_id")
        parent = parse_uuid(parent_subscription_id, "parent_subscription_id")
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
    subscription_id = parse_uuid(subscription_id, "subscription_id")
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
        params["end"] = aware(changes["expires_at"], "expires_at")
    if "grace_days" in changes:
        sets.append("grace_days = :grace")
        params["grace"] = _grace_days(changes["grace_days"])
    if "description" in changes:
        sets.append("description = :d")
        params["d"] = check_optional_line(changes["description"], "description", 500)
    status_changed = False
    if "status" in changes:
        status = member(changes["status"], SUBSCRIPTION_STATUSES, "status")
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
