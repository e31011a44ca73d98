"""What a schedule looks like to the rotation math (LoadedSchedule) and to the API (the read models)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from pulse.oncall.rotation import Layer, Override


@dataclass(frozen=True)
class LoadedSchedule:
    """A schedule as the rotation math needs it."""

    schedule_id: str
    name: str
    timezone: ZoneInfo
    layers: tuple[Layer, ...]
    overrides: tuple[Override, ...]


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


class ShiftAssignment(msgspec.Struct, kw_only=True):
    """Who is on call and why: `source` LAYER (a rotation) or OVERRIDE, and the `reason` shown."""

    user_id: str
    user_email: str | None
    user_name: str | None
    source: str
    layer_id: str | None
    layer_name: str | None
    override_id: str | None
    reason: str


class OnCallPerson(ShiftAssignment, kw_only=True):
    """Who is on call, why (`source` LAYER or OVERRIDE and `reason`), and for which stretch (`since`, `until`)."""

    since: datetime
    until: datetime


class OnCallNow(msgspec.Struct, kw_only=True):
    """`on_call` is null when nobody is on call at `at` (a gap between layers or restrictions)."""

    schedule_id: str
    schedule_name: str
    timezone: str
    at: datetime
    on_call: OnCallPerson | None


class TimelineShift(ShiftAssignment, kw_only=True):
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
