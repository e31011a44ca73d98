"""A tenant's devices: registration, changes, lifecycle (disable, decommission, delete), credentials and tags."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_line, check_optional_line
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.fleet.admin import Device, TagChange
from pulse.fleet.admin.checks import (
    MAX_TAGS,
    check_attributes,
    check_coordinate,
    check_device_ids,
    check_heartbeat_interval,
    check_new_device_id,
    check_position,
    check_site_id,
    check_tags,
    require_known_devices,
    require_known_groups,
    require_known_site,
)
from pulse.fleet.admin.groups import add_members
from pulse.fleet.schemas import DeviceCredentials
from pulse.fleet.service import _revoke_credentials, issue_credentials, notify_device_changed, register_device

SETTABLE_STATUSES = ("ACTIVE", "DISABLED")


_DEVICE_SQL = """
SELECT d.device_id, d.name, d.site_id, d.device_type, d.tags, d.attributes, d.heartbeat_interval_s, d.status,
       d.lat, d.lng, d.created_at, d.updated_at, d.decommissioned_at,
       ARRAY(SELECT m.group_id::text FROM device_group_members m
             WHERE m.tenant_id = d.tenant_id AND m.device_id = d.device_id
             ORDER BY m.added_at, m.group_id) AS group_ids,
       (SELECT max(c.created_at) FROM device_credentials c
        WHERE c.tenant_id = d.tenant_id AND c.device_id = d.device_id AND c.kind = 'PROVISION_TOKEN'
          AND c.revoked_at IS NULL) AS credentials_issued_at
