"""The operator audit log: one row per operator request, and reading it back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_no_nul, check_range, replace_nul
from pulse.fleet.operator import OperatorAuditEntry, OperatorAuditPage
from pulse.fleet.operator.common import aware, check_operator_page
from pulse.sql import add_filters, fetch_page


async def write_operator_audit(conn: AsyncConnection, *, actor: str, roles: list[str], action: str,
                               tenant_id: str | None, resource: str | None, ip: str | None, user_agent: str | None,
                               request_id: str | None, details: dict[str, Any], at: datetime) -> None:
    """One operator_audit_log row in the caller's transaction. NUL characters (which PostgreSQL text and jsonb
    cannot hold) are recorded as U+FFFD, so a request carrying them is still audited."""
    actor, action, tenant_id, resource, ip, user_agent, request_id = (
        replace_nul(v) for v in (actor, action, tenant_id, resource, ip, user_agent, request_id))
    details = replace_nul(details)
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
    check_operator_page(limit, offset)
    actor, action = check_no_nul(actor, "actor"), check_no_nul(action, "action")
    tenant_id = check_no_nul(tenant_id, "tenant_id")
    aware(since, "from")
    aware(until, "to")
    check_range(since, until)
    where: list[str] = []
    params: dict[str, Any] = {}
    add_filters(where, params, equal={"actor": actor, "tenant_id": tenant_id, "action": action}, since=since,
                until=until)
    total, rows = await fetch_page(
        conn, columns="audit_id, at, actor, actor_roles, action, tenant_id, resource, ip, user_agent, request_id, "
                      "details",
        source="operator_audit_log", where=where, order_by="at DESC, audit_id DESC", params=params, limit=limit,
        offset=offset)
    return OperatorAuditPage(items=[msgspec.convert(dict(r._mapping), OperatorAuditEntry) for r in rows],
                             total=total, limit=limit, offset=offset)
