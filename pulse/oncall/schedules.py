"""On-call schedules in the database: schedules, their layers and overrides, and who is on call when.

The rotation math lives in `pulse.oncall.rotation` and knows nothing of the database; this module loads a
schedule into its types (`load_schedule`, which the escalation engine also uses), checks and stores changes, and
answers the read models the API shows (who is on call now, a timeline, a person's upcoming shifts) with the
people's emails and names. Services never commit; the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from msgspec import UNSET, UnsetType
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import Conflict, NotFound, ValidationError
from pulse.oncall.rotation import (
    Layer,
    Override,
    Shift,
    check_layer,
    check_timezone,
    final_timeline,
    on_call_at,
    parse_restrictions,
    restrictions_json,
    upcoming_shifts,
)

MAX_DAYS = 90
"""The longest window a timeline or a person's shift list covers."""
MAX_OVERRIDE = timedelta(days=90)
MAX_LAYERS = 10
OVERRIDES_BEFORE = timedelta(days=40)
OVERRIDES_AFTER = timedelta(days=400)
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class LoadedSchedule:
    """A schedule as the rotation math needs it."""

    schedule_id: str
    name: str
    timezone: ZoneInfo
    layers: tuple[Layer, ...]
    overrides: tuple[Override, ...]


# --- what the API shows ----------------------------------------------------------------------------------------------

class Schedule(msgspec.Struct, kw_only=True):
    schedule_id: str
    name: str
    description: str | None
    timezone: str
    handoff_channel_id: str | None
    created_at: datetime
    updated_at: datetime


class ScheduleLayer(msgspec.Struct, kw_only=True):
    """One rotation of a schedule. `handoff_time` is "HH:MM" wall-clock time in the schedule's timezone."""

    layer_id: str
    position: int
    name: str
    rotation_type: str
    rotation_hours: int | None
    rotation_start: date
    handoff_time: str
    participants: list[str]
    restrictions: list[dict[str, Any]]
    starts_at: datetime | None
    ends_at: datetime | None
    created_at: datetime


class ScheduleDetail(Schedule, kw_only=True):
    layers: list[ScheduleLayer]


class ScheduleOverride(msgspec.Struct, kw_only=True):
    override_id: str
    schedule_id: str
    user_id: str
    user_email: str | None
    user_name: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str | None
    created_by: str | None
    created_at: datetime


class OnCallPerson(msgspec.Struct, kw_only=True):
    """Who is on call, why (`source` LAYER or OVERRIDE and `reason`), and for which stretch (`since`, `until`)."""

    user_id: str
    user_email: str | None
    user_name: str | None
    source: str
    layer_id: str | None
    layer_name: str | None
    override_id: str | None
    reason: str
    since: datetime
    until: datetime


class OnCallNow(msgspec.Struct, kw_only=True):
    """`on_call` is null when nobody is on call at `at` (a gap between layers or restrictions)."""

    schedule_id: str
    schedule_name: str
    timezone: str
    at: datetime
    on_call: OnCallPerson | None


class TimelineShift(msgspec.Struct, kw_only=True):
    user_id: str
    user_email: str | None
    user_name: str | None
    source: str
    layer_id: str | None
    layer_name: str | None
    override_id: str | None
    reason: str
    starts_at: datetime
    ends_at: datetime


class Timeline(msgspec.Struct, kw_only=True):
    """The final shifts of [start, end) in order; times are UTC, `timezone` is the schedule's for local display."""

    schedule_id: str
    schedule_name: str
    timezone: str
    start: datetime
    end: datetime
    shifts: list[TimelineShift]


class UserShift(TimelineShift, kw_only=True):
    schedule_id: str
    schedule_name: str
    timezone: str


class UserShifts(msgspec.Struct, kw_only=True):
    """A person's shifts in every schedule of the tenant within [start, end), in time order."""

    user_id: str
    user_email: str
    user_name: str
    start: datetime
    end: datetime
    shifts: list[UserShift]


# --- small checks ----------------------------------------------------------------------------------------------------

def parse_id(value: Any, field: str) -> str:
    """A canonical UUID string, or a 400 naming the field."""
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError):
        raise ValidationError("must be a UUID", field=field) from None


