"""/operator fleet-wide views and platform state: devices and alerts of every tenant, system health, audit log."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import QueryParameter

from pulse.fleet.operator import AlertPage, DevicePage, OperatorAuditPage, SystemHealth
from pulse.fleet.operator.audit import list_operator_audit
from pulse.fleet.operator.common import MAX_OFFSET, MAX_PAGE, parse_statuses, parse_time
from pulse.fleet.operator.health import get_system_health
from pulse.fleet.operator.listings import ALERT_STATUSES, list_fleet_alerts, list_fleet_devices
from pulse.web.auth import require_roles
from pulse.web.deps import NowDep
from pulse.web.errors import error_specs
from pulse.web.routes.operator_audit import ADMIN_ROLE, OperatorConnDep

LimitQuery = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description=f"1-{MAX_PAGE}")]
OffsetQuery = Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)]
TenantQuery = Annotated[str | None, QueryParameter(max_length=63, description="only this tenant")]


@get("/devices", summary="Devices of every tenant", responses=error_specs(400, 401, 403))
async def list_all_devices(
    operator_conn: OperatorConnDep, tenant_id: TenantQuery = None,
    liveness: Annotated[str | None, QueryParameter(name="state", description="UNKNOWN, ONLINE, STALE or OFFLINE")
                        ] = None,
    status: Annotated[str | None, QueryParameter(
        max_length=20, description="ACTIVE, DISABLED, REVOKED or DECOMMISSIONED")] = None,
    q: Annotated[str | None, QueryParameter(max_length=200, description="part of the device id or name")] = None,
    limit: LimitQuery = 50, offset: OffsetQuery = 0,
) -> DevicePage:
    """By tenant then device id, with registry `status` and liveness `state`."""
    return await list_fleet_devices(operator_conn, tenant_id=tenant_id, state=liveness, status=status, q=q, limit=limit,
                                    offset=offset)


@get("/alerts", summary="Alerts of every tenant", responses=error_specs(400, 401, 403))
async def list_all_alerts(
    operator_conn: OperatorConnDep, tenant_id: TenantQuery = None,
    status: Annotated[str | None, QueryParameter(
        max_length=60, description="OPEN, ACKNOWLEDGED or CLOSED; comma-separate several")] = None,
    severity_min: Annotated[int | None, QueryParameter(ge=1, le=5, description="1 (info) to 5 (critical)")] = None,
    limit: LimitQuery = 50, offset: OffsetQuery = 0,
) -> AlertPage:
    """Newest opened first."""
    return await list_fleet_alerts(operator_conn, tenant_id=tenant_id, statuses=parse_statuses(status, ALERT_STATUSES),
                                   severity_min=severity_min, limit=limit, offset=offset)


@get("/health", summary="Process heartbeats, notification queue, telemetry and quarantine volume",
     responses=error_specs(401, 403))
async def system_health(operator_conn: OperatorConnDep, now: NowDep) -> SystemHealth:
    """Per process type its service_heartbeats rows (alive when they beat within 15 s); the notification queue
    (PENDING due and later, IN_PROGRESS, DEAD, age of the oldest due job); telemetry rows of the last minute;
    quarantined messages of the last hour by reason."""
    return await get_system_health(operator_conn, now=now)


@get("/audit-log", summary="The operator audit log (operator-admin)", guards=[require_roles(ADMIN_ROLE)],
     responses=error_specs(400, 401, 403))
async def list_audit_log(
    operator_conn: OperatorConnDep,
    actor: Annotated[str | None, QueryParameter(max_length=320, description="exactly this actor")] = None,
    tenant_id: TenantQuery = None,
    action: Annotated[str | None, QueryParameter(
        max_length=400, description='exactly this action, e.g. "PATCH /operator/subscriptions/{subscription_id}"')
    ] = None,
    since: Annotated[str | None, QueryParameter(name="from", description="at or after (ISO-8601)")] = None,
    until: Annotated[str | None, QueryParameter(name="to", description="before (ISO-8601)")] = None,
    limit: LimitQuery = 50, offset: OffsetQuery = 0,
) -> OperatorAuditPage:
    """Every operator request, newest first, with the total count of matches."""
    return await list_operator_audit(operator_conn, actor=actor, tenant_id=tenant_id, action=action,
                                     since=parse_time(since, "from"), until=parse_time(until, "to"), limit=limit,
                                     offset=offset)


ROUTES = [list_all_devices, list_all_alerts, system_health, list_audit_log]
