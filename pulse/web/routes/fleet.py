"""/api/v2 fleet reads: devices with their state, the fleet summary and device telemetry (any tenant member).

The tenant comes from the token only; another tenant's device id is simply not found. Every query parameter
is checked here and a bad one is a 400 whose `details.field` names it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from litestar import Router, get
from litestar.params import PathParameter, QueryParameter
from litestar.response import Stream

from pulse.db import tenant_tx
from pulse.errors import NotFound, ValidationError
from pulse.fleet.queries import (
    DEVICE_SORTS,
    DEVICE_STATES,
    LIFECYCLE_STATUSES,
    DeviceDetail,
    DevicePage,
    FleetSummary,
    check_device_id,
    get_device_detail,
    get_fleet_summary,
    list_devices,
    require_device,
)
from pulse.fleet.service import DEVICE_ID_RE
from pulse.fleet.telemetry import (
    HISTORY_DEFAULT_POINTS,
    HISTORY_DEFAULT_RANGE,
    HISTORY_MAX_POINTS,
    HISTORY_MAX_RANGE,
    RAW_DEFAULT_LIMIT,
    RAW_DEFAULT_RANGE,
    RAW_MAX_LIMIT,
    RAW_MAX_RANGE,
    LatestTelemetry,
    MetricHistory,
    TelemetryPage,
    check_metric,
    decode_cursor,
    get_latest_telemetry,
    get_metric_history,
    iter_telemetry_csv,
    list_telemetry,
    resolve_range,
)
from pulse.web.auth import require_roles
from pulse.web.deps import EngineDep, NowDep, PrincipalDep, TenantConnDep, require_tenant
from pulse.web.errors import error_specs
from pulse.web.openapi import csv_answer
from pulse.web.routes.common import BEARER, MEMBER_ROLES, parse_choices

MAX_TAGS = 20
MAX_TAG_CHARS = 128
MAX_QUERY_CHARS = 128
MAX_METRICS = 20
MAX_OFFSET = 1_000_000_000
TIME_HELP = "ISO 8601 with a UTC offset, e.g. 2026-01-31T12:00:00Z (a naive time is refused)"

DeviceIdPath = Annotated[str, PathParameter(description="the device's id")]
FromQuery = Annotated[str | None, QueryParameter(name="from", description=f"start (inclusive); {TIME_HELP}")]
ToQuery = Annotated[str | None, QueryParameter(name="to", description=f"end (exclusive, default now); {TIME_HELP}")]

# "+00:00" arrives as " 00:00" when a client forgets to percent-encode the plus sign.
_LOST_PLUS = re.compile(r" (\d{2}(?::?\d{2})?)$")


def parse_time(value: str | None, field: str) -> datetime | None:
    """An ISO 8601 time with an offset; a naive or malformed one is a 400 naming `field`."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(_LOST_PLUS.sub(r"+\1", value.strip()))
    except ValueError:
        raise ValidationError(f"{field} is not an ISO 8601 time; {TIME_HELP}", field=field) from None
    if parsed.tzinfo is None:
        raise ValidationError(f"{field} needs a UTC offset; {TIME_HELP}", field=field)
    return parsed


