"""A tenant's device groups and their members (rules, windows and routes can name a group)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_line, check_optional_line, parse_uuid
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.fleet.admin import DeviceGroup
from pulse.fleet.admin.checks import check_device_ids, require_known_devices

_GROUP_SQL = """
SELECT g.group_id::text AS group_id, g.name, g.description, g.created_at,
       ARRAY(SELECT m.device_id FROM device_group_members m WHERE m.group_id = g.group_id
             ORDER BY m.device_id) AS device_ids
FROM device_groups g WHERE g.tenant_id = :t
"""


def _group(row: Any) -> DeviceGroup:
    return DeviceGroup(group_id=row.group_id, name=row.name, description=row.description,
                       device_ids=list(row.device_ids), created_at=row.created_at)


async def list_groups(conn: AsyncConnection, tenant_id: str) -> list[DeviceGroup]:
    rows = (await conn.execute(text(_GROUP_SQL + " ORDER BY g.name"), {"t": tenant_id})).all()
    return [_group(r) for r in rows]


async def require_group(conn: AsyncConnection, tenant_id: str, group_id: str) -> DeviceGroup:
    group_id = parse_uuid(group_id, "group_id")
    row = (await conn.execute(text(_GROUP_SQL + " AND g.group_id = CAST(:g AS uuid)"),
                              {"t": tenant_id, "g": group_id})).first()
    if row is None:
        raise NotFound(f"device group {group_id} not found", details={"field": "group_id"})
    return _group(row)


async def _name_free(conn: AsyncConnection, tenant_id: str, name: str, group_id: str | None = None) -> None:
    taken = (await conn.execute(text(
        "SELECT 1 FROM device_groups WHERE tenant_id = :t AND name = :n "
        "AND (CAST(:g AS uuid) IS NULL OR group_id <> CAST(:g AS uuid))"),
        {"t": tenant_id, "n": name, "g": group_id})).first()
    if taken:
        raise Conflict(f"a device group named {name!r} already exists", details={"field": "name"})


async def create_group(conn: AsyncConnection, tenant_id: str, name: str, *, description: str | None = None,
                       device_ids: Any = (), now: datetime) -> DeviceGroup:
    name = check_line(name, "name", 100)
    description = check_optional_line(description, "description", 500)
    members = check_device_ids(list(device_ids), allow_empty=True)
    if members:
        await require_known_devices(conn, tenant_id, members)
    await _name_free(conn, tenant_id, name)
    group_id = (await conn.execute(text(
        "INSERT INTO device_groups (tenant_id, name, description, created_at) VALUES (:t, :n, :d, :now) "
        "RETURNING group_id::text"), {"t": tenant_id, "n": name, "d": description, "now": now})).scalar_one()
    await add_members(conn, tenant_id, [group_id], members, now)
    return await require_group(conn, tenant_id, group_id)


async def update_group(conn: AsyncConnection, tenant_id: str, group_id: str, changes: dict[str, Any]) -> DeviceGroup:
    group = await require_group(conn, tenant_id, group_id)
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "name":
            values[key] = check_line(value, "name", 100)
            await _name_free(conn, tenant_id, values[key], group.group_id)
        elif key == "description":
            values[key] = check_optional_line(value, "description", 500)
        else:
            raise ValidationError(f"unknown field {key}", field=key)
    if values:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        await conn.execute(text(f"UPDATE device_groups SET {sets} "
                                "WHERE tenant_id = :t AND group_id = CAST(:g AS uuid)"),
                           {**values, "t": tenant_id, "g": group.group_id})
    return await require_group(conn, tenant_id, group.group_id)


async def delete_group(conn: AsyncConnection, tenant_id: str, group_id: str) -> None:
    """Delete a group (its devices stay). Alert and routing rules naming it no longer match through it."""
    group_id = parse_uuid(group_id, "group_id")
    deleted = (await conn.execute(text(
        "DELETE FROM device_groups WHERE tenant_id = :t AND group_id = CAST(:g AS uuid) RETURNING group_id"),
        {"t": tenant_id, "g": group_id})).first()
    if deleted is None:
        raise NotFound(f"device group {group_id} not found", details={"field": "group_id"})


async def add_members(conn: AsyncConnection, tenant_id: str, group_ids: Iterable[str], device_ids: list[str],
                      now: datetime) -> None:
    """Put every device in every group (memberships that exist stay as they are); ids are known to be the tenant's."""
    groups = list(group_ids)
    if not groups or not device_ids:
        return
    await conn.execute(text(
        "INSERT INTO device_group_members (tenant_id, group_id, device_id, added_at) "
        "SELECT :t, g, d, :now FROM unnest(CAST(:groups AS uuid[])) AS g, unnest(CAST(:devices AS text[])) AS d "
        "ON CONFLICT (group_id, device_id) DO NOTHING"),
        {"t": tenant_id, "groups": groups, "devices": device_ids, "now": now})


async def add_group_members(conn: AsyncConnection, tenant_id: str, group_id: str, device_ids: Any, *,
                            now: datetime) -> DeviceGroup:
    """Add devices to a group (those already in it stay as they are)."""
    group = await require_group(conn, tenant_id, group_id)
    members = check_device_ids(device_ids)
    await require_known_devices(conn, tenant_id, members)
    await add_members(conn, tenant_id, [group.group_id], members, now)
    return await require_group(conn, tenant_id, group.group_id)


async def set_group_members(conn: AsyncConnection, tenant_id: str, group_id: str, device_ids: Any, *,
                            now: datetime) -> DeviceGroup:
    """Make exactly these devices the group's members (an empty list empties it)."""
    group = await require_group(conn, tenant_id, group_id)
    members = check_device_ids(device_ids, allow_empty=True)
    if members:
        await require_known_devices(conn, tenant_id, members)
    await conn.execute(text("DELETE FROM device_group_members WHERE tenant_id = :t AND group_id = CAST(:g AS uuid) "
                            "AND device_id <> ALL(:ids)"), {"t": tenant_id, "g": group.group_id, "ids": members})
    await add_members(conn, tenant_id, [group.group_id], members, now)
    return await require_group(conn, tenant_id, group.group_id)
