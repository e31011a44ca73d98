"""What the schedule modules share: checks, look-ups, and loading a schedule for the rotation math.

`load_schedule` is also what the escalation engine uses to find who is on call.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import canonical_uuid, check_aware, parse_clock, parse_uuid
from pulse.errors import NotFound, ValidationError
from pulse.oncall.rotation import Layer, Override, parse_restrictions
from pulse.oncall.schedules.schemas import LoadedSchedule

OVERRIDES_BEFORE = timedelta(days=40)
OVERRIDES_AFTER = timedelta(days=400)

LAYER_COLUMNS = ("layer_id::text, position, name, rotation_type, rotation_hours, rotation_start, handoff_time, "
                 "participants::text[] AS participants, restrictions, starts_at, ends_at, created_at")


# --- checks ----------------------------------------------------------------------------------------------------------

def check_text(value: str, field: str, *, max_len: int = 200, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_len:
        raise ValidationError(f"must be {1 if required else 0}-{max_len} characters", field=field)
    return value


def optional_instant(value: datetime | None, field: str) -> datetime | None:
    """A time with its UTC offset, in UTC; a time without one is refused (it would mean a different instant
    depending on where it is read)."""
    return None if value is None else instant(value, field)


def instant(value: datetime, field: str) -> datetime:
    """Like `optional_instant`, for a time that must be given."""
    return check_aware(value, field).astimezone(UTC)


def as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def parse_handoff_time(value: str) -> time:
    """A handoff time "HH:MM" (24-hour, the schedule's local time) as a time."""
    at = parse_clock(value)
    if at is None:
        raise ValidationError('must be "HH:MM" (24-hour)', field="handoff_time")
    return at


# --- look-ups --------------------------------------------------------------------------------------------------------

async def users_by_id(conn: AsyncConnection, tenant_id: str, user_ids: Iterable[str]) -> dict[str, Any]:
    """The tenant's users among `user_ids` (active or not), by id."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = (await conn.execute(text(
        "SELECT user_id::text, email, display_name, is_active FROM users "
        "WHERE tenant_id = :t AND user_id = ANY(CAST(:ids AS uuid[]))"), {"t": tenant_id, "ids": ids})).all()
    return {r.user_id: r for r in rows}


async def require_schedule_id(conn: AsyncConnection, tenant_id: str, schedule_id: str, *, lock: bool = False) -> str:
    """The schedule's canonical id; 404 when the tenant has no such schedule. With `lock`, the schedule row is
    locked first (its layers' positions change under it, and deleting it must wait for policies saved meanwhile)."""
    sid = parse_uuid(schedule_id, "schedule_id")
    found = (await conn.execute(text(
        "SELECT 1 FROM oncall_schedules WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"
        + (" FOR UPDATE" if lock else "")), {"t": tenant_id, "s": sid})).first()
    if found is None:
        raise NotFound(f"schedule {schedule_id} not found", details={"field": "schedule_id"})
    return sid


async def touch_schedule(conn: AsyncConnection, tenant_id: str, sid: str, now: datetime) -> None:
    """Mark the schedule changed (a layer of it was)."""
    await conn.execute(text(
        "UPDATE oncall_schedules SET updated_at = :now WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"),
        {"t": tenant_id, "s": sid, "now": now})


# --- loading for the rotation math -----------------------------------------------------------------------------------

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
    sid = canonical_uuid(schedule_id)
    if sid is None:
        return None
    row = (await conn.execute(text(
        "SELECT schedule_id::text, name, timezone FROM oncall_schedules "
        "WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid)"), {"t": tenant_id, "s": sid})).first()
    if row is None:
        return None
    layers = (await conn.execute(text(
        f"SELECT {LAYER_COLUMNS} FROM oncall_layers WHERE tenant_id = :t AND schedule_id = CAST(:s AS uuid) "
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


async def require_loaded(conn: AsyncConnection, tenant_id: str, schedule_id: str,
                         around: datetime) -> LoadedSchedule:
    """The schedule loaded around `around` (see `load_schedule`), or NotFound."""
    loaded = await load_schedule(conn, tenant_id, parse_uuid(schedule_id, "schedule_id"), around=around)
    if loaded is None:
        raise NotFound(f"schedule {schedule_id} not found", details={"field": "schedule_id"})
    return loaded
