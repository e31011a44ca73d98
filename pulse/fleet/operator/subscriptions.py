"""Subscriptions as operators manage them: listing, adding, changing limits and terms, renewal, conversion, suspension.

Status changes go through pulse.fleet.lifecycle.change_status, so an operator's change is audited in the tenant's
log, announced to the tenant's admins and reaches ingest at commit exactly like the lifecycle job's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_optional_line, is_whole_number, parse_uuid
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.fleet.lifecycle import USABLE_STATUSES, change_status
from pulse.fleet.operator import Subscription, SubscriptionPage
from pulse.fleet.operator.common import aware, check_operator_page, member
from pulse.fleet.service import check_tenant_id
from pulse.sql import fetch_page

MAX_DEVICE_LIMIT = 10_000_000
MAX_GRACE_DAYS = 365
SUBSCRIPTION_KINDS = ("MAIN", "ADDON", "TRIAL", "TEMPORARY")
SUBSCRIPTION_STATUSES = ("TRIAL", "ACTIVE", "GRACE", "SUSPENDED", "EXPIRED")
OPERATOR = "operator"
DEFAULT_EXPIRE_AFTER_DAYS = 30


def check_device_limit(value: Any, field: str = "device_limit") -> int:
    if not is_whole_number(value, 0, MAX_DEVICE_LIMIT):
        raise ValidationError(f"must be a whole number from 0 to {MAX_DEVICE_LIMIT}", field=field)
    return value


def check_grace_days(value: Any) -> int:
    if not is_whole_number(value, 0, MAX_GRACE_DAYS):
        raise ValidationError(f"must be a whole number from 0 to {MAX_GRACE_DAYS}", field="grace_days")
    return value


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


async def subscriptions_where(conn: AsyncConnection, where: str, params: dict[str, Any]) -> list[Subscription]:
    """Subscriptions matching a condition over `subscriptions s`, MAIN first; `params` carries limit and offset."""
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
    rows = await subscriptions_where(conn, "s.subscription_id = CAST(:s AS uuid)",
                                     {"s": parse_uuid(subscription_id, "subscription_id"), "limit": 1, "offset": 0})
    return rows[0] if rows else None


async def require_subscription(conn: AsyncConnection, subscription_id: str) -> Subscription:
    sub = await get_subscription(conn, subscription_id)
    if sub is None:
        raise NotFound(f"subscription {subscription_id} not found", details={"field": "subscription_id"})
    return sub


async def _check_one_main(conn: AsyncConnection, tenant_id: str, *, field: str = "kind") -> None:
    main = (await conn.execute(text(
        "SELECT subscription_id FROM subscriptions WHERE tenant_id = :t AND kind = 'MAIN' "
        "AND status <> 'EXPIRED' LIMIT 1"), {"t": tenant_id})).first()
    if main is not None:
        raise Conflict(f"tenant {tenant_id} already has MAIN subscription {main.subscription_id}; change that "
                       f"one, or add an ADDON", details={"field": field})


async def _check_parent(conn: AsyncConnection, tenant_id: str, parent_subscription_id: Any) -> str:
    """An ADDON's parent: the tenant's MAIN subscription, not expired; a 400 naming the field otherwise."""
    if parent_subscription_id is None:
        raise ValidationError("an ADDON subscription needs parent_subscription_id", field="parent_subscription_id")
    parent = parse_uuid(parent_subscription_id, "parent_subscription_id")
    found = (await conn.execute(text(
        "SELECT kind, status FROM subscriptions WHERE subscription_id = CAST(:p AS uuid) AND tenant_id = :t"),
        {"p": parent, "t": tenant_id})).first()
    if found is None:
        raise ValidationError(f"no subscription {parent} in tenant {tenant_id}", field="parent_subscription_id")
    if found.kind != "MAIN":
        raise ValidationError(f"subscription {parent} is {found.kind}; an ADDON's parent must be the tenant's MAIN "
                              f"subscription", field="parent_subscription_id")
    if found.status == "EXPIRED":
        raise ValidationError(f"MAIN subscription {parent} has expired", field="parent_subscription_id")
    return parent


async def create_subscription(conn: AsyncConnection, tenant_id: str, *, kind: str, device_limit: int,
                              expires_at: datetime | None = None, parent_subscription_id: str | None = None,
                              description: str | None = None, grace_days: int = 14, now: datetime) -> Subscription:
    """Add a subscription to a tenant: TRIAL starts in status TRIAL, others ACTIVE. An ADDON names its tenant's
    MAIN subscription as parent; a TEMPORARY one needs `expires_at`; a tenant has at most one MAIN that has not
    expired."""
    check_tenant_id(tenant_id)
    kind = member(kind, SUBSCRIPTION_KINDS, "kind")
    expires_at = aware(expires_at, "expires_at")
    if expires_at is not None and expires_at <= now:
        raise ValidationError("must be in the future", field="expires_at")
    if kind == "TEMPORARY" and expires_at is None:
        raise ValidationError("a TEMPORARY subscription needs expires_at", field="expires_at")
    check_grace_days(grace_days)
    description = check_optional_line(description, "description", 500)
    tenant = (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t FOR UPDATE"),
                                 {"t": tenant_id})).first()
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    parent = None
    if kind == "ADDON":
        parent = await _check_parent(conn, tenant_id, parent_subscription_id)
    elif parent_subscription_id is not None:
        raise ValidationError("only ADDON subscriptions have a parent", field="parent_subscription_id")
    if kind == "MAIN":
        await _check_one_main(conn, tenant_id)
    sub_id = (await conn.execute(text(
        "INSERT INTO subscriptions (tenant_id, kind, parent_subscription_id, status, device_limit, term_start_at, "
        "  term_end_at, grace_days, description, status_changed_at, created_at, updated_at) "
        "VALUES (:t, :k, CAST(:p AS uuid), :st, :l, :now, :end, :g, :d, :now, :now, :now) RETURNING subscription_id"),
        {"t": tenant_id, "k": kind, "p": parent, "st": "TRIAL" if kind == "TRIAL" else "ACTIVE",
         "l": check_device_limit(device_limit), "now": now, "end": expires_at, "g": grace_days,
         "d": description})).scalar_one()
    return await require_subscription(conn, str(sub_id))


def _status_change(changes: dict[str, Any], current: Any, *, converted: bool, renewed: bool,
                   kind: str) -> tuple[str, str] | None:
    """(status, reason) an update leads to: the one sent, or ACTIVE after a conversion or a renewal."""
    if "status" in changes:
        return member(changes["status"], SUBSCRIPTION_STATUSES, "status"), "OPERATOR"
    if converted and current.status != "ACTIVE":
        return "ACTIVE", "CONVERTED"
    if renewed and current.status in ("GRACE", "SUSPENDED"):
        return ("TRIAL" if kind == "TRIAL" else "ACTIVE"), "RENEWED"
    return None


async def update_subscription(conn: AsyncConnection, subscription_id: str, changes: dict[str, Any], *,
                              now: datetime, actor: str = OPERATOR,
                              expire_after_days: int = DEFAULT_EXPIRE_AFTER_DAYS) -> Subscription:
    """Change kind, status, device_limit, expires_at, grace_days or description.

    - Renewal: an `expires_at` in the future (or null, open-ended) on a GRACE or SUSPENDED subscription makes it
      ACTIVE again (TRIAL for a trial), unless `status` is sent too. A new term also re-arms the reminders.
    - Conversion: `kind: MAIN` on a TRIAL subscription (the only kind change there is) makes it a MAIN subscription,
      ACTIVE, if the tenant has no other MAIN that has not expired.
    - A status change reaches ingest at commit: devices of a SUSPENDED subscription are refused with
      SUBSCRIPTION_SUSPENDED, of an EXPIRED one with SUBSCRIPTION_EXPIRED. It is audited and announced.
    - Lowering device_limit below the devices registered keeps them; it only stops new ones.
    """
    subscription_id = parse_uuid(subscription_id, "subscription_id")
    current = (await conn.execute(text(
        "SELECT tenant_id, kind, status, term_end_at FROM subscriptions WHERE subscription_id = CAST(:s AS uuid) "
        "FOR UPDATE"), {"s": subscription_id})).first()
    if current is None:
        raise NotFound(f"subscription {subscription_id} not found", details={"field": "subscription_id"})
    sets, params = ["updated_at = :now"], {"s": subscription_id, "now": now}
    kind, converted, renewed = current.kind, False, False
    if "kind" in changes:
        kind = member(changes["kind"], SUBSCRIPTION_KINDS, "kind")
        if kind != current.kind:
            if (current.kind, kind) != ("TRIAL", "MAIN"):
                raise ValidationError(f"a {current.kind} subscription cannot become {kind}; only a TRIAL can change "
                                      f"kind, to MAIN (conversion)", field="kind")
            await _check_one_main(conn, current.tenant_id)
            sets.append("kind = 'MAIN'")
            converted = True
    if "device_limit" in changes:
        sets.append("device_limit = :limit")
        params["limit"] = check_device_limit(changes["device_limit"])
    if "expires_at" in changes:
        end = aware(changes["expires_at"], "expires_at")
        if end != current.term_end_at:
            sets += ["term_end_at = :end", "last_reminder_days = NULL"]
            params["end"] = end
            renewed = end is None or end > now
    if "grace_days" in changes:
        sets.append("grace_days = :grace")
        params["grace"] = check_grace_days(changes["grace_days"])
    if "description" in changes:
        sets.append("description = :d")
        params["d"] = check_optional_line(changes["description"], "description", 500)
    change = _status_change(changes, current, converted=converted, renewed=renewed, kind=kind)
    await conn.execute(text(f"UPDATE subscriptions SET {', '.join(sets)} WHERE subscription_id = CAST(:s AS uuid)"),
                       params)
    if change is not None:
        await change_status(conn, subscription_id, change[0], reason=change[1], actor=actor, now=now,
                            expire_after_days=expire_after_days)
    return await require_subscription(conn, subscription_id)


async def suspend_subscription(conn: AsyncConnection, subscription_id: str, *, now: datetime,
                               actor: str = OPERATOR) -> Subscription:
    """TRIAL, ACTIVE or GRACE → SUSPENDED (409 otherwise); ingest refuses its devices from the commit on."""
    sub = await require_subscription(conn, subscription_id)
    if sub.status not in USABLE_STATUSES:
        raise Conflict(f"subscription {sub.subscription_id} is {sub.status}; only TRIAL, ACTIVE or GRACE "
                       f"subscriptions can be suspended", details={"field": "status", "status": sub.status})
    return await update_subscription(conn, sub.subscription_id, {"status": "SUSPENDED"}, now=now, actor=actor)


async def resume_subscription(conn: AsyncConnection, subscription_id: str, *, now: datetime,
                              actor: str = OPERATOR) -> Subscription:
    """SUSPENDED → ACTIVE (TRIAL for a TRIAL subscription); 409 for any other status."""
    sub = await require_subscription(conn, subscription_id)
    if sub.status != "SUSPENDED":
        raise Conflict(f"subscription {sub.subscription_id} is {sub.status}, not SUSPENDED",
                       details={"field": "status", "status": sub.status})
    status = "TRIAL" if sub.kind == "TRIAL" else "ACTIVE"
    return await update_subscription(conn, sub.subscription_id, {"status": status}, now=now, actor=actor)
