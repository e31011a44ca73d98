"""/operator: cross-tenant views for platform operators; every request is written to operator_audit_log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.db import operator_tx
from pulse.ingest.envelope import Reason
from pulse.ingest.queries import QuarantineCount, QuarantineEvent, list_quarantine_counts, list_quarantine_events
from pulse.web.auth import Principal, require_roles
from pulse.web.context import engine_of
from pulse.web.deps import PrincipalDep
from pulse.web.errors import error_specs
from pulse.web.middleware import request_id_for

OperatorConnDep = NamedDependency[AsyncConnection]
BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]
REASONS = tuple(r.value for r in Reason)


async def provide_operator_conn(request: Request[Any, Any, Any],
                                principal: PrincipalDep) -> AsyncIterator[AsyncConnection]:
    """One transaction as pulse_operator (all tenants), with the audit row written in it first."""
    async with operator_tx(engine_of(request)) as conn:
        await _audit(conn, request, principal)
        yield conn


async def _audit(conn: AsyncConnection, request: Request[Any, Any, Any], principal: Principal) -> None:
    await conn.execute(text(
        "INSERT INTO operator_audit_log (actor, actor_roles, action, tenant_id, resource, ip, user_agent, request_id, "
        "  details) VALUES (:actor, :roles, :action, :tenant, :resource, :ip, :ua, :rid, CAST(:details AS jsonb))"),
        {"actor": principal.email or principal.subject, "roles": sorted(principal.roles),
         "action": f"{request.method} {request.scope.get('path_template', request.url.path)}",
         "tenant": request.query_params.get("tenant_id"), "resource": request.url.path,
         "ip": request.client.host if request.client else None, "ua": request.headers.get("user-agent"),
         "rid": request_id_for(request.scope),
         "details": msgspec.json.encode(dict(request.query_params)).decode()})


class EventPage(msgspec.Struct, kw_only=True):
    items: list[QuarantineEvent]
    total: int
    limit: int
    offset: int


class CountList(msgspec.Struct, kw_only=True):
    items: list[QuarantineCount]
    totals_by_reason: dict[str, int]


TimeQuery = Annotated[datetime | None, QueryParameter(description="ISO-8601 time")]
ReasonQuery = Annotated[str | None, QueryParameter(description=f"one of {', '.join(REASONS)}", max_length=40)]


def _reason(reason: str | None) -> str | None:
    from pulse.errors import ValidationError

    if reason is not None and reason not in REASONS:
        raise ValidationError(f"unknown reason {reason!r}", field="reason")
    return reason


@get("/quarantine/events", summary="Rejected messages, newest first", responses=error_specs(400, 401, 403))
async def quarantine_events(operator_conn: OperatorConnDep,
                            tenant_id: Annotated[str | None, QueryParameter(max_length=63)] = None,
                            reason: ReasonQuery = None, since: TimeQuery = None, until: TimeQuery = None,
                            limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
                            offset: Annotated[int, QueryParameter(ge=0)] = 0) -> EventPage:
    items, total = await list_quarantine_events(operator_conn, tenant_id=tenant_id, reason=_reason(reason),
                                                since=since, until=until, limit=limit, offset=offset)
    return EventPage(items=items, total=total, limit=limit, offset=offset)


@get("/quarantine/counters", summary="Rejections per minute by tenant and reason",
     responses=error_specs(400, 401, 403))
async def quarantine_counters(operator_conn: OperatorConnDep,
                              tenant_id: Annotated[str | None, QueryParameter(max_length=63)] = None,
                              reason: ReasonQuery = None, since: TimeQuery = None,
                              until: TimeQuery = None) -> CountList:
    items = await list_quarantine_counts(operator_conn, tenant_id=tenant_id, reason=_reason(reason), since=since,
                                         until=until)
    totals: dict[str, int] = {}
    for c in items:
        totals[c.reason] = totals.get(c.reason, 0) + c.count
    return CountList(items=items, totals_by_reason=totals)


router = Router(path="/operator", route_handlers=[quarantine_events, quarantine_counters],
                guards=[require_roles("operator", "operator-admin")], security=BEARER, tags=["operator"],
                dependencies={"operator_conn": Provide(provide_operator_conn)})
