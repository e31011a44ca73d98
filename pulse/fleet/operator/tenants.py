"""Tenants: onboarding, changes and suspension, and announcing their devices to ingest (see also .subscriptions)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_line, check_no_nul, check_timezone, is_whole_number
from pulse.errors import Forbidden, NotFound, ValidationError
from pulse.fleet.lifecycle import notify_devices_changed
from pulse.fleet.operator import Tenant, TenantPage, TenantSummary
from pulse.fleet.operator.common import MAX_PAGE, check_operator_page, member
from pulse.fleet.operator.subscriptions import check_device_limit, check_grace_days, subscriptions_where
from pulse.fleet.service import check_tenant_id, create_tenant
from pulse.sql import fetch_page, like_pattern

MAX_TERM_DAYS = 3650
TENANT_STATUSES = ("ACTIVE", "SUSPENDED", "DELETED")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# --- checks ------------------------------------------------------------------------------------------------------

def _email(value: Any, field: str = "contact_email") -> str | None:
    if value is None:
        return None
    email = value.strip() if isinstance(value, str) else ""
    if not email or len(email) > 254 or not _EMAIL_RE.match(email) or not email.isprintable():
        raise ValidationError("must be an email address such as noc@example.com", field=field)
    return email


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
    subs = await subscriptions_where(conn, "s.tenant_id = :t", {"t": tenant_id, "limit": MAX_PAGE, "offset": 0})
    return Tenant(**msgspec.structs.asdict(_summary(row)), heartbeat_interval_s=row.heartbeat_interval_s,
                  subscriptions=subs)


async def require_tenant(conn: AsyncConnection, tenant_id: str) -> Tenant:
    tenant = await get_tenant(conn, check_tenant_id(tenant_id))
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found", details={"field": "tenant_id"})
    return tenant


async def provision_tenant(conn: AsyncConnection, tenant_id: str, name: str, *, device_limit: int = 1000,
                           timezone: str = "UTC", contact_email: str | None = None,
                           subscription_kind: str = "MAIN", term_days: int = 365, grace_days: int = 14,
                           now: datetime) -> Tenant:
    """Create a tenant with its first subscription (MAIN, or TRIAL); 409 when the id is taken."""
    check_tenant_id(tenant_id)
    name, email = check_line(name, "name", 200), _email(contact_email)
    device_limit, timezone = check_device_limit(device_limit), check_timezone(timezone).key
    check_grace_days(grace_days)
    kind = member(subscription_kind, ("MAIN", "TRIAL"), "subscription_kind")
    if not is_whole_number(term_days, 1, MAX_TERM_DAYS):
        raise ValidationError(f"must be a whole number from 1 to {MAX_TERM_DAYS}", field="term_days")
    # Two requests for the same id: the second waits here and then answers 409 rather than failing on the key.
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('pulse-tenant:' || :t))"), {"t": tenant_id})
    await create_tenant(conn, tenant_id, name, device_limit=device_limit, timezone=timezone,
                        subscription_kind=kind, term_days=term_days, grace_days=grace_days, now=now)
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
