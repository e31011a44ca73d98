"""/operator/system: the platform's health for the NOC: service health with latency, metric history, capacity, the
tenant health matrix and the scheduled jobs. Roles `operator` or `operator-admin`; every request is audited like
every other operator request (operator_audit)."""

from __future__ import annotations

from typing import Annotated

from litestar import Router, get
from litestar.params import PathParameter, QueryParameter

from pulse.fleet.operator.capacity import (
    Capacity,
    JobRun,
    ServiceHealth,
    get_capacity,
    get_service_health,
    list_job_runs,
)
from pulse.fleet.operator.common import MAX_OFFSET, MAX_PAGE, parse_time
from pulse.fleet.operator.noc import (
    MetricCatalogue,
    MetricHistory,
    TenantHealthPage,
    metric_catalogue,
    metric_history,
    tenant_health_matrix,
)
from pulse.web.auth import require_roles
from pulse.web.deps import NowDep
from pulse.web.errors import error_specs
from pulse.web.routes.common import BEARER
from pulse.web.routes.operator_audit import (
    OPERATOR_DEPENDENCIES,
    OPERATOR_ROLES,
    OperatorConnDep,
    operator_audit_middleware,
)


@get("/health", summary="Process health, the database's round-trip latency, queues and the scheduled jobs",
     responses=error_specs(401, 403))
async def service_health(operator_conn: OperatorConnDep, now: NowDep) -> ServiceHealth:
    return await get_service_health(operator_conn, now=now)


@get("/jobs", summary="The last run of each `pulse schedule` job", responses=error_specs(401, 403))
async def scheduled_jobs(operator_conn: OperatorConnDep) -> list[JobRun]:
    return await list_job_runs(operator_conn)


@get("/metrics", summary="The platform metrics recorded every 5 s, with their newest values",
     responses=error_specs(401, 403))
async def list_metrics(operator_conn: OperatorConnDep) -> MetricCatalogue:
    return await metric_catalogue(operator_conn)


@get("/metrics/{metric:str}", summary="A platform metric's history", responses=error_specs(400, 401, 403))
async def get_metric_history(
    metric: Annotated[str, PathParameter(description="e.g. ingest.messages_per_s", max_length=64)],
    operator_conn: OperatorConnDep, now: NowDep,
    since: Annotated[str | None, QueryParameter(name="from", description="ISO-8601; default an hour before `to`")
                     ] = None,
    until: Annotated[str | None, QueryParameter(name="to", description="ISO-8601, exclusive; default now")] = None,
    step_s: Annotated[int | None, QueryParameter(description="bucket length in seconds (5-86400)")] = None,
    label: Annotated[str | None, QueryParameter(max_length=170, description="name=value, e.g. tenant_id=acme")
                     ] = None,
) -> MetricHistory:
    """Samples averaged per bucket (`value`, with the bucket's `max`), one series per label set."""
    return await metric_history(operator_conn, metric, now=now, since=parse_time(since, "from"),
                                until=parse_time(until, "to"), step_s=step_s, label=label)


@get("/capacity", summary="Database size and connections, largest tables, telemetry partition sizes",
     responses=error_specs(401, 403))
async def capacity(operator_conn: OperatorConnDep, now: NowDep) -> Capacity:
    return await get_capacity(operator_conn, now=now)


@get("/tenants", summary="Tenant health matrix", responses=error_specs(400, 401, 403))
async def tenant_matrix(
    operator_conn: OperatorConnDep, now: NowDep,
    status: Annotated[str | None, QueryParameter(max_length=20, description="ACTIVE, SUSPENDED or DELETED")] = None,
    tenant_id: Annotated[str | None, QueryParameter(max_length=63, description="only this tenant")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description=f"1-{MAX_PAGE}")] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
) -> TenantHealthPage:
    """Per tenant: devices, online share, open alerts, subscriptions, and messages per hour over the last 24 h."""
    return await tenant_health_matrix(operator_conn, now=now, status=status, tenant_id=tenant_id, limit=limit,
                                      offset=offset)


router = Router(path="/operator/system", route_handlers=[
    service_health, scheduled_jobs, list_metrics, get_metric_history, capacity, tenant_matrix,
], guards=[require_roles(*OPERATOR_ROLES)], security=BEARER, tags=["operator"], dependencies=OPERATOR_DEPENDENCIES,
    middleware=[operator_audit_middleware])
