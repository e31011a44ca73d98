"""On-call rotation math: who a schedule's layers and overrides put on call when, in the schedule's time zone.

Pure functions over plain data (no database, no clock): handoffs are computed in the schedule's local wall-clock
time and converted to UTC; restriction windows are wall-clock spans; the final timeline stacks layers by position
with overrides on top. docs/schedules.md ("Rotation semantics") describes the rules for operators.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from pulse.checks import check_aware, check_range, is_whole_number, parse_clock
from pulse.errors import ValidationError

ROTATION_TYPES = ("DAILY", "WEEKLY", "CUSTOM")
MAX_ROTATION_HOURS = 8760
MAX_PARTICIPANTS = 100
MAX_LAYER_NAME = 200
MAX_RESTRICTIONS = 28
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_SETTLE = timedelta(days=2)
"""Wall-clock distance beyond which two local times are in the same order in UTC (offsets span at most 26 h)."""


@dataclass(frozen=True)
class Restriction:
    """A window in which a layer is in effect: starting on each of `days` (ISO weekday 1=Mon..7=Sun) at local `start`,
    ending at local `end`; end <= start means the window runs past midnight into the next day (end == start: 24 h)."""

    days: tuple[int, ...]
    start: time
    end: time


@dataclass(frozen=True)
class Layer:
    """One rotation of a schedule; a higher `position` overrides lower ones wherever it has someone on call."""

    layer_id: str
    name: str
    position: int
    rotation_type: str            # "DAILY" | "WEEKLY" | "CUSTOM"
    rotation_hours: int | None    # CUSTOM only: shift length in hours
    rotation_start: date          # local date of the first handoff
    handoff_time: time            # local wall-clock time of every handoff
    participants: tuple[str, ...]  # user ids in rotation order (may repeat a user)
    restrictions: tuple[Restriction, ...] = ()   # empty: in effect all the time
    starts_at: datetime | None = None            # aware; layer in effect only from here
    ends_at: datetime | None = None              # aware; and until here


@dataclass(frozen=True)
class Override:
    """Someone on call instead of whatever the layers say, from `starts_at` until `ends_at`."""

    override_id: str
    user_id: str
    starts_at: datetime
    ends_at: datetime
    reason: str | None = None
    created_at: datetime | None = None   # among overlapping overrides the most recently created wins


@dataclass(frozen=True)
class Shift:
    """One stretch of someone on call, and why."""

    user_id: str
    starts_at: datetime   # aware, UTC
    ends_at: datetime     # aware, UTC
    source: str           # "LAYER" | "OVERRIDE"
    layer_id: str | None
    layer_name: str | None
    override_id: str | None
    reason: str


# --- validation ------------------------------------------------------------------------------------------------------

def _clock(value: Any, field: str) -> time:
    if isinstance(value, time):
        return value.replace(tzinfo=None, fold=0)
    at = parse_clock(value)
    if at is None:
        raise ValidationError('must be a 24-hour time "HH:MM", e.g. "09:00"', field=field)
    return at


def _days(value: Any, field: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValidationError("must be a non-empty list of ISO weekdays 1 (Monday) to 7 (Sunday)", field=field)
    for day in value:
        if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 7:
            raise ValidationError("weekdays are 1 (Monday) to 7 (Sunday)", field=field)
    if len(set(value)) != len(value):
        raise ValidationError("lists a weekday twice", field=field)
    return tuple(sorted(value))


def parse_restrictions(raw: Any) -> tuple[Restriction, ...]:
    """Restrictions from their JSON form `[{"days": [1, 2, 3, 4, 5], "start": "09:00", "end": "17:00"}, ...]`.

    None means no restrictions; a JSON text is decoded first. Weekdays come back sorted. Errors name the field,
    e.g. `restrictions[0].start`.
    """
    if raw is None:
        return ()
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValidationError("must be a JSON list of restrictions", field="restrictions") from exc
    if not isinstance(raw, list | tuple):
        raise ValidationError('must be a list of {"days", "start", "end"} windows', field="restrictions")
    if len(raw) > MAX_RESTRICTIONS:
        raise ValidationError(f"at most {MAX_RESTRICTIONS} windows", field="restrictions")
    found = []
    for i, item in enumerate(raw):
        where = f"restrictions[{i}]"
        if isinstance(item, Restriction):
            item = restrictions_json((item,))[0]
        if not isinstance(item, dict):
            raise ValidationError('must be an object {"days", "start", "end"}', field=where)
        for key in item:
            if key not in ("days", "start", "end"):
                raise ValidationError("unknown field; a window has days, start and end", field=f"{where}.{key}")
        for key in ("days", "start", "end"):
            if key not in item:
                raise ValidationError("is required", field=f"{where}.{key}")
        found.append(Restriction(days=_days(item["days"], f"{where}.days"),
                                 start=_clock(item["start"], f"{where}.start"),
                                 end=_clock(item["end"], f"{where}.end")))
    return tuple(found)


def restrictions_json(restrictions: tuple[Restriction, ...]) -> list[dict[str, Any]]:
    """The JSON form of restrictions, as `parse_restrictions` reads it."""
    return [{"days": list(r.days), "start": r.start.strftime("%H:%M"), "end": r.end.strftime("%H:%M")}
            for r in restrictions]


def _aware(value: Any, field: str) -> datetime:
    return check_aware(value, field, "must be a date-time with a UTC offset").astimezone(UTC)


def check_layer(layer: Layer) -> None:
    """Raise ValidationError naming the first field of `layer` that is not acceptable."""
    if not isinstance(layer.name, str) or not layer.name.strip() or len(layer.name) > MAX_LAYER_NAME:
        raise ValidationError(f"must be 1-{MAX_LAYER_NAME} characters", field="name")
    if isinstance(layer.position, bool) or not isinstance(layer.position, int):
        raise ValidationError("must be an integer", field="position")
    if layer.rotation_type not in ROTATION_TYPES:
        raise ValidationError(f"must be one of {', '.join(ROTATION_TYPES)}", field="rotation_type")
    hours = layer.rotation_hours
    if layer.rotation_type == "CUSTOM":
        if hours is None:
            raise ValidationError("is required for a CUSTOM rotation", field="rotation_hours")
        if not is_whole_number(hours, 1, MAX_ROTATION_HOURS):
            raise ValidationError(f"must be 1-{MAX_ROTATION_HOURS} hours", field="rotation_hours")
    elif hours is not None:
        raise ValidationError("is only for CUSTOM rotations; leave it empty", field="rotation_hours")
    if not isinstance(layer.rotation_start, date) or isinstance(layer.rotation_start, datetime):
        raise ValidationError('must be a date "YYYY-MM-DD"', field="rotation_start")
    if not isinstance(layer.handoff_time, time) or layer.handoff_time.tzinfo is not None:
        raise ValidationError('must be a local time "HH:MM"', field="handoff_time")
    if not isinstance(layer.participants, tuple | list) or not 1 <= len(layer.participants) <= MAX_PARTICIPANTS:
        raise ValidationError(f"must list 1-{MAX_PARTICIPANTS} users", field="participants")
    for i, user_id in enumerate(layer.participants):
        if not isinstance(user_id, str) or not user_id:
            raise ValidationError("must be a user id", field=f"participants[{i}]")
    if len(layer.restrictions) > MAX_RESTRICTIONS:
        raise ValidationError(f"at most {MAX_RESTRICTIONS} windows", field="restrictions")
    for i, r in enumerate(layer.restrictions):
        _days(r.days, f"restrictions[{i}].days")
        for key in ("start", "end"):
            value = getattr(r, key)
            if not isinstance(value, time) or value.tzinfo is not None:
                raise ValidationError('must be a local time "HH:MM"', field=f"restrictions[{i}].{key}")
    starts = _aware(layer.starts_at, "starts_at") if layer.starts_at is not None else None
    ends = _aware(layer.ends_at, "ends_at") if layer.ends_at is not None else None
    check_range(starts, ends, start_field="starts_at", end_field="ends_at")


# --- one layer -------------------------------------------------------------------------------------------------------

def _to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """A local wall-clock time as an instant; fold=0 resolves a skipped time with the offset before the change
    (02:30 on a spring-forward day is 03:30 after it) and a repeated time to its first occurrence."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _step(layer: Layer) -> timedelta | None:
    if layer.rotation_type == "DAILY":
        return timedelta(days=1)
    if layer.rotation_type == "WEEKLY":
        return timedelta(days=7)
    hours = layer.rotation_hours
    if layer.rotation_type == "CUSTOM" and isinstance(hours, int) and not isinstance(hours, bool) and hours > 0:
        return timedelta(hours=hours)
    return None


