"""Schedules themselves: list, read, create, change and delete (refused while an escalation policy pages one)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_timezone, parse_uuid
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.oncall.schedules.common import LAYER_COLUMNS, check_text, require_schedule_id
from pulse.oncall.schedules.schemas import Schedule, ScheduleDetail, ScheduleLayer
from pulse.sql import execute_unique

_SCHEDULE_COLUMNS = ("schedule_id::text, name, description, timezone, handoff_channel_id::text, created_at, "
                     "updated_at")


def _schedule(row: Any) -> Schedule:
    return Schedule(schedule_id=row.schedule_id, name=row.name, description=row.description, timezone=row.timezone,
                    handoff_channel_id=row.handoff_channel_id, created_at=row.created_at, updated_at=row.updated_at)


def _schedule_layer(row: Any) -> ScheduleLayer:
    return ScheduleLayer(
        layer_id=row.layer_id, position=row.position, name=row.name, rotation_type=row.rotation_type,
        rotation_hours=row.rotation_hours, rotation_start=row.rotation_start,
        handoff_time=row.handoff_time.strftime("%H:%M"), participants=list(row.participants),
        restrictions=list(row.restrictions), starts_at=row.starts_at, ends_at=row.ends_at,
        created_at=row.created_at)


async def list_schedules(conn: AsyncConnection, tenant_id: str) -> list[Schedule]:
    """The tenant's schedules by name."""
    rows = (await conn.execute(text(
        f"SELECT {_SCHEDULE_COLUMNS} FROM oncall_schedules WHERE tenant_id = :t ORDER BY name"),
        {"t": tenant_id})).all()
    return [_schedule(r) for r in rows]


async def get_schedule(conn: AsyncConnection, tenant_id: str, schedule_id: str) -> ScheduleDetail | None:
    """A schedule with its layers in position order, or None."""
    sid = parse_uuid(schedule_id, "schedule_id")
    row = (await conn.execute(text(
        f"SELECT {_SCHEDULE_COLUMNS} FROM oncall_schedules WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"),
        {"t": tenant_id, "s": sid})).first()
    if row is None:
        return None
    layers = (await conn.execute(text(
        f"SELECT {LAYER_COLUMNS} FROM oncall_layers WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) "
        "ORDER BY position"), {"t": tenant_id, "s": sid})).all()
    return ScheduleDetail(**msgspec.structs.asdict(_schedule(row)), layers=[_schedule_layer(r) for r in layers])


async def require_schedule(conn: AsyncConnection, tenant_id: str, schedule_id: str) -> ScheduleDetail:
    found = await get_schedule(conn, tenant_id, schedule_id)
    if found is None:
        raise NotFound(f"schedule {schedule_id} not found", details={"field": "schedule_id"})
    return found


async def _check_channel(conn: AsyncConnection, tenant_id: str, channel_id: str | None) -> str | None:
    if channel_id is None:
        return None
    cid = parse_uuid(channel_id, "handoff_channel_id")
    found = (await conn.execute(text(
        "SELECT 1 FROM notification_channels WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid)"),
        {"t": tenant_id, "c": cid})).first()
    if found is None:
        raise ValidationError(f"no notification channel {channel_id} in this tenant", field="handoff_channel_id")
    return cid


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a schedule named {name!r} exists", details={"field": "name"})


async def create_schedule(conn: AsyncConnection, tenant_id: str, *, name: str, timezone: str, now: datetime,
                          description: str | None = None, handoff_channel_id: str | None = None) -> str:
    """A new schedule without layers; `timezone` is an IANA zone name (wall-clock rules are read in it)."""
    check_text(name, "name")
    if description is not None:
        check_text(description, "description", max_len=2000, required=False)
    check_timezone(timezone)
    channel = await _check_channel(conn, tenant_id, handoff_channel_id)
    result = await execute_unique(conn, (
        "INSERT INTO oncall_schedules (tenant_id, name, description, timezone, handoff_channel_id, created_at, "
        "  updated_at) VALUES (:t, :n, :d, :tz, CAST(:c AS uuid), :now, :now) RETURNING schedule_id::text"),
        {"t": tenant_id, "n": name, "d": description, "tz": timezone, "c": channel, "now": now}, _name_taken(name))
    return str(result.scalar_one())


async def update_schedule(conn: AsyncConnection, tenant_id: str, schedule_id: str, *, now: datetime,
                          name: str | UnsetType = UNSET, description: str | UnsetType | None = UNSET,
                          timezone: str | UnsetType = UNSET,
                          handoff_channel_id: str | UnsetType | None = UNSET) -> None:
    """Change what is given (an argument left out keeps its value)."""
    sid = await require_schedule_id(conn, tenant_id, schedule_id, lock=True)
    sets, params = ["updated_at = :now"], {"t": tenant_id, "s": sid, "now": now}
    if not isinstance(name, UnsetType):
        sets.append("name = :n")
        params["n"] = check_text(name, "name")
    if not isinstance(description, UnsetType):
        if description is not None:
            check_text(description, "description", max_len=2000, required=False)
        sets.append("description = :d")
        params["d"] = description
    if not isinstance(timezone, UnsetType):
        check_timezone(timezone)
        sets.append("timezone = :tz")
        params["tz"] = timezone
    if not isinstance(handoff_channel_id, UnsetType):
        sets.append("handoff_channel_id = CAST(:c AS uuid)")
        params["c"] = await _check_channel(conn, tenant_id, handoff_channel_id)
    await execute_unique(conn, f"UPDATE oncall_schedules SET {', '.join(sets)} "
                               "WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)", params,
                         _name_taken(str(params.get("n"))))


async def policies_targeting(conn: AsyncConnection, tenant_id: str, kind: str, target_id: str) -> list[str]:
    """Names of the escalation policies with a level that targets (`kind`, `target_id`)."""
    rows = (await conn.execute(text(
        "SELECT DISTINCT p.name FROM escalation_levels l JOIN escalation_policies p ON p.policy_id = l.policy_id "
        "WHERE l.tenant_id = :t AND l.targets @> CAST(:target AS jsonb) ORDER BY p.name"),
        {"t": tenant_id, "target": json.dumps([{"type": kind, "id": target_id}])})).scalars()
    return list(rows)


async def delete_schedule(conn: AsyncConnection, tenant_id: str, schedule_id: str) -> None:
    """Delete a schedule with its layers and overrides; refused (409) while an escalation policy targets it.

    The row lock taken first serializes this with a policy being saved against the schedule (which takes a key
    share lock on it), so a policy can never be left pointing at a deleted schedule.
    """
    sid = await require_schedule_id(conn, tenant_id, schedule_id, lock=True)
    names = await policies_targeting(conn, tenant_id, "schedule", sid)
    if names:
        quoted = ", ".join(repr(n) for n in names)
        raise Conflict(f"escalation policies {quoted} page this schedule; remove it from their levels first",
                       details={"field": "schedule_id", "policies": names})
    await conn.execute(text("DELETE FROM oncall_schedules WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"),
                       {"t": tenant_id, "s": sid})
