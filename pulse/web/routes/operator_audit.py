"""The operator audit trail: exactly one operator_audit_log row for every request an operator makes under /operator.

What a row holds: who (`actor`: the token's email, else its subject; `actor_roles`), what (`action`,
"METHOD route-template", e.g. "PATCH /operator/subscriptions/{subscription_id}"; `resource`, the path), which
tenant (`tenant_id`: the path's or query's tenant, or the tenant of the subscription acted on), from where (`ip`,
`user_agent`), which request (`request_id`), and `details`: the query parameters, `changes` (the fields a change
sent) and, for a request that was refused or failed, `error: {"status": …}`.

How it is written:

- Every operator route runs in one `pulse_operator` transaction (`operator_conn`). When the handler succeeds, its
  row is written in that transaction just before the commit, so a change and its audit row commit together.
- A request that is refused or fails (403 for a missing role, 400, 404, 409, 500) rolls its transaction back;
  `operator_audit_middleware` then writes its row in a short transaction of its own as the answer starts.
- Callers without a valid token or without an operator role are not operators and write no row.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.db import operator_tx
from pulse.errors import Forbidden, PulseError
from pulse.fleet.operator.audit import write_operator_audit
from pulse.fleet.service import TENANT_ID_RE
from pulse.web.auth import Principal, authenticate_connection
from pulse.web.context import context_of, engine_of
from pulse.web.deps import PrincipalDep
from pulse.web.middleware import request_id_for

log = logging.getLogger("pulse.web.operator_audit")

OPERATOR_ROLES = ("operator", "operator-admin")
ADMIN_ROLE = "operator-admin"
MAX_DETAIL_CHARS = 500
_NOTE_KEY = "pulse_operator_audit"


@dataclass
class AuditNote:
    """What a handler adds to its request's audit row: the tenant acted on and what it changed."""

    tenant_id: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    written: bool = False


OperatorConnDep: TypeAlias = NamedDependency[AsyncConnection]
AuditDep: TypeAlias = NamedDependency[AuditNote]


def note_of(scope: Scope | dict[str, Any]) -> AuditNote:
    state = scope.setdefault("state", {})  # type: ignore[union-attr]
    note = state.get(_NOTE_KEY)
    if not isinstance(note, AuditNote):
        note = state[_NOTE_KEY] = AuditNote()
    return note


def is_operator_admin(principal: Principal) -> bool:
    return ADMIN_ROLE in principal.roles


def require_operator_admin(principal: Principal) -> None:
    if not is_operator_admin(principal):
        raise Forbidden("this needs the operator-admin role", details={"required_roles": [ADMIN_ROLE]})


def _tenant_of(request: Request[Any, Any, Any], note: AuditNote) -> str | None:
    tenant = note.tenant_id or request.path_params.get("tenant_id") or request.query_params.get("tenant_id")
    return tenant if isinstance(tenant, str) and TENANT_ID_RE.match(tenant) else None


async def _write(conn: AsyncConnection, request: Request[Any, Any, Any], principal: Principal, note: AuditNote,
                 status: int | None) -> None:
    details: dict[str, Any] = {k: str(v)[:MAX_DETAIL_CHARS] for k, v in request.query_params.items()}
    if note.changes:
        details["changes"] = note.changes
    if status is not None and status >= 400:
        details["error"] = {"status": status}
    await write_operator_audit(
        conn, actor=principal.actor, roles=sorted(principal.roles),
        action=f"{request.method} {request.scope.get('path_template') or request.url.path}",
        tenant_id=_tenant_of(request, note), resource=request.url.path[:MAX_DETAIL_CHARS],
        ip=request.client.host if request.client else None,
        user_agent=(request.headers.get("user-agent") or "")[:MAX_DETAIL_CHARS] or None,
        request_id=request_id_for(request.scope), details=details, at=context_of(request).clock.now())


def provide_audit_note(request: Request[Any, Any, Any]) -> AuditNote:
    return note_of(request.scope)


async def provide_operator_conn(request: Request[Any, Any, Any],
                                principal: PrincipalDep) -> AsyncIterator[AsyncConnection]:
    """One transaction as pulse_operator (all tenants); a successful request's audit row is written in it last."""
    note = note_of(request.scope)
    async with operator_tx(engine_of(request)) as conn:
        yield conn
        await _write(conn, request, principal, note, None)
    note.written = True


async def _write_separately(scope: Scope, status: int) -> None:
    """The row of a request whose own transaction did not record it (refused, failed, or none was opened)."""
    request: Request[Any, Any, Any] = Request(scope)
    try:
        principal = await authenticate_connection(request)
    except PulseError:
        return  # no valid token: not an operator
    if not principal.has_any_role(OPERATOR_ROLES):
        return
    try:
        async with operator_tx(engine_of(request)) as conn:
            await _write(conn, request, principal, note_of(scope), status)
    except (SQLAlchemyError, OSError, PulseError):
        log.exception("could not write the operator audit row", extra={"path": scope.get("path")})


def operator_audit_middleware(app: ASGIApp) -> ASGIApp:
    """Router middleware: gives each request its AuditNote and records the requests no transaction recorded."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        note = note_of(scope)

        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start" and not note.written:
                note.written = True
                await _write_separately(scope, message["status"])
            await send(message)

        await app(scope, receive, send_audited)

    return middleware


OPERATOR_DEPENDENCIES: dict[str, Provide] = {
    "operator_conn": Provide(provide_operator_conn),
    "audit": Provide(provide_audit_note, sync_to_thread=False),
}