def _rotation(layer: Layer, step: timedelta, tz: ZoneInfo, start: datetime,
              end: datetime) -> Iterator[tuple[int, datetime, datetime]]:
    """(k, from, until) of every non-empty shift of the rotation that overlaps [start, end).

    Handoff k is at local `origin + k * step`. The first shift looked at is found by arithmetic on the local
    wall-clock time of `start`, minus a margin so that DST shifts cannot hide an earlier overlapping shift.
    Handoffs are taken as a running maximum, so a local time that resolves to an earlier instant than the handoff
    before it (possible only around a skipped stretch of local time) makes an empty shift, never an overlap.
    """
    origin = datetime.combine(layer.rotation_start, layer.handoff_time.replace(tzinfo=None, fold=0))
    wall = start.astimezone(tz).replace(tzinfo=None)
    margin = -(-_SETTLE // step) + 1
    k = max(0, (wall - origin) // step - 2 * margin)
    try:
        here = _to_utc(origin + k * step, tz)
    except OverflowError:
        return
    while here < end:
        try:
            following = max(here, _to_utc(origin + (k + 1) * step, tz))
        except OverflowError:
            following = end
        if following > start and following > here:
            yield k, here, following
        here = following
        k += 1


def _windows(restrictions: tuple[Restriction, ...], tz: ZoneInfo, start: datetime,
             end: datetime) -> list[tuple[datetime, datetime]]:
    """The union of the restriction windows that overlap [start, end), clipped to it, sorted and disjoint."""
    spans: list[tuple[datetime, datetime]] = []
    day = start.astimezone(tz).date() - _SETTLE
    last = end.astimezone(tz).date() + timedelta(days=1)
    one = timedelta(days=1)
    while day <= last:
        weekday = day.isoweekday()
        for r in restrictions:
            if weekday not in r.days:
                continue
            begin, until = r.start.replace(tzinfo=None), r.end.replace(tzinfo=None)
            opens = _to_utc(datetime.combine(day, begin), tz)
            closes = _to_utc(datetime.combine(day if until > begin else day + one, until), tz)
            if opens < closes and closes > start and opens < end:
                spans.append((max(opens, start), min(closes, end)))
        day += one
    spans.sort()
    merged: list[tuple[datetime, datetime]] = []
    for opens, closes in spans:
        if merged and opens <= merged[-1][1]:
            if closes > merged[-1][1]:
                merged[-1] = (merged[-1][0], closes)
        else:
            merged.append((opens, closes))
    return merged


def _clock_text(value: time) -> str:
    return value.strftime("%H:%M")


def _layer_reason(layer: Layer, tz: ZoneInfo) -> str:
    zone = getattr(tz, "key", None) or str(tz)
    at = _clock_text(layer.handoff_time)
    if layer.rotation_type == "WEEKLY":
        pace = f"weekly rotation, hands off {WEEKDAYS[layer.rotation_start.weekday()]} {at} {zone}"
    elif layer.rotation_type == "DAILY":
        pace = f"daily rotation, hands off {at} {zone}"
    else:
        hours = layer.rotation_hours or 0
        if 0 < hours < 24 and 24 % hours == 0 and hours >= 4:
            first = datetime.combine(layer.rotation_start, layer.handoff_time)
            times = sorted({(first + timedelta(hours=hours * i)).time() for i in range(24 // hours)})
            pace = f"{hours}-hour rotation, hands off {'/'.join(_clock_text(t) for t in times)} {zone}"
        else:
            pace = f"{hours}-hour rotation from {layer.rotation_start.isoformat()} {at} {zone}"
    if layer.restrictions:
        pace += ", restricted hours"
    return f"layer '{layer.name}' ({pace})"


def _override_reason(override: Override) -> str:
    reason = (override.reason or "").strip()
    return f"override: {reason or 'no reason given'}"


def _window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    return _aware(start, "start"), _aware(end, "end")


def layer_shifts(layer: Layer, tz: ZoneInfo, start: datetime, end: datetime) -> list[Shift]:
    """The layer's own on-call stretches within [start, end): one piece per shift (or per restriction window
    inside a shift), sorted, clipped to [start, end) and to the layer's starts_at/ends_at.

    A layer that cannot rotate (no participants, a CUSTOM layer without hours) has nobody on call.
    """
    start, end = _window(start, end)
    if layer.starts_at is not None:
        start = max(start, _aware(layer.starts_at, "starts_at"))
    if layer.ends_at is not None:
        end = min(end, _aware(layer.ends_at, "ends_at"))
    step = _step(layer)
    if start >= end or step is None or not layer.participants:
        return []
    windows = _windows(layer.restrictions, tz, start, end) if layer.restrictions else [(start, end)]
    if not windows:
        return []
    reason = _layer_reason(layer, tz)
    people = layer.participants
    count = len(people)
    found: list[Shift] = []
    w = 0
    for k, begin, until in _rotation(layer, step, tz, max(start, windows[0][0]), min(end, windows[-1][1])):
        while w < len(windows) and windows[w][1] <= begin:
            w += 1
        v = w
        while v < len(windows) and windows[v][0] < until:
            opens, closes = max(begin, windows[v][0], start), min(until, windows[v][1], end)
            if opens < closes:
                found.append(Shift(user_id=people[k % count], starts_at=opens, ends_at=closes, source="LAYER",
                                   layer_id=layer.layer_id, layer_name=layer.name, override_id=None,
                                   reason=reason))
            v += 1
    return found


# --- the whole schedule ----------------------------------------------------------------------------------------------

def final_timeline(layers: Sequence[Layer], overrides: Sequence[Override], tz: ZoneInfo,
                   start: datetime, end: datetime) -> list[Shift]:
    """Who is on call within [start, end), overrides and layer precedence applied.

    Sorted and non-overlapping; adjacent pieces with the same user and the same layer (or override) are merged;
    left out only where no layer and no override has anyone. Precedence: an override beats every layer, the most
    recently created override (`created_at`, unknown counts as oldest, then `override_id`) beats older ones, and
    a layer with a higher position beats lower ones (equal positions: the later one in `layers`).
    """
    start, end = _window(start, end)
    if start >= end:
        return []
    keys: list[tuple[Any, ...]] = []
    pieces: list[tuple[datetime, datetime, int, Shift]] = []
    for i, layer in enumerate(layers):
        source = len(keys)
        keys.append((0, layer.position, i))
        pieces.extend((s.starts_at, s.ends_at, source, s) for s in layer_shifts(layer, tz, start, end))
    for j, override in enumerate(overrides):
        opens = max(_aware(override.starts_at, f"overrides[{j}].starts_at"), start)
        closes = min(_aware(override.ends_at, f"overrides[{j}].ends_at"), end)
        created = _aware(override.created_at, f"overrides[{j}].created_at") if override.created_at else _EARLIEST
        source = len(keys)
        keys.append((1, created, override.override_id, j))
        if opens < closes:
            pieces.append((opens, closes, source, Shift(
                user_id=override.user_id, starts_at=opens, ends_at=closes, source="OVERRIDE", layer_id=None,
                layer_name=None, override_id=override.override_id, reason=_override_reason(override))))
    if not pieces:
        return []
    rank = [0] * len(keys)
    for r, source in enumerate(sorted(range(len(keys)), key=keys.__getitem__)):
        rank[source] = r
    pieces.sort(key=lambda p: p[0])
    instants = sorted({p[0] for p in pieces} | {p[1] for p in pieces})
    active: list[tuple[int, datetime, int]] = []   # (-rank, until, piece index): the top is the winner
    runs: list[list[Any]] = []                     # [from, until, winning Shift]
    n = 0
    for here, following in pairwise(instants):
        while n < len(pieces) and pieces[n][0] <= here:
            heapq.heappush(active, (-rank[pieces[n][2]], pieces[n][1], n))
            n += 1
        while active and active[0][1] <= here:
            heapq.heappop(active)
        if not active:
            continue
        winner = pieces[active[0][2]][3]
        if runs and runs[-1][1] == here and _same_stretch(runs[-1][2], winner):
            runs[-1][1] = following
        else:
            runs.append([here, following, winner])
    return [Shift(user_id=w.user_id, starts_at=a, ends_at=b, source=w.source, layer_id=w.layer_id,
                  layer_name=w.layer_name, override_id=w.override_id, reason=w.reason) for a, b, w in runs]


def _same_stretch(a: Shift, b: Shift) -> bool:
    return (a.user_id, a.source, a.layer_id, a.override_id) == (b.user_id, b.source, b.layer_id, b.override_id)


def on_call_at(layers: Sequence[Layer], overrides: Sequence[Override], tz: ZoneInfo, at: datetime, *,
               horizon: timedelta = timedelta(days=35)) -> Shift | None:
    """The stretch of the final timeline that contains `at`, or None when nobody is on call then.

    The stretch comes with its full bounds as far as `horizon` reaches each way: it starts no earlier than
    `at - horizon` and ends no later than `at + horizon`.
    """
    at = _aware(at, "at")
    if not isinstance(horizon, timedelta) or horizon <= timedelta(0):
        raise ValidationError("must be a positive duration", field="horizon")
    # Look close first: most stretches are found whole within a couple of days, and any window that contains
    # `at` agrees on who is on call at `at`.
    for reach in (timedelta(days=2), timedelta(days=9), horizon):
        reach = min(reach, horizon)
        lo, hi = at - reach, at + reach
        found = next((s for s in final_timeline(layers, overrides, tz, lo, hi) if s.starts_at <= at < s.ends_at),
                     None)
        if found is None:
            return None
        if reach >= horizon or (found.starts_at > lo and found.ends_at < hi):
            return found
    return None


def upcoming_shifts(layers: Sequence[Layer], overrides: Sequence[Override], tz: ZoneInfo, user_id: str,
                    start: datetime, end: datetime) -> list[Shift]:
    """The user's stretches of the final timeline within [start, end), in order."""
    return [s for s in final_timeline(layers, overrides, tz, start, end) if s.user_id == user_id]
