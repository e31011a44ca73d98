"""Who is on call: now (with why and until when), a schedule's timeline, and a person's upcoming shifts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import is_whole_number, parse_uuid
from pulse.errors import NotFound, ValidationError
from pulse.oncall.rotation import Shift, final_timeline, on_call_at, upcoming_shifts
from pulse.oncall.schedules.common import as_utc, instant, load_schedule, require_loaded, users_by_id
from pulse.oncall.schedules.schemas import OnCallNow, OnCallPerson, Timeline, TimelineShift, UserShift, UserShifts

MAX_DAYS = 90
"""The longest window a timeline or a person's shift list covers."""


def _shift_fields(shift: Shift, people: dict[str, Any]) -> dict[str, Any]:
    person = people.get(shift.user_id)
    return {"user_id": shift.user_id, "user_email": person.email if person else None,
            "user_name": person.display_name if person else None, "source": shift.source,
            "layer_id": shift.layer_id, "layer_name": shift.layer_name, "override_id": shift.override_id,
            "reason": shift.reason}


async def who_is_on_call(conn: AsyncConnection, tenant_id: str, schedule_id: str, now: datetime) -> OnCallNow:
    """Who the schedule pages at `now`, why, and from when until when."""
    at = instant(now, "at")
    loaded = await require_loaded(conn, tenant_id, schedule_id, at)
    shift = on_call_at(loaded.layers, loaded.overrides, loaded.timezone, at)
    person = None
    if shift is not None:
        fields = _shift_fields(shift, await users_by_id(conn, tenant_id, [shift.user_id]))
        person = OnCallPerson(**fields, since=as_utc(shift.starts_at), until=as_utc(shift.ends_at))
    return OnCallNow(schedule_id=loaded.schedule_id, schedule_name=loaded.name, timezone=loaded.timezone.key,
                     at=at, on_call=person)


def _window(start: datetime, days: int) -> tuple[datetime, datetime]:
    if not is_whole_number(days, 1, MAX_DAYS):
        raise ValidationError(f"must be 1-{MAX_DAYS}", field="days")
    begin = instant(start, "start")
    return begin, begin + timedelta(days=days)


async def timeline(conn: AsyncConnection, tenant_id: str, schedule_id: str, start: datetime,
                   days: int) -> Timeline:
    """The final shifts of a schedule for `days` days from `start` (overrides applied, gaps left out)."""
    begin, end = _window(start, days)
    loaded = await require_loaded(conn, tenant_id, schedule_id, begin)
    shifts = final_timeline(loaded.layers, loaded.overrides, loaded.timezone, begin, end)
    people = await users_by_id(conn, tenant_id, [s.user_id for s in shifts])
    return Timeline(schedule_id=loaded.schedule_id, schedule_name=loaded.name, timezone=loaded.timezone.key,
                    start=begin, end=end,
                    shifts=[TimelineShift(**_shift_fields(s, people), starts_at=as_utc(s.starts_at),
                                          ends_at=as_utc(s.ends_at)) for s in shifts])


async def user_shifts(conn: AsyncConnection, tenant_id: str, user_id: str, start: datetime, days: int) -> UserShifts:
    """A person's shifts for `days` days from `start` in every schedule of the tenant, overrides applied."""
    begin, end = _window(start, days)
    uid = parse_uuid(user_id, "user_id")
    person = (await users_by_id(conn, tenant_id, [uid])).get(uid)
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
            found.append(UserShift(**_shift_fields(s, {uid: person}), starts_at=as_utc(s.starts_at),
                                   ends_at=as_utc(s.ends_at), schedule_id=loaded.schedule_id,
                                   schedule_name=loaded.name, timezone=loaded.timezone.key))
    found.sort(key=lambda s: (s.starts_at, s.schedule_name))
    return UserShifts(user_id=uid, user_email=person.email, user_name=person.display_name, start=begin, end=end,
                      shifts=found)
