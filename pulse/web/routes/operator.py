"""/operator: the operator API: tenants and subscriptions, devices and alerts of every tenant, system health, the
audit log and quarantine views. Roles `operator` or `operator-admin`; every request is audited (operator_audit).

The routes live by area in operator_tenants.py and operator_system.py; this module holds the quarantine views and
the router that mounts them all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Router, get
from litestar.params import QueryParameter

from pulse.errors import ValidationError
from pulse.fleet.operator.common import MAX_OFFSET
from pulse.ingest.envelope import Reason
from pulse.ingest.queries import QuarantineCount, QuarantineEvent, list_quarantine_counts, list_quarantine_events
from pulse.web.auth import require_roles
from pulse.web.errors import error_specs
from pulse.web.routes import operator_system, operator_tenants
from pulse.web.routes.common import BEARER
from pulse.web.routes.live import create_operator_live_ticket
from pulse.web.routes.operator_audit import (
    OPERATOR_DEPENDENCIES,
    OPERATOR_ROLES,
    OperatorConnDep,
    operator_audit_middleware,
)

REASONS = tuple(r.value for r in Reason)


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
    if reason is not None and reason not in REASONS:
        raise ValidationError(f"unknown reason {reason!r}", field="reason")
    return reason


@get("/quarantine/events", summary="Rejected messages, newest first", responses=error_specs(400, 401, 403))
async def quarantine_events(operator_conn: OperatorConnDep,
                            tenant_id: Annotated[str | None, QueryParameter(max_length=63)] = None,
                            reason: ReasonQuery = None, since: TimeQuery = None, until: TimeQuery = None,
                            limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
                            offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0) -> EventPage:
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


router = Router(path="/operator", route_handlers=[
    quarantine_events, quarantine_counters, create_operator_live_ticket, *operator_tenants.ROUTES,
    *operator_system.ROUTES,
], guards=[require_roles(*OPERATOR_ROLES)], security=BEARER, tags=["operator"], dependencies=OPERATOR_DEPENDENCIES,
    middleware=[operator_audit_middleware])
