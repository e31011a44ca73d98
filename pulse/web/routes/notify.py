"""/customer: a tenant's notification channels, routing rules, delivery log, dead letters and test sends.

Any member of the tenant (`customer`, `tenant-admin`) may read; changes, replays and test sends need
`tenant-admin`. The tenant comes from the token only; another tenant's ids are simply not found.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import msgspec
from litestar import Router, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, UnsetType

from pulse.checks import parse_uuid
from pulse.db import tenant_tx
from pulse.notify.pinned_http import PinnedClient
from pulse.notify.queries import (
    MAX_PAGE,
    Channel,
    JobPage,
    JobWithAttempts,
    RoutingRule,
    list_channels,
    list_jobs,
    list_routes,
    require_channel,
    require_job,
    require_route,
)
from pulse.notify.routing import create_route, delete_route, update_route
from pulse.notify.schemas import SendResult
from pulse.notify.service import (
    create_channel,
    delete_channel,
    replay_dead_job,
    require_channel_target,
    send_test,
    update_channel,
)
from pulse.web.auth import require_roles
from pulse.web.deps import EngineDep, NowDep, PrincipalDep, SettingsDep, TenantConnDep, require_tenant
from pulse.web.errors import error_specs
from pulse.web.routes.common import ADMIN, BEARER, MEMBER_ROLES, sent_fields

TEST_SEND_TIMEOUT = httpx.Timeout(10.0, connect=5.0)

ChannelIdPath = Annotated[str, PathParameter(description="the channel's UUID")]
RouteIdPath = Annotated[str, PathParameter(description="the routing rule's UUID")]
JobIdPath = Annotated[str, PathParameter(description="the job's UUID")]


class ChannelCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    channel_type: str
    config: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    rate_limit_per_min: int | None = None


class ChannelUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change. A secret sent back as the mask keeps the stored value."""

    name: str | UnsetType = UNSET
    config: dict[str, Any] | UnsetType = UNSET
    secrets: dict[str, str] | UnsetType = UNSET
    is_enabled: bool | UnsetType = UNSET
    rate_limit_per_min: int | UnsetType | None = UNSET


class RouteCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    channel_id: str
    position: int = 0
    min_severity: int = 1
    alert_types: list[str] = []
    event_kinds: list[str] | None = None
    site_ids: list[str] = []
    group_ids: list[str] = []
    tags: list[str] = []
    device_id_prefix: str | None = None
    repeat_interval_s: int = 0
    is_final: bool = False


class RouteUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str | UnsetType = UNSET
    channel_id: str | UnsetType = UNSET
    position: int | UnsetType = UNSET
    min_severity: int | UnsetType = UNSET
    alert_types: list[str] | UnsetType = UNSET
    event_kinds: list[str] | UnsetType = UNSET
    site_ids: list[str] | UnsetType = UNSET
    group_ids: list[str] | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    device_id_prefix: str | UnsetType | None = UNSET
    repeat_interval_s: int | UnsetType = UNSET
    is_final: bool | UnsetType = UNSET
    is_enabled: bool | UnsetType = UNSET


class ChannelList(msgspec.Struct, kw_only=True):
    items: list[Channel]


class RouteList(msgspec.Struct, kw_only=True):
    items: list[RoutingRule]


def _statuses(values: list[str] | None) -> list[str]:
    return [part.strip().upper() for value in values or [] for part in value.split(",") if part.strip()]


# --- channels --------------------------------------------------------------------------------------------------------

@get("/channels", summary="List notification channels", responses=error_specs(401, 403))
async def list_tenant_channels(principal: PrincipalDep, tenant_conn: TenantConnDep,
                               settings: SettingsDep) -> ChannelList:
    """Every channel of the tenant by name; secrets are shown as the mask."""
    return ChannelList(items=await list_channels(tenant_conn, require_tenant(principal),
                                                 secret_key=settings.secret_key_bytes))


