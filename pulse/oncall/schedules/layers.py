"""A schedule's layers (rotations): add, change, move and remove them, keeping positions 1..N."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import is_whole_number, parse_uuid
from pulse.errors import NotFound, ValidationError
from pulse.oncall.rotation import Layer, check_layer, parse_restrictions, restrictions_json
from pulse.oncall.schedules.common import (
    LAYER_COLUMNS,
    optional_instant,
    parse_handoff_time,
    require_schedule_id,
    touch_schedule,
    users_by_id,
)

MAX_LAYERS = 10
_LAYER_FIELDS = ("name", "rotation_type", "rotation_hours", "rotation_start", "handoff_time", "participants",
                 "restrictions", "starts_at", "ends_at")


async def _check_participants(conn: AsyncConnection, tenant_id: str, participants: Sequence[str]) -> list[str]:
    """The participants as canonical ids; each must be a user of the tenant (active or not)."""
    ids = [parse_uuid(p, f"participants[{i}]") for i, p in enumerate(participants)]
    known = await users_by_id(conn, tenant_id, ids)
    for i, user_id in enumerate(ids):
        if user_id not in known:
            raise ValidationError(f"no user {user_id} in this tenant", field=f"participants[{i}]")
    return ids


async def _checked_layer(conn: AsyncConnection, tenant_id: str, layer_id: str, position: int,
                         fields: dict[str, Any]) -> tuple[Layer, list[dict[str, Any]]]:
    """The layer these fields describe, checked as a whole (`check_layer`, then the participants against the
    tenant's users); also its restrictions as stored."""
    handoff = fields["handoff_time"]
    handoff = handoff if isinstance(handoff, time) else parse_handoff_time(handoff)
    restrictions = parse_restrictions(fields["restrictions"])
    participants = fields["participants"]
    layer = Layer(layer_id=layer_id, name=fields["name"], position=position, rotation_type=fields["rotation_type"],
                  rotation_hours=fields["rotation_hours"], rotation_start=fields["rotation_start"],
                  handoff_time=handoff,
                  participants=tuple(participants) if isinstance(participants, list | tuple) else participants,
                  restrictions=restrictions, starts_at=optional_instant(fields["starts_at"], "starts_at"),
                  ends_at=optional_instant(fields["ends_at"], "ends_at"))
    check_layer(layer)
    ids = await _check_participants(conn, tenant_id, layer.participants)
    return dataclasses.replace(layer, participants=tuple(ids)), restrictions_json(restrictions)


async def _layer_count(conn: AsyncConnection, tenant_id: str, sid: str) -> int:
    return int((await conn.execute(text(
        "SELECT count(*) FROM oncall_layers WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"),
        {"t": tenant_id, "s": sid})).scalar_one())


async def _place(conn: AsyncConnection, tenant_id: str, sid: str, layer_id: str | None, position: int | None) -> None:
    """Renumber the schedule's layers 1..N in their order, with `layer_id` moved to `position` when given.

    Positions are unique per schedule and checked row by row, so every layer first steps aside to a negative
    position before taking its final one.
    """
    order = list((await conn.execute(text(
        "SELECT layer_id::text FROM oncall_layers WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) "
        "ORDER BY position"), {"t": tenant_id, "s": sid})).scalars())
    if layer_id is not None and position is not None:
        order.remove(layer_id)
        order.insert(position - 1, layer_id)
    await conn.execute(text(
        "UPDATE oncall_layers SET position = -position WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"),
        {"t": tenant_id, "s": sid})
    await conn.execute(text(
        "UPDATE oncall_layers l SET position = o.n FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS o(id, n) "
        "WHERE l.layer_id = o.id AND l.tenant_id = :t"), {"t": tenant_id, "ids": order})


def _check_position(position: Any, highest: int) -> int:
    if not is_whole_number(position, 1, highest):
        raise ValidationError(f"must be 1-{highest}", field="position")
    return position


async def create_layer(conn: AsyncConnection, tenant_id: str, schedule_id: str, *, name: str, rotation_type: str,
                       rotation_start: date, participants: Sequence[str], handoff_time: str | time = "09:00",
                       rotation_hours: int | None = None, restrictions: Any = None,
                       starts_at: datetime | None = None, ends_at: datetime | None = None,
                       position: int | None = None, now: datetime) -> str:
    """Add a layer: last by default, or at `position` (1 = first), the layers from there on moving down one.

    Participants are users of the tenant (deactivated ones may stay in a rotation; they are simply not paged).
    """
    sid = await require_schedule_id(conn, tenant_id, schedule_id, lock=True)
    count = await _layer_count(conn, tenant_id, sid)
    if count >= MAX_LAYERS:
        raise ValidationError(f"a schedule has at most {MAX_LAYERS} layers", field="layers")
    if position is not None:
        _check_position(position, count + 1)
    layer_id = str(uuid.uuid4())
    layer, stored = await _checked_layer(conn, tenant_id, layer_id, count + 1, {
        "name": name, "rotation_type": rotation_type, "rotation_hours": rotation_hours,
        "rotation_start": rotation_start, "handoff_time": handoff_time, "participants": participants,
        "restrictions": restrictions, "starts_at": starts_at, "ends_at": ends_at})
    await conn.execute(text(
        "INSERT INTO oncall_layers (layer_id, tenant_id, schedule_id, position, name, rotation_type, rotation_hours, "
        "  rotation_start, handoff_time, participants, restrictions, starts_at, ends_at, created_at) "
        "VALUES (CAST(:l AS uuid), :t, CAST(:s AS uuid), :pos, :n, :rt, :rh, :rs, :ht, CAST(:p AS uuid[]), "
        "  CAST(:r AS jsonb), :sa, :ea, :now)"),
        {"l": layer_id, "t": tenant_id, "s": sid, "pos": count + 1, "n": layer.name, "rt": layer.rotation_type,
         "rh": layer.rotation_hours, "rs": layer.rotation_start, "ht": layer.handoff_time,
         "p": list(layer.participants), "r": json.dumps(stored), "sa": layer.starts_at, "ea": layer.ends_at,
         "now": now})
    if position is not None and position != count + 1:
        await _place(conn, tenant_id, sid, layer_id, position)
    await touch_schedule(conn, tenant_id, sid, now)
    return layer_id


async def _require_layer_row(conn: AsyncConnection, tenant_id: str, sid: str, layer_id: str) -> Any:
    lid = parse_uuid(layer_id, "layer_id")
    row = (await conn.execute(text(
        f"SELECT {LAYER_COLUMNS} FROM oncall_layers "
        "WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) AND layer_id = CAST(:l AS uuid)"),
        {"t": tenant_id, "s": sid, "l": lid})).first()
    if row is None:
        raise NotFound(f"layer {layer_id} not found in this schedule", details={"field": "layer_id"})
    return row


async def update_layer(conn: AsyncConnection, tenant_id: str, schedule_id: str, layer_id: str,
                       changes: dict[str, Any], *, now: datetime) -> None:
    """Change the given fields of a layer (`position` moves it, the others shifting); checked as a whole again."""
    unknown = set(changes) - {*_LAYER_FIELDS, "position"}
    if unknown:
        raise ValidationError("unknown field", field=sorted(unknown)[0])
    sid = await require_schedule_id(conn, tenant_id, schedule_id, lock=True)
    row = await _require_layer_row(conn, tenant_id, sid, layer_id)
    fields = {f: getattr(row, f) for f in _LAYER_FIELDS}
    fields["restrictions"] = list(row.restrictions)
    fields.update({k: v for k, v in changes.items() if k != "position"})
    if "rotation_type" in changes and changes["rotation_type"] != "CUSTOM" and "rotation_hours" not in changes:
        fields["rotation_hours"] = None  # hours belong to CUSTOM rotations only
    layer, stored = await _checked_layer(conn, tenant_id, row.layer_id, row.position, fields)
    await conn.execute(text(
        "UPDATE oncall_layers SET name = :n, rotation_type = :rt, rotation_hours = :rh, rotation_start = :rs, "
        "  handoff_time = :ht, participants = CAST(:p AS uuid[]), restrictions = CAST(:r AS jsonb), "
        "  starts_at = :sa, ends_at = :ea WHERE tenant_id = :t AND layer_id = CAST(:l AS uuid)"),
        {"l": row.layer_id, "t": tenant_id, "n": layer.name, "rt": layer.rotation_type, "rh": layer.rotation_hours,
         "rs": layer.rotation_start, "ht": layer.handoff_time, "p": list(layer.participants),
         "r": json.dumps(stored), "sa": layer.starts_at, "ea": layer.ends_at})
    if changes.get("position") is not None:
        position = _check_position(changes["position"], await _layer_count(conn, tenant_id, sid))
        if position != row.position:
            await _place(conn, tenant_id, sid, row.layer_id, position)
    await touch_schedule(conn, tenant_id, sid, now)


async def delete_layer(conn: AsyncConnection, tenant_id: str, schedule_id: str, layer_id: str, *,
                       now: datetime) -> None:
    """Remove a layer; the layers after it move up one position."""
    sid = await require_schedule_id(conn, tenant_id, schedule_id, lock=True)
    row = await _require_layer_row(conn, tenant_id, sid, layer_id)
    await conn.execute(text("DELETE FROM oncall_layers WHERE tenant_id = :t AND layer_id = CAST(:l AS uuid)"),
                       {"t": tenant_id, "l": row.layer_id})
    await _place(conn, tenant_id, sid, None, None)
    await touch_schedule(conn, tenant_id, sid, now)
