"""/customer: a tenant's devices (lifecycle, credentials, tags, CSV import), sites and device groups.

Any member of the tenant (`customer`, `tenant-admin`) may read; every change needs `tenant-admin`. The tenant
comes from the token only; another tenant's ids are simply not found. Credentials are shown once, in the answer
that issued them (`Cache-Control: no-store`); only their hashes are kept.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, delete, get, patch, post, put
from litestar.params import JSONBody, PathParameter
from msgspec import UNSET, UnsetType

from pulse.fleet.admin import Device, DeviceGroup, ImportResult, Site, TagChange
from pulse.fleet.admin.csv_import import MAX_IMPORT_BYTES, import_devices_csv
from pulse.fleet.admin.devices import (
    change_tags,
    create_device,
    decommission_device,
    delete_device,
    revoke_device_credentials,
    rotate_device_credentials,
    update_device,
)
from pulse.fleet.admin.groups import (
    add_group_members,
    create_group,
    delete_group,
    list_groups,
    require_group,
    set_group_members,
    update_group,
)
from pulse.fleet.admin.sites import create_site, delete_site, list_sites, require_site, update_site
from pulse.fleet.schemas import DeviceCredentials
from pulse.web.auth import require_roles
from pulse.web.deps import NowDep, PrincipalDep, SettingsDep, TenantConnDep, require_tenant
from pulse.web.errors import HttpError, error_specs
from pulse.web.openapi import CSV_BODY
from pulse.web.routes.common import ADMIN, BEARER, MEMBER_ROLES, sent_fields
from pulse.web.routes.devices import MqttAccess, broker_address
from pulse.web.routes.identity import NO_STORE

CSV_MEDIA_TYPES = ("text/csv", "application/csv")

DeviceIdPath = Annotated[str, PathParameter(description="the device's id")]
SiteIdPath = Annotated[str, PathParameter(description="the site's id")]
GroupIdPath = Annotated[str, PathParameter(description="the device group's UUID")]


class UnsupportedMediaType(HttpError):
    code = "unsupported_media_type"
    status = 415


# --- bodies ------------------------------------------------------------------------------------------------------

class DeviceCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    device_id: str
    name: str | None = None
    site_id: str | None = None
    device_type: str | None = None
    tags: list[str] = []
    attributes: dict[str, Any] | None = None
    heartbeat_interval_s: int | None = None
    lat: float | None = None
    lng: float | None = None
    group_ids: list[str] = []


class DeviceUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change; null resets site, type, heartbeat interval (tenant default) or position."""

    name: str | UnsetType = UNSET
    site_id: str | UnsetType | None = UNSET
    device_type: str | UnsetType | None = UNSET
    tags: list[str] | UnsetType = UNSET
    attributes: dict[str, Any] | UnsetType = UNSET
    heartbeat_interval_s: int | UnsetType | None = UNSET
    lat: float | UnsetType | None = UNSET
    lng: float | UnsetType | None = UNSET
    status: str | UnsetType = UNSET