@post("/channels", summary="Create a notification channel", guards=ADMIN, responses=error_specs(400, 401, 403, 409))
async def create_tenant_channel(data: JSONBody[ChannelCreate], principal: PrincipalDep, tenant_conn: TenantConnDep,
                                settings: SettingsDep) -> Channel:
    """The config is validated for the channel type (URLs must pass the SSRF checks); secrets are stored encrypted."""
    tenant_id = require_tenant(principal)
    channel_id = await create_channel(tenant_conn, tenant_id, data.name, data.channel_type, data.config,
                                      data.secrets, settings=settings, rate_limit_per_min=data.rate_limit_per_min)
    return await require_channel(tenant_conn, tenant_id, channel_id, secret_key=settings.secret_key_bytes)


@get("/channels/{channel_id:str}", summary="Get a notification channel", responses=error_specs(400, 401, 403, 404))
async def get_tenant_channel(channel_id: ChannelIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                             settings: SettingsDep) -> Channel:
    return await require_channel(tenant_conn, require_tenant(principal), channel_id,
                                 secret_key=settings.secret_key_bytes)


@patch("/channels/{channel_id:str}", summary="Change a notification channel", guards=ADMIN,
       responses=error_specs(400, 401, 403, 404, 409))
async def update_tenant_channel(channel_id: ChannelIdPath, data: JSONBody[ChannelUpdate], principal: PrincipalDep,
                                tenant_conn: TenantConnDep, settings: SettingsDep, now: NowDep) -> Channel:
    """`secrets`, when sent, is the full set: the mask keeps a stored secret, a new value replaces it, a name left
    out is removed. The whole channel is validated again, including the SSRF checks."""
    tenant_id = require_tenant(principal)
    channel_id = parse_uuid(channel_id, "channel_id")
    await update_channel(tenant_conn, tenant_id, channel_id, settings=settings, now=now, name=data.name,
                         config=data.config, secrets=data.secrets, is_enabled=data.is_enabled,
                         rate_limit_per_min=data.rate_limit_per_min)
    return await require_channel(tenant_conn, tenant_id, channel_id, secret_key=settings.secret_key_bytes)


@delete("/channels/{channel_id:str}", summary="Delete a notification channel", guards=ADMIN,
        responses=error_specs(400, 401, 403, 404))
async def delete_tenant_channel(channel_id: ChannelIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                                now: NowDep) -> None:
    """Its routing rules go with it and its queued jobs are cancelled; the delivery log keeps its past jobs."""
    await delete_channel(tenant_conn, require_tenant(principal), parse_uuid(channel_id, "channel_id"), now=now)


@post("/channels/{channel_id:str}/test", status_code=200, summary="Send a test notification", guards=ADMIN,
      responses=error_specs(400, 401, 403, 404))
async def test_tenant_channel(channel_id: ChannelIdPath, principal: PrincipalDep, engine: EngineDep,
                              settings: SettingsDep, now: NowDep) -> SendResult:
    """Send a sample alert to this one channel now and answer what happened. Nothing is written: no job, no
    alert. The channel's settings are read in a short transaction that ends before anything is sent."""
    tenant_id = require_tenant(principal)
    async with tenant_tx(engine, tenant_id) as conn:
        target = await require_channel_target(conn, tenant_id, parse_uuid(channel_id, "channel_id"),
                                              settings=settings)
    async with PinnedClient(timeout=TEST_SEND_TIMEOUT) as http:
        return await send_test(target, tenant_id, now=now, http=http, allow=settings.allow_private_urls)


# --- routing rules ---------------------------------------------------------------------------------------------------

@get("/routing-rules", summary="List routing rules in matching order", responses=error_specs(401, 403))
async def list_tenant_routes(principal: PrincipalDep, tenant_conn: TenantConnDep) -> RouteList:
    return RouteList(items=await list_routes(tenant_conn, require_tenant(principal)))


@post("/routing-rules", summary="Add a routing rule", guards=ADMIN, responses=error_specs(400, 401, 403, 404))
async def create_tenant_route(data: JSONBody[RouteCreate], principal: PrincipalDep,
                              tenant_conn: TenantConnDep) -> RoutingRule:
    tenant_id = require_tenant(principal)
    route_id = await create_route(tenant_conn, tenant_id, **msgspec.structs.asdict(data))
    return await require_route(tenant_conn, tenant_id, route_id)


