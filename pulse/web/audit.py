"""The tenant audit log: one tenant_audit_log row for every successful change under /customer, and reading it.

What is recorded: who (`actor`, the token's email, else its subject), what (`action`, "METHOD route-template",
e.g. "POST /customer/alert-rules/{rule_id}"; `resource`, the path), from where (`ip`), which request
(`request_id`) and the answer's status in `details`. Request bodies are never recorded: they can hold secrets.

How it is written, so that a change and its audit row commit together:

- `audit_middleware` marks every non-GET/HEAD/OPTIONS request under /customer/ as audited.
- `record_response_status` (an app `after_request` hook) notes the answer's status; it runs before the handler's
  dependencies are cleaned up, i.e. before the request's tenant transaction commits.
- `provide_audited_tenant_conn` replaces the `tenant_conn` dependency: after the handler returned a 2xx answer it
  writes the audit row in the request's own transaction, just before the commit. A failing handler rolls back and
  leaves no row.
- A successful request that used no `tenant_conn` (e.g. a test send that opens short transactions of its own) is
  recorded by the middleware in a short separate tenant transaction when its 2xx answer starts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request
from litestar.di import Provide
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_aware, check_range
from pulse.db import tenant_tx
from pulse.sql import add_filters, check_page, fetch_page
from pulse.web.auth import Principal, authenticate_connection
from pulse.web.context import context_of, engine_of
from pulse.web.deps import PrincipalDep, provide_tenant_conn
from pulse.web.middleware import request_id_for

log = logging.getLogger("pulse.web.audit")

AUDITED_PREFIX = "/customer/"
UNAUDITED_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_PAGE = 500
_SLOT_KEY = "pulse_audit"


@dataclass
class AuditSlot:
    """One audited request's progress: the answer's status once known, and whether its row is written."""

    status: int | None = None
    written: bool = False


_current: ContextVar[AuditSlot | None] = ContextVar("pulse_audit_slot", default=None)


def is_audited(method: str, path: str) -> bool:
    return method.upper() not in UNAUDITED_METHODS and path.startswith(AUDITED_PREFIX)


def _slot(scope: Scope | dict[str, Any]) -> AuditSlot | None:
    slot = scope.get("state", {}).get(_SLOT_KEY)
    return slot if isinstance(slot, AuditSlot) else None


async def write_audit_entry(conn: AsyncConnection, tenant_id: str, *, actor: str, action: str, resource: str,
                            ip: str | None, request_id: str | None, details: dict[str, Any], at: datetime) -> None:
    """One tenant_audit_log row in the caller's transaction."""
    await conn.execute(text(
        "INSERT INTO tenant_audit_log (tenant_id, at, actor, action, resource, details, ip, request_id) "
        "VALUES (:t, :at, :actor, :action, :resource, CAST(:details AS jsonb), :ip, :rid)"),
        {"t": tenant_id, "at": at, "actor": actor, "action": action, "resource": resource,
         "details": msgspec.json.encode(details).decode(), "ip": ip, "rid": request_id})


async def _write_for(conn: AsyncConnection, request: Request[Any, Any, Any], principal: Principal,
                     status: int) -> None:
    scope = request.scope
    await write_audit_entry(
        conn, principal.tenant_id or "", actor=principal.actor,
        action=f"{request.method} {scope.get('path_template') or request.url.path}", resource=request.url.path,
        ip=request.client.host if request.client else None, request_id=request_id_for(scope),
        details={"status": status}, at=context_of(request).clock.now())


async def provide_audited_tenant_conn(request: Request[Any, Any, Any],
                                      principal: PrincipalDep) -> AsyncIterator[AsyncConnection]:
    """The request's tenant transaction (`provide_tenant_conn`), with the audit row of a successful change
    written in it before it commits."""
    async with asynccontextmanager(provide_tenant_conn)(request, principal) as conn:
        yield conn
        slot = _slot(request.scope)
        if slot is not None and not slot.written and slot.status is not None and 200 <= slot.status < 300:
            await _write_for(conn, request, principal, slot.status)
            slot.written = True


AUDIT_DEPENDENCIES: dict[str, Provide] = {"tenant_conn": Provide(provide_audited_tenant_conn)}
"""Registered over pulse.web.deps.DEPENDENCIES by the app."""


async def record_response_status(response: Any) -> Any:
    """`after_request` hook: tell the audited request's slot what status it answers with."""
    slot = _current.get()
    status = getattr(response, "status_code", None)
    if slot is not None and isinstance(status, int):
        slot.status = status
    return response


def audit_middleware(app: ASGIApp) -> ASGIApp:
    """Marks audited requests and records those that no tenant transaction recorded (see the module docstring)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_audited(str(scope.get("method", "GET")), scope.get("path", "")):
            await app(scope, receive, send)
            return
        slot = AuditSlot()
        scope.setdefault("state", {})[_SLOT_KEY] = slot  # type: ignore[typeddict-item]
        token = _current.set(slot)

        async def send_after_audit(message: Message) -> None:
            if message["type"] == "http.response.start" and not slot.written and 200 <= message["status"] < 300:
                slot.written = True
                await _write_separately(scope, message["status"])
            await send(message)

        try:
            await app(scope, receive, send_after_audit)
        finally:
            _current.reset(token)

    return middleware


async def _write_separately(scope: Scope, status: int) -> None:
    """Record a successful change that used no request transaction, in a short tenant transaction of its own.

    The change is done and its answer is about to go out, so a failure here is logged rather than turned into
    an error answer.
    """
    request: Request[Any, Any, Any] = Request(scope)
    try:
        principal = await authenticate_connection(request)
        if not principal.tenant_id:
            return
        async with tenant_tx(engine_of(request), principal.tenant_id) as conn:
            await _write_for(conn, request, principal, status)
    except SQLAlchemyError:
        log.exception("could not write the tenant audit row", extra={"path": scope.get("path")})


# --- reading -----------------------------------------------------------------------------------------------------

class AuditEntry(msgspec.Struct, kw_only=True):
    audit_id: int
    at: datetime
    actor: str
    action: str
    resource: str | None
    details: dict[str, Any]
    ip: str | None
    request_id: str | None


class AuditPage(msgspec.Struct, kw_only=True):
    """Newest first."""

    items: list[AuditEntry]
    total: int
    limit: int
    offset: int


async def list_audit_entries(conn: AsyncConnection, tenant_id: str, *, actor: str | None = None,
                             action: str | None = None, since: datetime | None = None,
                             until: datetime | None = None, limit: int = 50, offset: int = 0) -> AuditPage:
    """The tenant's audit rows, newest first; `actor` and `action` match exactly, `since` ≤ at < `until`."""
    check_page(limit, offset, max_limit=MAX_PAGE)
    for name, bound in (("from", since), ("to", until)):
        if bound is not None:
            check_aware(bound, name)
    check_range(since, until)
    where = ["tenant_id = :t"]
    params: dict[str, Any] = {"t": tenant_id}
    add_filters(where, params, equal={"actor": actor, "action": action}, since=since, until=until)
    total, rows = await fetch_page(
        conn, columns="audit_id, at, actor, action, resource, details, ip, request_id", source="tenant_audit_log",
        where=where, order_by="at DESC, audit_id DESC", params=params, limit=limit, offset=offset)
    return AuditPage(items=[msgspec.convert(dict(r._mapping), AuditEntry) for r in rows], total=total,
                     limit=limit, offset=offset)
