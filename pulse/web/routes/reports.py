"""/customer/reports: a tenant's SLA reports, made on demand or by the daily job, and their CSV and JSON downloads.

Any member of the tenant (`customer`, `tenant-admin`) may make and read reports. The tenant comes from the token;
another tenant's report is simply not found.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import msgspec
from litestar import Response, Router, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter

from pulse.reports.export import report_csv, report_json
from pulse.reports.schemas import ReportRun, ReportRunPage
from pulse.reports.service import MAX_PAGE, create_sla_report, list_report_runs, require_report_run
from pulse.web.auth import require_roles
from pulse.web.deps import NowDep, PrincipalDep, TenantConnDep, require_tenant
from pulse.web.errors import error_specs
from pulse.web.routes.common import BEARER, MEMBER_ROLES

RunIdPath = Annotated[str, PathParameter(description="the report run's UUID", max_length=64)]


class ReportCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The period [period_start, period_end); both default to the last 24 hours."""

    period_start: datetime | None = None
    period_end: datetime | None = None


@post("/", status_code=201, summary="Make an SLA report for a period", responses=error_specs(400, 401, 403))
async def create_report(principal: PrincipalDep, tenant_conn: TenantConnDep, now: NowDep,
                        data: JSONBody[ReportCreate | None] = None) -> ReportRun:
    """Computed now and stored; answers the run with its report. The period ends no later than now and spans at
    most 366 days."""
    body = data or ReportCreate()
    end = body.period_end or now
    start = body.period_start or end - timedelta(days=1)
    return await create_sla_report(tenant_conn, require_tenant(principal), start=start, end=end,
                                   requested_by=principal.actor, now=now)


@get("/", summary="The tenant's report runs, newest first", responses=error_specs(400, 401, 403))
async def list_reports(principal: PrincipalDep, tenant_conn: TenantConnDep,
                       limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description=f"1-{MAX_PAGE}")] = 50,
                       offset: Annotated[int, QueryParameter(ge=0, le=1_000_000_000)] = 0) -> ReportRunPage:
    return await list_report_runs(tenant_conn, require_tenant(principal), limit=limit, offset=offset)


@get("/{run_id:str}", summary="One report run with its report", responses=error_specs(400, 401, 403, 404))
async def get_report(run_id: RunIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> ReportRun:
    return await require_report_run(tenant_conn, require_tenant(principal), run_id)


@get("/{run_id:str}/csv", summary="A report as CSV", media_type="text/csv",
     responses=error_specs(400, 401, 403, 404))
async def get_report_csv(run_id: RunIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> Response[str]:
    """Sections `section,name,value`, then tables; text cells a spreadsheet would evaluate start with a quote."""
    run = await require_report_run(tenant_conn, require_tenant(principal), run_id)
    return Response(report_csv(run), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="sla-report-{run.run_id}.csv"'})


@get("/{run_id:str}/json", summary="A report as a JSON download", responses={
    **error_specs(400, 401, 403, 404),
    200: ResponseSpec(data_container=ReportRun, description="the run with its report, as a file")})
async def get_report_json(run_id: RunIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> Response[bytes]:
    run = await require_report_run(tenant_conn, require_tenant(principal), run_id)
    return Response(report_json(run), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="sla-report-{run.run_id}.json"'})


router = Router(path="/customer/reports", route_handlers=[
    create_report, list_reports, get_report, get_report_csv, get_report_json,
], guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["reports"])