FROM devices d WHERE d.tenant_id = :t AND d.device_id = :d
"""


async def get_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> Device | None:
    row = (await conn.execute(text(_DEVICE_SQL), {"t": tenant_id, "d": device_id})).first()
    if row is None:
        return None
    return Device(device_id=row.device_id, name=row.name, site_id=row.site_id, device_type=row.device_type,
                  tags=list(row.tags), attributes=dict(row.attributes), heartbeat_interval_s=row.heartbeat_interval_s,
                  status=row.status, lat=row.lat, lng=row.lng, group_ids=list(row.group_ids),
                  credentials_issued_at=row.credentials_issued_at, created_at=row.created_at,
                  updated_at=row.updated_at, decommissioned_at=row.decommissioned_at)


async def require_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> Device:
    device = await get_device(conn, tenant_id, device_id)
    if device is None:
        raise NotFound(f"device {device_id} not found", details={"field": "device_id"})
    return device


async def _lock_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> Any:
    row = (await conn.execute(text(
        "SELECT device_id, status, site_id, lat, lng FROM devices WHERE tenant_id = :t AND device_id = :d FOR UPDATE"),
        {"t": tenant_id, "d": device_id})).first()
    if row is None:
        raise NotFound(f"device {device_id} not found", details={"field": "device_id"})
    return row


async def create_device(conn: AsyncConnection, tenant_id: str, device_id: str, *, name: str | None = None,
                        site_id: str | None = None, device_type: str | None = None, tags: Sequence[str] = (),
                        attributes: dict[str, Any] | None = None, heartbeat_interval_s: int | None = None,
                        lat: float | None = None, lng: float | None = None, group_ids: Sequence[str] = (),
                        now: datetime, secret_key: bytes | None = None) -> tuple[Device, DeviceCredentials]:
    """Register an ACTIVE device within the subscription's device limit, put it in its groups and give it
    credentials at once (shown once: only their hashes are stored)."""
    device_id = await register_checked_device(
        conn, tenant_id, device_id, name=name, site_id=site_id, device_type=device_type, tags=tags,
        attributes=attributes, heartbeat_interval_s=heartbeat_interval_s, lat=lat, lng=lng, group_ids=group_ids,
        now=now)
    # Issuing also tells ingest, which may hold an "unknown device" record for this id.
    credentials = await issue_credentials(conn, tenant_id, device_id, now=now, secret_key=secret_key)
    return await require_device(conn, tenant_id, device_id), credentials


async def register_checked_device(conn: AsyncConnection, tenant_id: str, device_id: str, *,
                                  name: str | None = None, site_id: str | None = None, device_type: str | None = None,
                                  tags: Sequence[str] = (), attributes: dict[str, Any] | None = None,
                                  heartbeat_interval_s: int | None = None, lat: float | None = None,
                                  lng: float | None = None, group_ids: Sequence[str] = (), now: datetime) -> str:
    """Check every field, then register the device (fleet.service) with what registration does not cover."""
    device_id = check_new_device_id(device_id)
    name = check_optional_line(name, "name", 200)
    if site_id is not None:
        check_site_id(site_id)
    device_type = check_optional_line(device_type, "device_type", 64)
    tag_list = check_tags(list(tags))
    attrs = check_attributes(attributes)
    heartbeat = check_heartbeat_interval(heartbeat_interval_s)
    lat_v, lng_v = check_coordinate(lat, "lat", 90), check_coordinate(lng, "lng", 180)
    check_position(lat_v, lng_v)
    groups = await require_known_groups(conn, tenant_id, list(group_ids))
    await register_device(conn, tenant_id, device_id, name=name, device_type=device_type, site_id=site_id,
                          tags=tag_list, attributes=attrs, now=now)
    if heartbeat is not None or lat_v is not None:
        await conn.execute(text("UPDATE devices SET heartbeat_interval_s = :hb, lat = :lat, lng = :lng "
                                "WHERE tenant_id = :t AND device_id = :d"),
                           {"hb": heartbeat, "lat": lat_v, "lng": lng_v, "t": tenant_id, "d": device_id})
    await add_members(conn, tenant_id, groups, [device_id], now)
    return device_id


_UPDATABLE = ("name", "site_id", "device_type", "tags", "attributes", "heartbeat_interval_s", "lat", "lng", "status")


async def update_device(conn: AsyncConnection, tenant_id: str, device_id: str, changes: dict[str, Any], *,
                        now: datetime) -> Device:
    """Change the given fields; `status` may be ACTIVE or DISABLED (a disabled device's messages are refused
    but it keeps its credentials). A decommissioned device cannot change (409)."""
    unknown = sorted(set(changes) - set(_UPDATABLE))
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]}", field=unknown[0])
    current = await _lock_device(conn, tenant_id, device_id)
    if current.status == "DECOMMISSIONED":
        raise Conflict(f"device {device_id} is decommissioned; it can only be deleted", details={"field": "status"})
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = check_line(changes["name"], "name", 200)
    if "site_id" in changes:
        site_id = changes["site_id"]
        if site_id is not None:
            await require_known_site(conn, tenant_id, check_site_id(site_id))
        values["site_id"] = site_id
    if "device_type" in changes:
        values["device_type"] = check_optional_line(changes["device_type"], "device_type", 64)
    if "tags" in changes:
        values["tags"] = check_tags(changes["tags"])
    if "attributes" in changes:
        values["attributes"] = msgspec.json.encode(check_attributes(changes["attributes"])).decode()
    if "heartbeat_interval_s" in changes:
        values["heartbeat_interval_s"] = check_heartbeat_interval(changes["heartbeat_interval_s"])
    if "lat" in changes:
        values["lat"] = check_coordinate(changes["lat"], "lat", 90)
    if "lng" in changes:
        values["lng"] = check_coordinate(changes["lng"], "lng", 180)
    if "lat" in values or "lng" in values:
        check_position(values.get("lat", current.lat), values.get("lng", current.lng))
    if "status" in changes:
        status = changes["status"]
        if status not in SETTABLE_STATUSES:
            raise ValidationError("must be ACTIVE or DISABLED (decommission a device with POST …/decommission)",
                                  field="status")
        values["status"] = status
    if values:
        sets = ", ".join("attributes = CAST(:attributes AS jsonb)" if k == "attributes" else f"{k} = :{k}"
                         for k in values)
        await conn.execute(text(f"UPDATE devices SET {sets}, updated_at = :now "
                                "WHERE tenant_id = :t AND device_id = :d"),
                           {**values, "now": now, "t": tenant_id, "d": device_id})
        if "status" in values or "site_id" in values:
            await notify_device_changed(conn, tenant_id, device_id)
    return await require_device(conn, tenant_id, device_id)


async def decommission_device(conn: AsyncConnection, tenant_id: str, device_id: str, *, now: datetime) -> Device:
    """Retire a device for good: status DECOMMISSIONED, every credential revoked, no longer counted against the
    device limit. Decommissioning a decommissioned device changes nothing."""
    current = await _lock_device(conn, tenant_id, device_id)
    if current.status != "DECOMMISSIONED":
        await conn.execute(text("UPDATE devices SET status = 'DECOMMISSIONED', decommissioned_at = :now, "
                                "updated_at = :now WHERE tenant_id = :t AND device_id = :d"),
                           {"now": now, "t": tenant_id, "d": device_id})
        await _revoke_credentials(conn, tenant_id, device_id, now)
        await notify_device_changed(conn, tenant_id, device_id)
    return await require_device(conn, tenant_id, device_id)


async def delete_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> None:
    """Remove a decommissioned device with its state, credentials and group memberships (409 otherwise).
    Telemetry already stored stays until the retention period drops it."""
    current = await _lock_device(conn, tenant_id, device_id)
    if current.status != "DECOMMISSIONED":
        raise Conflict(f"device {device_id} is {current.status}; decommission it before deleting it",
                       details={"field": "device_id", "status": current.status})
    await conn.execute(text("DELETE FROM devices WHERE tenant_id = :t AND device_id = :d"),
                       {"t": tenant_id, "d": device_id})
    await notify_device_changed(conn, tenant_id, device_id)


async def rotate_device_credentials(conn: AsyncConnection, tenant_id: str, device_id: str, *, now: datetime,
                                    secret_key: bytes | None = None) -> DeviceCredentials:
    """New provision token and MQTT password for an ACTIVE device; the old ones stop working at commit."""
    current = await _lock_device(conn, tenant_id, device_id)
    if current.status != "ACTIVE":
        raise Conflict(f"device {device_id} is {current.status}; credentials are issued to ACTIVE devices only",
                       details={"field": "status", "status": current.status})
    return await issue_credentials(conn, tenant_id, device_id, now=now, secret_key=secret_key)


async def revoke_device_credentials(conn: AsyncConnection, tenant_id: str, device_id: str, *, now: datetime) -> None:
    """Revoke every live credential of the device; its status stays (issue new credentials to let it send)."""
    await _lock_device(conn, tenant_id, device_id)
    await _revoke_credentials(conn, tenant_id, device_id, now)
    await notify_device_changed(conn, tenant_id, device_id)


async def change_tags(conn: AsyncConnection, tenant_id: str, device_ids: Any, *, add: Any = (), remove: Any = (),
                      now: datetime) -> TagChange:
    """Add and remove tags on many devices at once (a tag in both lists ends up removed); decommissioned devices
    are skipped. Unknown device ids refuse the whole change."""
    ids = check_device_ids(device_ids)
    add_tags, remove_tags = check_tags(add, "add"), check_tags(remove, "remove")
    if not add_tags and not remove_tags:
        raise ValidationError("give tags to add or to remove", field="add")
    statuses = await require_known_devices(conn, tenant_id, ids)
    skipped = [d for d in ids if statuses[d] == "DECOMMISSIONED"]
    live = [d for d in ids if statuses[d] != "DECOMMISSIONED"]
    result = await conn.execute(text("""
        UPDATE devices d SET updated_at = :now, tags = ARRAY(
            SELECT u.tag FROM unnest(d.tags || CAST(:add AS text[])) WITH ORDINALITY AS u(tag, i)
            WHERE u.tag <> ALL(CAST(:remove AS text[])) GROUP BY u.tag ORDER BY min(u.i))
        WHERE d.tenant_id = :t AND d.device_id = ANY(:ids)
          AND cardinality(ARRAY(SELECT DISTINCT x FROM unnest(d.tags || CAST(:add AS text[])) AS x
                                WHERE x <> ALL(CAST(:remove AS text[])))) <= :max_tags"""),
        {"now": now, "add": add_tags, "remove": remove_tags, "t": tenant_id, "ids": live, "max_tags": MAX_TAGS})
    if result.rowcount != len(live):
        raise ValidationError(f"a device would have more than {MAX_TAGS} tags", field="add")
    return TagChange(updated=len(live), skipped=skipped)