@patch("/routing-rules/{route_id:str}", summary="Change a routing rule", guards=ADMIN,
       responses=error_specs(400, 401, 403, 404))
async def update_tenant_route(route_id: RouteIdPath, data: JSONBody[RouteUpdate], principal: PrincipalDep,
                              tenant_conn: TenantConnDep, now: NowDep) -> RoutingRule:
    tenant_id = require_tenant(principal)
    route_id = parse_uuid(route_id, "route_id")
    changes = sent_fields(data)
    await update_route(tenant_conn, tenant_id, route_id, changes, now=now)
    return await require_route(tenant_conn, tenant_id, route_id)


@delete("/routing-rules/{route_id:str}", summary="Delete a routing rule", guards=ADMIN,
        responses=error_specs(400, 401, 403, 404))
async def delete_tenant_route(route_id: RouteIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> None:
    await delete_route(tenant_conn, require_tenant(principal), parse_uuid(route_id, "route_id"))


# --- delivery log and dead letters -----------------------------------------------------------------------------------

LimitQuery = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description=f"1-{MAX_PAGE}")]
CursorQuery = Annotated[str | None, QueryParameter(max_length=200, description="next_cursor of the previous page")]
UuidQuery = Annotated[str | None, QueryParameter(max_length=64)]


@get("/notifications/jobs", summary="The delivery log", responses=error_specs(400, 401, 403))
async def list_tenant_jobs(
    principal: PrincipalDep, tenant_conn: TenantConnDep,
    status: Annotated[list[str] | None, QueryParameter(
        description="PENDING, IN_PROGRESS, DELIVERED, DEAD or CANCELLED; repeat or comma-separate")] = None,
    channel_id: UuidQuery = None, alert_id: UuidQuery = None, limit: LimitQuery = 50, cursor: CursorQuery = None,
) -> JobPage:
    """Notifications newest first, one per alert change and route, with their state."""
    return await list_jobs(tenant_conn, require_tenant(principal), statuses=_statuses(status), channel_id=channel_id,
                           alert_id=alert_id, limit=limit, cursor=cursor)


@get("/notifications/jobs/{job_id:str}", summary="One notification with its attempts",
     responses=error_specs(400, 401, 403, 404))
async def get_tenant_job(job_id: JobIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> JobWithAttempts:
    return await require_job(tenant_conn, require_tenant(principal), job_id)


@get("/notifications/dead-letters", summary="Notifications that were given up on", responses=error_specs(400, 401, 403))
async def list_tenant_dead_letters(principal: PrincipalDep, tenant_conn: TenantConnDep, channel_id: UuidQuery = None,
                                   alert_id: UuidQuery = None, limit: LimitQuery = 50,
                                   cursor: CursorQuery = None) -> JobPage:
    """The DEAD jobs, newest first; each can be replayed."""
    return await list_jobs(tenant_conn, require_tenant(principal), statuses=["DEAD"], channel_id=channel_id,
                           alert_id=alert_id, limit=limit, cursor=cursor)


@post("/notifications/jobs/{job_id:str}/replay", status_code=200, summary="Send a dead letter again", guards=ADMIN,
      responses=error_specs(400, 401, 403, 404, 409))
async def replay_tenant_job(job_id: JobIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                            now: NowDep) -> JobWithAttempts:
    """The job goes back in the queue with a fresh attempt budget; only DEAD jobs can be replayed (else 409)."""
    tenant_id = require_tenant(principal)
    job_id = parse_uuid(job_id, "job_id")
    await replay_dead_job(tenant_conn, tenant_id, job_id, now=now)
    return await require_job(tenant_conn, tenant_id, job_id)


router = Router(path="/customer", route_handlers=[
    list_tenant_channels, create_tenant_channel, get_tenant_channel, update_tenant_channel, delete_tenant_channel,
    test_tenant_channel, list_tenant_routes, create_tenant_route, update_tenant_route, delete_tenant_route,
    list_tenant_jobs, get_tenant_job, list_tenant_dead_letters, replay_tenant_job,
], guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["notifications"])