def check_text(value: str, field: str, max_chars: int) -> str:
    """Free text from a query: at most `max_chars` characters, no control characters (PostgreSQL refuses NUL)."""
    if len(value) > max_chars:
        raise ValidationError(f"{field} must be at most {max_chars} characters", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(f"{field} must not contain control characters", field=field)
    return value


def parse_tags(values: list[str] | None) -> list[str]:
    tags = list(dict.fromkeys(values or []))
    if len(tags) > MAX_TAGS:
        raise ValidationError(f"at most {MAX_TAGS} tags", field="tag")
    for tag in tags:
        if not tag:
            raise ValidationError("a tag must not be empty", field="tag")
        check_text(tag, "tag", MAX_TAG_CHARS)
    return tags


def parse_group_id(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationError("group_id must be a UUID", field="group_id") from None


@get("/devices", summary="List devices with their state", responses=error_specs(400, 401, 403))
async def list_fleet_devices(
    principal: PrincipalDep,
    tenant_conn: TenantConnDep,
    state_: Annotated[list[str] | None, QueryParameter(
        name="state", description=f"connectivity: {', '.join(DEVICE_STATES)}; repeat or comma-separate")] = None,
    lifecycle: Annotated[list[str] | None, QueryParameter(
        description=f"registry status: {', '.join(LIFECYCLE_STATUSES)}; repeat or comma-separate")] = None,
    site_id: Annotated[str | None, QueryParameter(description="devices of this site")] = None,
    tag: Annotated[list[str] | None, QueryParameter(description="devices having every given tag")] = None,
    group_id: Annotated[str | None, QueryParameter(description="devices in this group (UUID)")] = None,
    q: Annotated[str | None, QueryParameter(
        description="case-insensitive text in the device id or name (% and _ are literal)")] = None,
    sort: Annotated[str, QueryParameter(
        description=f"{', '.join(DEVICE_SORTS)}; prefix - for descending")] = "device_id",
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
) -> DevicePage:
    """The tenant's devices, one page at a time, with the total number of matches."""
    if site_id is not None and not DEVICE_ID_RE.match(site_id):
        raise ValidationError("site_id must be 1-128 characters of A-Z a-z 0-9 . _ : -", field="site_id")
    if q is not None:
        check_text(q, "q", MAX_QUERY_CHARS)
    return await list_devices(
        tenant_conn, require_tenant(principal), states=parse_choices(state_, DEVICE_STATES, "state"),
        lifecycles=parse_choices(lifecycle, LIFECYCLE_STATUSES, "lifecycle"), site_id=site_id,
        tags=parse_tags(tag), group_id=parse_group_id(group_id), query=q or None, sort=sort, limit=limit,
        offset=offset)


@get("/devices/{device_id:str}", summary="Get a device with its state, groups, alerts and state changes",
     responses=error_specs(400, 401, 403, 404))
async def get_fleet_device(device_id: DeviceIdPath, principal: PrincipalDep,
                           tenant_conn: TenantConnDep) -> DeviceDetail:
    """One device in detail. Another tenant's device is simply not found."""
    detail = await get_device_detail(tenant_conn, require_tenant(principal), check_device_id(device_id))
    if detail is None:
        raise NotFound(f"device {device_id} not found", details={"field": "device_id"})
    return detail


@get("/fleet/summary", summary="Device counts by state, lifecycle and site; open alerts by severity",
     responses=error_specs(401, 403))
async def fleet_summary(principal: PrincipalDep, tenant_conn: TenantConnDep) -> FleetSummary:
    return await get_fleet_summary(tenant_conn, require_tenant(principal))


@get("/devices/{device_id:str}/telemetry", summary="A device's stored telemetry rows, newest first",
     responses=error_specs(400, 401, 403, 404))
async def device_telemetry(
    device_id: DeviceIdPath,
    principal: PrincipalDep,
    tenant_conn: TenantConnDep,
    now: NowDep,
    from_: FromQuery = None,
    to: ToQuery = None,
    metric: Annotated[list[str] | None, QueryParameter(
        description="only rows holding one of these metrics, showing only them; repeatable")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=RAW_MAX_LIMIT)] = RAW_DEFAULT_LIMIT,
    cursor: Annotated[str | None, QueryParameter(description="next_cursor of the previous page")] = None,
) -> TelemetryPage:
    """Rows in [from, to) (default: the last hour; at most 31 days), `limit` per page."""
    tenant_id = require_tenant(principal)
    start, end = resolve_range(parse_time(from_, "from"), parse_time(to, "to"), now=now,
                               default=RAW_DEFAULT_RANGE, max_range=RAW_MAX_RANGE)
    metrics = list(dict.fromkeys(check_metric(m) for m in metric or []))
    if len(metrics) > MAX_METRICS:
        raise ValidationError(f"at most {MAX_METRICS} metrics", field="metric")
    position = decode_cursor(cursor) if cursor else None
    await require_device(tenant_conn, tenant_id, check_device_id(device_id))
    return await list_telemetry(tenant_conn, tenant_id, device_id, start=start, end=end, metrics=metrics,
                                limit=limit, cursor=position)


@get("/devices/{device_id:str}/telemetry/latest", summary="The newest value and time of each metric",
     responses=error_specs(400, 401, 403, 404))
async def device_latest_telemetry(device_id: DeviceIdPath, principal: PrincipalDep,
                                  tenant_conn: TenantConnDep) -> LatestTelemetry:
    tenant_id = require_tenant(principal)
    await require_device(tenant_conn, tenant_id, check_device_id(device_id))
    return await get_latest_telemetry(tenant_conn, tenant_id, device_id)


@get("/devices/{device_id:str}/telemetry/history", summary="A numeric metric downsampled into time buckets",
     responses=error_specs(400, 401, 403, 404))
async def device_metric_history(
    device_id: DeviceIdPath,
    principal: PrincipalDep,
    tenant_conn: TenantConnDep,
    now: NowDep,
    metric: Annotated[str | None, QueryParameter(description="the metric (required)")] = None,
    from_: FromQuery = None,
    to: ToQuery = None,
    points: Annotated[int, QueryParameter(ge=1, le=HISTORY_MAX_POINTS,
                                          description="number of buckets")] = HISTORY_DEFAULT_POINTS,
) -> MetricHistory:
    """avg/min/max/count per bucket of width (to - from) / points over [from, to) (default: the last 24 hours;
    at most 400 days). Non-numeric values are skipped; buckets without numbers are left out."""
    tenant_id = require_tenant(principal)
    if metric is None:
        raise ValidationError("metric is required", field="metric")
    check_metric(metric)
    start, end = resolve_range(parse_time(from_, "from"), parse_time(to, "to"), now=now,
                               default=HISTORY_DEFAULT_RANGE, max_range=HISTORY_MAX_RANGE)
    await require_device(tenant_conn, tenant_id, check_device_id(device_id))
    return await get_metric_history(tenant_conn, tenant_id, device_id, metric, start=start, end=end,
                                    points=points)


@get("/devices/{device_id:str}/telemetry/export.csv", summary="A device's telemetry as a CSV download",
     media_type="text/csv", responses={**error_specs(400, 401, 403, 404), **csv_answer(
         "UTF-8 CSV, header row first",
         "time,seq,msg_type,metric,value\n2026-11-23T09:00:00Z,1042,telemetry,temp_c,-18.5\n")})
async def device_telemetry_csv(device_id: DeviceIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                               engine: EngineDep, now: NowDep, from_: FromQuery = None,
                               to: ToQuery = None) -> Stream:
    """Columns time,seq,msg_type,metric,value, one line per metric, oldest first, over [from, to) (default: the
    last hour; at most 31 days). Streamed: read from the database in batches while it is sent."""
    tenant_id = require_tenant(principal)
    start, end = resolve_range(parse_time(from_, "from"), parse_time(to, "to"), now=now,
                               default=RAW_DEFAULT_RANGE, max_range=RAW_MAX_RANGE)
    await require_device(tenant_conn, tenant_id, check_device_id(device_id))

    async def body() -> AsyncIterator[bytes]:
        # The request's transaction ends before the body is sent; the export reads in a transaction of its own.
        async with tenant_tx(engine, tenant_id) as conn:
            async for chunk in iter_telemetry_csv(conn, tenant_id, device_id, start=start, end=end):
                yield chunk.encode()

    filename = f"{device_id.replace(':', '_')}-telemetry.csv"
    return Stream(body(), media_type="text/csv; charset=utf-8",
                  headers={"Content-Disposition": f'attachment; filename="{filename}"'})


router = Router(path="/api/v2", route_handlers=[
    list_fleet_devices, get_fleet_device, fleet_summary, device_telemetry, device_latest_telemetry,
    device_metric_history, device_telemetry_csv,
], guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["fleet"])