class TagsReplace(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tags: list[str]


class TagsBulk(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    device_ids: list[str]
    add: list[str] = []
    remove: list[str] = []


class SiteCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    site_id: str
    name: str
    timezone: str = "UTC"
    address: str | None = None
    lat: float | None = None
    lng: float | None = None


class SiteUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str | UnsetType = UNSET
    timezone: str | UnsetType = UNSET
    address: str | UnsetType | None = UNSET
    lat: float | UnsetType | None = UNSET
    lng: float | UnsetType | None = UNSET


class GroupCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str | None = None
    device_ids: list[str] = []


class GroupUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET


class Members(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    device_ids: list[str]


# --- answers -----------------------------------------------------------------------------------------------------

class IssuedCredentials(msgspec.Struct, kw_only=True):
    """Shown once. The provision token authenticates HTTP ingest; the MQTT account the broker connection."""

    tenant_id: str
    device_id: str
    provision_token: str
    mqtt: MqttAccess


class DeviceCreated(msgspec.Struct, kw_only=True):
    device: Device
    credentials: IssuedCredentials


class SiteList(msgspec.Struct, kw_only=True):
    items: list[Site]


class GroupList(msgspec.Struct, kw_only=True):
    items: list[DeviceGroup]


def _issued(creds: DeviceCredentials, settings: SettingsDep) -> IssuedCredentials:
    host, port = broker_address(settings)
    return IssuedCredentials(tenant_id=creds.tenant_id, device_id=creds.device_id,
                             provision_token=creds.provision_token,
                             mqtt=MqttAccess(username=creds.mqtt_username, password=creds.mqtt_password,
                                             client_id=creds.mqtt_client_id, topic_prefix=creds.topic_prefix,
                                             host=host, port=port))


# --- devices -----------------------------------------------------------------------------------------------------

@post("/devices", status_code=201, summary="Register a device and issue its credentials", guards=ADMIN,
      responses=error_specs(400, 401, 403, 409))
async def create_tenant_device(data: JSONBody[DeviceCreate], principal: PrincipalDep, tenant_conn: TenantConnDep,
                               settings: SettingsDep, now: NowDep) -> Response[DeviceCreated]:
    """The device can send at once with the returned provision token (HTTP) or MQTT account. The secrets are
    shown only in this answer. 403 `limit_exceeded` when the subscription has no room for another device."""
    device, creds = await create_device(
        tenant_conn, require_tenant(principal), data.device_id, name=data.name, site_id=data.site_id,
        device_type=data.device_type, tags=data.tags, attributes=data.attributes,
        heartbeat_interval_s=data.heartbeat_interval_s, lat=data.lat, lng=data.lng, group_ids=data.group_ids,
        now=now, secret_key=settings.secret_key_bytes)
    return Response(DeviceCreated(device=device, credentials=_issued(creds, settings)), status_code=201,
                    headers=NO_STORE)


@post("/devices/import", status_code=200, summary="Register many devices from a CSV file", guards=ADMIN,
      description="Body: `text/csv`, UTF-8, header row first; columns `device_id` (required), `name`, `site_id`, "
                  "`device_type`, `tags` (separated by `;`), `heartbeat_interval_s`; at most 5000 rows and 2 MiB. "
                  "One result per row (`row` 2 is the first after the header): `created`, or `error` with the "
                  "field and reason. Good rows are registered even when others fail. No credentials are issued: "
                  "issue them per device with POST /customer/devices/{device_id}/credentials.",
      request_max_body_size=MAX_IMPORT_BYTES, responses=error_specs(400, 401, 403, 413, 415),
      operation_class=CSV_BODY)
async def import_tenant_devices(request: Request[Any, Any, Any], principal: PrincipalDep, tenant_conn: TenantConnDep,
                                now: NowDep) -> ImportResult:
    media_type = request.content_type[0]
    if media_type not in CSV_MEDIA_TYPES:
        raise UnsupportedMediaType(f"send the file as text/csv, not {media_type or 'no content type'}",
                                   details={"field": "content-type"})
    return await import_devices_csv(tenant_conn, require_tenant(principal), await request.body(), now=now)


@post("/devices/tags", status_code=200, summary="Add and remove tags on many devices", guards=ADMIN,
      responses=error_specs(400, 401, 403))
async def change_tenant_device_tags(data: JSONBody[TagsBulk], principal: PrincipalDep, tenant_conn: TenantConnDep,
                                    now: NowDep) -> TagChange:
    """All or nothing: an unknown device id refuses the change (400 naming `device_ids`). Decommissioned devices
    are left as they are and listed in `skipped`."""
    return await change_tags(tenant_conn, require_tenant(principal), data.device_ids, add=data.add,
                             remove=data.remove, now=now)


@patch("/devices/{device_id:str}", summary="Change a device", guards=ADMIN,
       responses=error_specs(400, 401, 403, 404, 409))
async def update_tenant_device(device_id: DeviceIdPath, data: JSONBody[DeviceUpdate], principal: PrincipalDep,
                               tenant_conn: TenantConnDep, now: NowDep) -> Device:
    """`status` DISABLED makes ingest refuse the device's messages (403 DEVICE_REVOKED) while it keeps its
    credentials; ACTIVE lets it send again."""
    return await update_device(tenant_conn, require_tenant(principal), device_id, sent_fields(data), now=now)


@delete("/devices/{device_id:str}", summary="Delete a decommissioned device", guards=ADMIN,
        responses=error_specs(401, 403, 404, 409))
async def delete_tenant_device(device_id: DeviceIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> None:
    """409 unless the device is decommissioned. Its stored telemetry stays until the retention period ends."""
    await delete_device(tenant_conn, require_tenant(principal), device_id)


@post("/devices/{device_id:str}/decommission", status_code=200, summary="Decommission a device", guards=ADMIN,
      responses=error_specs(401, 403, 404))
async def decommission_tenant_device(device_id: DeviceIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep,
                                     now: NowDep) -> Device:
    """Final: its credentials are revoked, ingest refuses it, and it no longer counts against the device limit."""
    return await decommission_device(tenant_conn, require_tenant(principal), device_id, now=now)


@post("/devices/{device_id:str}/credentials", status_code=200, summary="Issue or rotate a device's credentials",
      guards=ADMIN, responses=error_specs(401, 403, 404, 409))
async def rotate_tenant_device_credentials(device_id: DeviceIdPath, principal: PrincipalDep,
                                           tenant_conn: TenantConnDep, settings: SettingsDep,
                                           now: NowDep) -> Response[IssuedCredentials]:
    """A new provision token and MQTT password, shown once; the previous ones stop working. 409 unless the
    device is ACTIVE."""
    creds = await rotate_device_credentials(tenant_conn, require_tenant(principal), device_id, now=now,
                                            secret_key=settings.secret_key_bytes)
    return Response(_issued(creds, settings), status_code=200, headers=NO_STORE)


@delete("/devices/{device_id:str}/credentials", summary="Revoke a device's credentials", guards=ADMIN,
        responses=error_specs(401, 403, 404))
async def revoke_tenant_device_credentials(device_id: DeviceIdPath, principal: PrincipalDep,
                                           tenant_conn: TenantConnDep, now: NowDep) -> None:
    """The device can no longer send until new credentials are issued; its status does not change."""
    await revoke_device_credentials(tenant_conn, require_tenant(principal), device_id, now=now)


@put("/devices/{device_id:str}/tags", summary="Replace a device's tags", guards=ADMIN,
     responses=error_specs(400, 401, 403, 404, 409))
async def replace_tenant_device_tags(device_id: DeviceIdPath, data: JSONBody[TagsReplace], principal: PrincipalDep,
                                     tenant_conn: TenantConnDep, now: NowDep) -> Device:
    return await update_device(tenant_conn, require_tenant(principal), device_id, {"tags": data.tags}, now=now)


# --- sites -------------------------------------------------------------------------------------------------------

@get("/sites", summary="List sites", responses=error_specs(401, 403))
async def list_tenant_sites(principal: PrincipalDep, tenant_conn: TenantConnDep) -> SiteList:
    return SiteList(items=await list_sites(tenant_conn, require_tenant(principal)))


@post("/sites", summary="Create a site", guards=ADMIN, responses=error_specs(400, 401, 403, 409))
async def create_tenant_site(data: JSONBody[SiteCreate], principal: PrincipalDep, tenant_conn: TenantConnDep,
                             now: NowDep) -> Site:
    return await create_site(tenant_conn, require_tenant(principal), data.site_id, data.name,
                             timezone=data.timezone, address=data.address, lat=data.lat, lng=data.lng, now=now)


@get("/sites/{site_id:str}", summary="Get a site", responses=error_specs(401, 403, 404))
async def get_tenant_site(site_id: SiteIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> Site:
    return await require_site(tenant_conn, require_tenant(principal), site_id)


@patch("/sites/{site_id:str}", summary="Change a site", guards=ADMIN, responses=error_specs(400, 401, 403, 404))
async def update_tenant_site(site_id: SiteIdPath, data: JSONBody[SiteUpdate], principal: PrincipalDep,
                             tenant_conn: TenantConnDep, now: NowDep) -> Site:
    return await update_site(tenant_conn, require_tenant(principal), site_id, sent_fields(data), now=now)


@delete("/sites/{site_id:str}", summary="Delete a site", guards=ADMIN, responses=error_specs(401, 403, 404))
async def delete_tenant_site(site_id: SiteIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> None:
    """The site's devices stay, with no site."""
    await delete_site(tenant_conn, require_tenant(principal), site_id)


# --- device groups -----------------------------------------------------------------------------------------------

@get("/device-groups", summary="List device groups", responses=error_specs(401, 403))
async def list_tenant_groups(principal: PrincipalDep, tenant_conn: TenantConnDep) -> GroupList:
    return GroupList(items=await list_groups(tenant_conn, require_tenant(principal)))


@post("/device-groups", summary="Create a device group", guards=ADMIN, responses=error_specs(400, 401, 403, 409))
async def create_tenant_group(data: JSONBody[GroupCreate], principal: PrincipalDep, tenant_conn: TenantConnDep,
                              now: NowDep) -> DeviceGroup:
    return await create_group(tenant_conn, require_tenant(principal), data.name, description=data.description,
                              device_ids=data.device_ids, now=now)


@get("/device-groups/{group_id:str}", summary="Get a device group", responses=error_specs(400, 401, 403, 404))
async def get_tenant_group(group_id: GroupIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> DeviceGroup:
    return await require_group(tenant_conn, require_tenant(principal), group_id)


@patch("/device-groups/{group_id:str}", summary="Rename or describe a device group", guards=ADMIN,
       responses=error_specs(400, 401, 403, 404, 409))
async def update_tenant_group(group_id: GroupIdPath, data: JSONBody[GroupUpdate], principal: PrincipalDep,
                              tenant_conn: TenantConnDep) -> DeviceGroup:
    return await update_group(tenant_conn, require_tenant(principal), group_id, sent_fields(data))


@delete("/device-groups/{group_id:str}", summary="Delete a device group", guards=ADMIN,
        responses=error_specs(400, 401, 403, 404))
async def delete_tenant_group(group_id: GroupIdPath, principal: PrincipalDep, tenant_conn: TenantConnDep) -> None:
    """Its devices stay; rules that name the group no longer match through it."""
    await delete_group(tenant_conn, require_tenant(principal), group_id)


@put("/device-groups/{group_id:str}/members", summary="Replace a device group's members", guards=ADMIN,
     responses=error_specs(400, 401, 403, 404))
async def replace_tenant_group_members(group_id: GroupIdPath, data: JSONBody[Members], principal: PrincipalDep,
                                       tenant_conn: TenantConnDep, now: NowDep) -> DeviceGroup:
    return await set_group_members(tenant_conn, require_tenant(principal), group_id, data.device_ids, now=now)


@post("/device-groups/{group_id:str}/members", status_code=200, summary="Add devices to a device group",
      guards=ADMIN, responses=error_specs(400, 401, 403, 404))
async def add_tenant_group_members(group_id: GroupIdPath, data: JSONBody[Members], principal: PrincipalDep,
                                   tenant_conn: TenantConnDep, now: NowDep) -> DeviceGroup:
    return await add_group_members(tenant_conn, require_tenant(principal), group_id, data.device_ids, now=now)


router = Router(path="/customer", route_handlers=[
    create_tenant_device, import_tenant_devices, change_tenant_device_tags, update_tenant_device,
    delete_tenant_device, decommission_tenant_device, rotate_tenant_device_credentials,
    revoke_tenant_device_credentials, replace_tenant_device_tags,
    list_tenant_sites, create_tenant_site, get_tenant_site, update_tenant_site, delete_tenant_site,
    list_tenant_groups, create_tenant_group, get_tenant_group, update_tenant_group, delete_tenant_group,
    replace_tenant_group_members, add_tenant_group_members,
], guards=[require_roles(*MEMBER_ROLES)], security=BEARER, tags=["devices"])