def _check_text(value: str, field: str, *, max_len: int = 200, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_len:
        raise ValidationError(f"must be {1 if required else 0}-{max_len} characters", field=field)
    return value


def _instant(value: datetime | None, field: str) -> datetime | None:
    """A time with its UTC offset, in UTC; a time without one is refused (it would mean a different instant
    depending on where it is read)."""
    return None if value is None else _required_instant(value, field)


def _required_instant(value: datetime, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError("must be an ISO-8601 time with a UTC offset", field=field)
    return value.astimezone(UTC)


def parse_handoff_time(value: str) -> time:
    """A handoff time "HH:MM" (24-hour, the schedule's local time) as a time."""
    m = _HHMM.match(value) if isinstance(value, str) else None
    if not m:
        raise ValidationError('must be "HH:MM" (24-hour)', field="handoff_time")
    return time(int(m.group(1)), int(m.group(2)))


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


async def _unique(conn: AsyncConnection, sql: str, params: dict[str, Any], conflict: Conflict) -> Any:
    """Run one statement in a savepoint; a unique violation (a name taken meanwhile) becomes `conflict`."""
    try:
        async with conn.begin_nested():
            return await conn.execute(text(sql), params)
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == "23505" or "23505" in str(getattr(exc.orig, "pgcode", "")):
            raise conflict from None
        raise


async def _users(conn: AsyncConnection, tenant_id: str, user_ids: Iterable[str]) -> dict[str, Any]:
    """The tenant's users among `user_ids` (active or not), by id."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = (await conn.execute(text(
        "SELECT user_id::text, email, display_name, is_active FROM users "
        "WHERE tenant_id = :t AND user_id = ANY(CAST(:ids AS uuid[]))"), {"t": tenant_id, "ids": ids})).all()
    return {r.user_id: r for r in rows}


# --- loading for the rotation math -----------------------------------------------------------------------------------

_LAYER_COLUMNS = ("layer_id::text, position, name, rotation_type, rotation_hours, rotation_start, handoff_time, "
                  "participants::text[] AS participants, restrictions, starts_at, ends_at, created_at")
_OVERRIDE_COLUMNS = ("o.override_id::text, o.schedule_id::text, o.user_id::text, u.email AS user_email, "
                     "u.display_name AS user_name, o.starts_at, o.ends_at, o.reason, o.created_by, o.created_at")


def _layer(row: Any) -> Layer:
    return Layer(layer_id=row.layer_id, name=row.name, position=row.position, rotation_type=row.rotation_type,
                 rotation_hours=row.rotation_hours, rotation_start=row.rotation_start, handoff_time=row.handoff_time,
                 participants=tuple(row.participants), restrictions=parse_restrictions(row.restrictions),
                 starts_at=row.starts_at, ends_at=row.ends_at)


async def load_schedule(conn: AsyncConnection, tenant_id: str, schedule_id: str, *,
                        around: datetime | None = None) -> LoadedSchedule | None:
    """A schedule with its layers and overrides, or None when the tenant has no such schedule.

    With `around`, only the overrides overlapping [around - 40 days, around + 400 days] are loaded (enough for
    anything asked about a time near `around`); without it, all of them.
    """
    try:
        sid = str(uuid.UUID(str(schedule_id)))
    except ValueError:
        return None
    row = (await conn.execute(text(
        "SELECT schedule_id::text, name, timezone FROM oncall_schedules "
        "WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"), {"t": tenant_id, "s": sid})).first()
    if row is None:
        return None
    layers = (await conn.execute(text(
        f"SELECT {_LAYER_COLUMNS} FROM oncall_layers WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) "
        "ORDER BY position"), {"t": tenant_id, "s": sid})).all()
    window = ""
    params: dict[str, Any] = {"t": tenant_id, "s": sid}
    if around is not None:
        window = "AND ends_at > :lo AND starts_at < :hi "
        params.update(lo=around - OVERRIDES_BEFORE, hi=around + OVERRIDES_AFTER)
    overrides = (await conn.execute(text(
        "SELECT override_id::text, user_id::text, starts_at, ends_at, reason, created_at FROM oncall_overrides "
        f"WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) {window}ORDER BY starts_at, created_at"),
        params)).all()
    return LoadedSchedule(
        schedule_id=row.schedule_id, name=row.name, timezone=ZoneInfo(row.timezone),
        layers=tuple(_layer(r) for r in layers),
        overrides=tuple(Override(override_id=o.override_id, user_id=o.user_id, starts_at=o.starts_at,
                                 ends_at=o.ends_at, reason=o.reason, created_at=o.created_at) for o in overrides))


async def _require_loaded(conn: AsyncConnection, tenant_id: str, schedule_id: str,
                          around: datetime) -> LoadedSchedule:
    loaded = await load_schedule(conn, tenant_id, parse_id(schedule_id, "schedule_id"), around=around)
    if loaded is None:
        raise NotFound(f"schedule {schedule_id} not found", details={"field": "schedule_id"})
    return loaded


# --- schedules -------------------------------------------------------------------------------------------------------

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
    sid = parse_id(schedule_id, "schedule_id")
    row = (await conn.execute(text(
        f"SELECT {_SCHEDULE_COLUMNS} FROM oncall_schedules WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"),
        {"t": tenant_id, "s": sid})).first()
    if row is None:
        return None
    layers = (await conn.execute(text(
        f"SELECT {_LAYER_COLUMNS} FROM oncall_layers WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) "
        "ORDER BY position"), {"t": tenant_id, "s": sid})).all()
    return ScheduleDetail(**msgspec.structs.asdict(_schedule(row)), layers=[_schedule_layer(r) for r in layers])


async def require_schedule(conn: AsyncConnection, tenant_id: str, schedule_id: str) -> ScheduleDetail:
    found = await get_schedule(conn, tenant_id, schedule_id)
    if found is None:
        raise NotFound(f"schedule {schedule_id} not found", details={"field": "schedule_id"})
    return found


async def _lock_schedule(conn: AsyncConnection, tenant_id: str, schedule_id: str) -> str:
    """Lock a schedule row (layer positions change under it) and return its canonical id; 404 when missing."""
    sid = parse_id(schedule_id, "schedule_id")
    found = (await conn.execute(text(
        "SELECT 1 FROM oncall_schedules WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) FOR UPDATE"),
        {"t": tenant_id, "s": sid})).first()
    if found is None:
        raise NotFound(f"schedule {schedule_id} not found", details={"field": "schedule_id"})
    return sid


async def _check_channel(conn: AsyncConnection, tenant_id: str, channel_id: str | None) -> str | None:
    if channel_id is None:
        return None
    cid = parse_id(channel_id, "handoff_channel_id")
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
    _check_text(name, "name")
    if description is not None:
        _check_text(description, "description", max_len=2000, required=False)
    check_timezone(timezone)
    channel = await _check_channel(conn, tenant_id, handoff_channel_id)
    result = await _unique(conn, (
        "INSERT INTO oncall_schedules (tenant_id, name, description, timezone, handoff_channel_id, created_at, "
        "  updated_at) VALUES (:t, :n, :d, :tz, CAST(:c AS uuid), :now, :now) RETURNING schedule_id::text"),
        {"t": tenant_id, "n": name, "d": description, "tz": timezone, "c": channel, "now": now}, _name_taken(name))
    return str(result.scalar_one())


async def update_schedule(conn: AsyncConnection, tenant_id: str, schedule_id: str, *, now: datetime,
                          name: str | UnsetType = UNSET, description: str | UnsetType | None = UNSET,
                          timezone: str | UnsetType = UNSET,
                          handoff_channel_id: str | UnsetType | None = UNSET) -> None:
    """Change what is given (an argument left out keeps its value)."""
    sid = await _lock_schedule(conn, tenant_id, schedule_id)
    sets, params = ["updated_at = :now"], {"t": tenant_id, "s": sid, "now": now}
    if not isinstance(name, UnsetType):
        sets.append("name = :n")
        params["n"] = _check_text(name, "name")
    if not isinstance(description, UnsetType):
        if description is not None:
            _check_text(description, "description", max_len=2000, required=False)
        sets.append("description = :d")
        params["d"] = description
    if not isinstance(timezone, UnsetType):
        check_timezone(timezone)
        sets.append("timezone = :tz")
        params["tz"] = timezone
    if not isinstance(handoff_channel_id, UnsetType):
        sets.append("handoff_channel_id = CAST(:c AS uuid)")
        params["c"] = await _check_channel(conn, tenant_id, handoff_channel_id)
    await _unique(conn, f"UPDATE oncall_schedules SET {', '.join(sets)} "
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
    sid = await _lock_schedule(conn, tenant_id, schedule_id)
    names = await policies_targeting(conn, tenant_id, "schedule", sid)
    if names:
        quoted = ", ".join(repr(n) for n in names)
        raise Conflict(f"escalation policies {quoted} page this schedule; remove it from their levels first",
                       details={"field": "schedule_id", "policies": names})
    await conn.execute(text("DELETE FROM oncall_schedules WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"),
                       {"t": tenant_id, "s": sid})


# --- layers ----------------------------------------------------------------------------------------------------------

_LAYER_FIELDS = ("name", "rotation_type", "rotation_hours", "rotation_start", "handoff_time", "participants",
                 "restrictions", "starts_at", "ends_at")


async def _check_participants(conn: AsyncConnection, tenant_id: str, participants: Sequence[str]) -> list[str]:
    """The participants as canonical ids; each must be a user of the tenant (active or not)."""
    ids = [parse_id(p, f"participants[{i}]") for i, p in enumerate(participants)]
    known = await _users(conn, tenant_id, ids)
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
                  restrictions=restrictions, starts_at=_instant(fields["starts_at"], "starts_at"),
                  ends_at=_instant(fields["ends_at"], "ends_at"))
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
    if not isinstance(position, int) or isinstance(position, bool) or not 1 <= position <= highest:
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
    sid = await _lock_schedule(conn, tenant_id, schedule_id)
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
    await _touch(conn, tenant_id, sid, now)
    return layer_id


async def _touch(conn: AsyncConnection, tenant_id: str, sid: str, now: datetime) -> None:
    await conn.execute(text(
        "UPDATE oncall_schedules SET updated_at = :now WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"),
        {"t": tenant_id, "s": sid, "now": now})


async def _require_layer_row(conn: AsyncConnection, tenant_id: str, sid: str, layer_id: str) -> Any:
    lid = parse_id(layer_id, "layer_id")
    row = (await conn.execute(text(
        f"SELECT {_LAYER_COLUMNS} FROM oncall_layers "
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
    sid = await _lock_schedule(conn, tenant_id, schedule_id)
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
    await _touch(conn, tenant_id, sid, now)


async def delete_layer(conn: AsyncConnection, tenant_id: str, schedule_id: str, layer_id: str, *,
                       now: datetime) -> None:
    """Remove a layer; the layers after it move up one position."""
    sid = await _lock_schedule(conn, tenant_id, schedule_id)
    row = await _require_layer_row(conn, tenant_id, sid, layer_id)
    await conn.execute(text("DELETE FROM oncall_layers WHERE tenant_id = :t AND layer_id = CAST(:l AS uuid)"),
                       {"t": tenant_id, "l": row.layer_id})
    await _place(conn, tenant_id, sid, None, None)
    await _touch(conn, tenant_id, sid, now)


# --- overrides -------------------------------------------------------------------------------------------------------

def _override(row: Any) -> ScheduleOverride:
    return ScheduleOverride(
        override_id=row.override_id, schedule_id=row.schedule_id, user_id=row.user_id, user_email=row.user_email,
        user_name=row.user_name, starts_at=row.starts_at, ends_at=row.ends_at, reason=row.reason,
        created_by=row.created_by, created_at=row.created_at)


async def list_overrides(conn: AsyncConnection, tenant_id: str, schedule_id: str, *, start: datetime | None = None,
                         end: datetime | None = None) -> list[ScheduleOverride]:
    """A schedule's overrides overlapping [start, end) (either bound may be open), in start order."""
    sid = await _existing_schedule(conn, tenant_id, schedule_id)
    start, end = _instant(start, "from"), _instant(end, "to")
    if start is not None and end is not None and end <= start:
        raise ValidationError("must be after from", field="to")
    rows = (await conn.execute(text(
        f"SELECT {_OVERRIDE_COLUMNS} FROM oncall_overrides o LEFT JOIN users u ON u.user_id = o.user_id "
        "WHERE o.tenant_id = :t AND o.schedule_id = CAST(:s AS uuid) "
        "  AND (CAST(:lo AS timestamptz) IS NULL OR o.ends_at > :lo) "
        "  AND (CAST(:hi AS timestamptz) IS NULL OR o.starts_at < :hi) "
        "ORDER BY o.starts_at, o.created_at"), {"t": tenant_id, "s": sid, "lo": start, "hi": end})).all()
    return [_override(r) for r in rows]


async def _existing_schedule(conn: AsyncConnection, tenant_id: str, schedule_id: str) -> str:
    sid = parse_id(schedule_id, "schedule_id")
    found = (await conn.execute(text(
        "SELECT 1 FROM oncall_schedules WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"),
        {"t": tenant_id, "s": sid})).first()
    if found is None:
        raise NotFound(f"schedule {schedule_id} not found", details={"field": "schedule_id"})
    return sid


async def require_override(conn: AsyncConnection, tenant_id: str, schedule_id: str,
                           override_id: str) -> ScheduleOverride:
    sid = parse_id(schedule_id, "schedule_id")
    oid = parse_id(override_id, "override_id")
    row = (await conn.execute(text(
        f"SELECT {_OVERRIDE_COLUMNS} FROM oncall_overrides o LEFT JOIN users u ON u.user_id = o.user_id "
        "WHERE o.tenant_id = :t AND o.schedule_id = CAST(:s AS uuid) AND o.override_id = CAST(:o AS uuid)"),
        {"t": tenant_id, "s": sid, "o": oid})).first()
    if row is None:
        raise NotFound(f"override {override_id} not found in this schedule", details={"field": "override_id"})
    return _override(row)


async def create_override(conn: AsyncConnection, tenant_id: str, schedule_id: str, *, user_id: str,
                          starts_at: datetime, ends_at: datetime, created_by: str | None, now: datetime,
                          reason: str | None = None) -> str:
    """Put `user_id` on call for [starts_at, ends_at) over every layer (at most 90 days).

    Overlapping overrides are allowed; where they overlap, the one created last wins. The user must be an
    active member of the tenant: an override for a deactivated user would page nobody.
    """
    sid = await _existing_schedule(conn, tenant_id, schedule_id)
    uid = parse_id(user_id, "user_id")
    starts, ends = _required_instant(starts_at, "starts_at"), _required_instant(ends_at, "ends_at")
    if ends <= starts:
        raise ValidationError("must be after starts_at", field="ends_at")
    if ends - starts > MAX_OVERRIDE:
        raise ValidationError("an override lasts at most 90 days", field="ends_at")
    if reason is not None:
        _check_text(reason, "reason", max_len=500, required=False)
    user = (await _users(conn, tenant_id, [uid])).get(uid)
    if user is None:
        raise ValidationError(f"no user {user_id} in this tenant", field="user_id")
    if not user.is_active:
        raise ValidationError("this user is deactivated and cannot be put on call", field="user_id")
    return str((await conn.execute(text(
        "INSERT INTO oncall_overrides (tenant_id, schedule_id, user_id, starts_at, ends_at, reason, created_by, "
        "  created_at) VALUES (:t, CAST(:s AS uuid), CAST(:u AS uuid), :a, :b, :r, :by, :now) "
        "RETURNING override_id::text"),
        {"t": tenant_id, "s": sid, "u": uid, "a": starts, "b": ends, "r": reason, "by": created_by,
         "now": now})).scalar_one())


async def delete_override(conn: AsyncConnection, tenant_id: str, schedule_id: str, override_id: str) -> None:
    sid = parse_id(schedule_id, "schedule_id")
    oid = parse_id(override_id, "override_id")
    gone = await conn.execute(text(
        "DELETE FROM oncall_overrides WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) "
        "AND override_id = CAST(:o AS uuid)"), {"t": tenant_id, "s": sid, "o": oid})
    if gone.rowcount == 0:
        raise NotFound(f"override {override_id} not found in this schedule", details={"field": "override_id"})


# --- who is on call --------------------------------------------------------------------------------------------------

def _shift_fields(shift: Shift, people: dict[str, Any]) -> dict[str, Any]:
    person = people.get(shift.user_id)
    return {"user_id": shift.user_id, "user_email": person.email if person else None,
            "user_name": person.display_name if person else None, "source": shift.source,
            "layer_id": shift.layer_id, "layer_name": shift.layer_name, "override_id": shift.override_id,
            "reason": shift.reason}


async def who_is_on_call(conn: AsyncConnection, tenant_id: str, schedule_id: str, now: datetime) -> OnCallNow:
    """Who the schedule pages at `now`, why, and from when until when."""
    at = _required_instant(now, "at")
    loaded = await _require_loaded(conn, tenant_id, schedule_id, at)
    shift = on_call_at(loaded.layers, loaded.overrides, loaded.timezone, at)
    person = None
    if shift is not None:
        fields = _shift_fields(shift, await _users(conn, tenant_id, [shift.user_id]))
        person = OnCallPerson(**fields, since=_utc(shift.starts_at), until=_utc(shift.ends_at))
    return OnCallNow(schedule_id=loaded.schedule_id, schedule_name=loaded.name, timezone=loaded.timezone.key,
                     at=at, on_call=person)


def _window(start: datetime, days: int) -> tuple[datetime, datetime]:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"must be 1-{MAX_DAYS}", field="days")
    begin = _required_instant(start, "start")
    return begin, begin + timedelta(days=days)


async def timeline(conn: AsyncConnection, tenant_id: str, schedule_id: str, start: datetime,
                   days: int) -> Timeline:
    """The final shifts of a schedule for `days` days from `start` (overrides applied, gaps left out)."""
    begin, end = _window(start, days)
    loaded = await _require_loaded(conn, tenant_id, schedule_id, begin)
    shifts = final_timeline(loaded.layers, loaded.overrides, loaded.timezone, begin, end)
    people = await _users(conn, tenant_id, [s.user_id for s in shifts])
    return Timeline(schedule_id=loaded.schedule_id, schedule_name=loaded.name, timezone=loaded.timezone.key,
                    start=begin, end=end,
                    shifts=[TimelineShift(**_shift_fields(s, people), starts_at=_utc(s.starts_at),
                                          ends_at=_utc(s.ends_at)) for s in shifts])


async def user_shifts(conn: AsyncConnection, tenant_id: str, user_id: str, start: datetime, days: int) -> UserShifts:
    """A person's shifts for `days` days from `start` in every schedule of the tenant, overrides applied."""
    begin, end = _window(start, days)
    uid = parse_id(user_id, "user_id")
    person = (await _users(conn, tenant_id, [uid])).get(uid)
    if person is None:
        raise NotFound(f"user {user_id} not found", details={"field": "user_id"})
    ids = (await conn.execute(text("SELECT schedule_id::text FROM oncall_schedules WHERE tenant_id = :t "
                                   "ORDER BY name"), {"t": tenant_id})).scalars().all()
    found: list[UserShift] = []
    for sid in ids:
        loaded = await load_schedule(conn, tenant_id, sid, around=begin)
        if loaded is None:
            continue
        for s in upcoming_shifts(loaded.layers, loaded.overrides, loaded.timezone, uid, begin, end):
            found.append(UserShift(**_shift_fields(s, {uid: person}), starts_at=_utc(s.starts_at),
                                   ends_at=_utc(s.ends_at), schedule_id=loaded.schedule_id,
                                   schedule_name=loaded.name, timezone=loaded.timezone.key))
    found.sort(key=lambda s: (s.starts_at, s.schedule_name))
    return UserShifts(user_id=uid, user_email=person.email, user_name=person.display_name, start=begin, end=end,
                      shifts=found)
