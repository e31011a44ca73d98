"""On-call rotation math: handoffs at local wall-clock time across DST, rotation order, restrictions, layer and
override precedence, the final timeline and who is on call at an instant, checked against a brute-force model."""

from __future__ import annotations

import bisect
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.checks import check_timezone
from pulse.errors import ValidationError
from pulse.oncall.rotation import (
    Layer,
    Override,
    Restriction,
    Shift,
    check_layer,
    final_timeline,
    layer_shifts,
    on_call_at,
    parse_restrictions,
    restrictions_json,
    upcoming_shifts,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]
USERS = ["ann", "bob", "cat", "dan", "eve"]
YEAR = datetime(2026, 1, 1, tzinfo=UTC)
WEEKDAYS = (1, 2, 3, 4, 5)


def at(tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, *, fold: int = 0) -> datetime:
    """A local wall-clock time in `tz` as a UTC instant."""
    return datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold).astimezone(UTC)


def local(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz)


def layer(participants: tuple[str, ...], *, kind: str = "WEEKLY", start: date = date(2026, 3, 2),
          handoff: time = time(9, 0), hours: int | None = None, position: int = 0, layer_id: str = "L1",
          name: str = "Primary", restrictions: tuple[Restriction, ...] = (), starts_at: datetime | None = None,
          ends_at: datetime | None = None) -> Layer:
    return Layer(layer_id=layer_id, name=name, position=position, rotation_type=kind, rotation_hours=hours,
                 rotation_start=start, handoff_time=handoff, participants=participants, restrictions=restrictions,
                 starts_at=starts_at, ends_at=ends_at)


def users(shifts: list[Shift]) -> list[str]:
    return [s.user_id for s in shifts]


# --- a brute-force model of the rules, independent of the implementation ---------------------------------------------

def model_handoffs(lay: Layer, tz: ZoneInfo, until: datetime) -> list[datetime]:
    """Every handoff instant from handoff 0 up to the first one past `until`, counted one by one."""
    found: list[datetime] = []
    k = 0
    while True:
        if lay.rotation_type == "CUSTOM":
            assert lay.rotation_hours is not None
            wall = datetime.combine(lay.rotation_start, lay.handoff_time) + timedelta(hours=k * lay.rotation_hours)
        else:
            days = 1 if lay.rotation_type == "DAILY" else 7
            wall = datetime.combine(lay.rotation_start + timedelta(days=k * days), lay.handoff_time)
        instant = wall.replace(tzinfo=tz).astimezone(UTC)
        found.append(instant)
        if instant > until:
            return found
        k += 1


def model_in_window(lay: Layer, tz: ZoneInfo, t: datetime) -> bool:
    if not lay.restrictions:
        return True
    today = t.astimezone(tz).date()
    for back in (2, 1, 0):
        day = today - timedelta(days=back)
        for r in lay.restrictions:
            if day.isoweekday() not in r.days:
                continue
            opens = datetime.combine(day, r.start).replace(tzinfo=tz).astimezone(UTC)
            end_day = day if r.end > r.start else day + timedelta(days=1)
            closes = datetime.combine(end_day, r.end).replace(tzinfo=tz).astimezone(UTC)
            if opens <= t < closes:
                return True
    return False


def model_layer_user(lay: Layer, tz: ZoneInfo, handoffs: list[datetime], t: datetime) -> str | None:
    if (lay.starts_at is not None and t < lay.starts_at) or (lay.ends_at is not None and t >= lay.ends_at):
        return None
    k = bisect.bisect_right(handoffs, t) - 1   # the last handoff at or before t
    if k < 0 or not model_in_window(lay, tz, t):
        return None
    return lay.participants[k % len(lay.participants)]


def model_on_call(layers: list[Layer], overrides: list[Override], tz: ZoneInfo, handoffs: list[list[datetime]],
                  t: datetime) -> tuple[str, str, str] | None:
    """(user, "LAYER"/"OVERRIDE", layer or override id) by the precedence rules, or None."""
    live = [o for o in overrides if o.starts_at <= t < o.ends_at]
    if live:
        newest = max(live, key=lambda o: (o.created_at or datetime.min.replace(tzinfo=UTC), o.override_id))
        return newest.user_id, "OVERRIDE", newest.override_id
    ranked = sorted(range(len(layers)), key=lambda i: (layers[i].position, i), reverse=True)
    for i in ranked:
        user = model_layer_user(layers[i], tz, handoffs[i], t)
        if user is not None:
            return user, "LAYER", layers[i].layer_id
    return None


def assert_well_formed(timeline: list[Shift], start: datetime, end: datetime) -> None:
    for piece in timeline:
        assert start <= piece.starts_at < piece.ends_at <= end
        assert piece.starts_at.utcoffset() == timedelta(0)
    for before, after in pairwise(timeline):
        assert before.ends_at <= after.starts_at
        if before.ends_at == after.starts_at:   # touching pieces of the same stretch would have been merged
            assert (before.user_id, before.source, before.layer_id, before.override_id) != \
                   (after.user_id, after.source, after.layer_id, after.override_id)


# --- strategies ------------------------------------------------------------------------------------------------------

quarter_hours = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
restrictions_st = st.lists(
    st.builds(Restriction, st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True).map(tuple),
              quarter_hours, quarter_hours),
    max_size=3).map(tuple)


@st.composite
def windows(draw: st.DrawFn) -> tuple[datetime, datetime]:
    start = YEAR + timedelta(minutes=draw(st.integers(0, 365 * 24 * 60)))
    return start, start + timedelta(minutes=draw(st.integers(60, 40 * 24 * 60)))


@st.composite
def layers_st(draw: st.DrawFn, window: tuple[datetime, datetime], index: int, *,
              restricted: bool = True) -> Layer:
    start, end = window
    kind = draw(st.sampled_from(["DAILY", "WEEKLY", "CUSTOM"]))
    bounded = draw(st.booleans())
    span = end - start
    return layer(
        tuple(draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=4))),
        kind=kind, hours=draw(st.integers(1, 72)) if kind == "CUSTOM" else None,
        start=start.date() + timedelta(days=draw(st.integers(-60, 20))),
        handoff=draw(quarter_hours), position=draw(st.integers(0, 3)), layer_id=f"L{index}", name=f"Layer {index}",
        restrictions=draw(restrictions_st) if restricted else (),
        starts_at=start + span * draw(st.floats(-0.2, 0.6)) if bounded else None,
        ends_at=start + span * draw(st.floats(0.7, 1.2)) if bounded else None)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[ZoneInfo, tuple[datetime, datetime], list[Layer], list[Override]]:
    tz = ZoneInfo(draw(st.sampled_from(ZONES)))
    window = draw(windows())
    start, end = window
    layers = [draw(layers_st(window, i)) for i in range(draw(st.integers(1, 4)))]
    overrides = []
    ids = draw(st.permutations(["o1", "o2", "o3", "o4"]))
    for j in range(draw(st.integers(0, 4))):
        opens = start + (end - start) * draw(st.floats(-0.1, 1.0))
        overrides.append(Override(
            override_id=ids[j], user_id=draw(st.sampled_from(USERS)), starts_at=opens,
            ends_at=opens + timedelta(minutes=draw(st.integers(30, 5 * 24 * 60))),
            reason=draw(st.sampled_from([None, "swap", "vacation cover"])),
            created_at=draw(st.sampled_from([None, YEAR, YEAR + timedelta(days=1)]))))
    return tz, window, layers, overrides


# --- properties ------------------------------------------------------------------------------------------------------

@settings(max_examples=70, deadline=None)
@given(schedules(), st.lists(st.floats(0, 1, exclude_max=True), max_size=10), st.data())
def test_final_timeline_follows_the_precedence_rules(schedule, fractions, data) -> None:
    tz, (start, end), layers, overrides = schedule
    timeline = final_timeline(layers, overrides, tz, start, end)
    assert_well_formed(timeline, start, end)

    handoffs = [model_handoffs(lay, tz, end) for lay in layers]
    checks = {start} | {start + (end - start) * f for f in fractions}
    for i, lay in enumerate(layers):
        checks |= {h for h in handoffs[i] if start <= h < end}
        for piece in layer_shifts(lay, tz, start, end):
            checks |= {piece.starts_at, piece.ends_at, piece.ends_at - timedelta(seconds=1)}
    for o in overrides:
        checks |= {o.starts_at, o.ends_at, o.ends_at - timedelta(seconds=1)}
    checks = {t for t in checks if start <= t < end}
    starts = [p.starts_at for p in timeline]

    ask = set(data.draw(st.lists(st.sampled_from(sorted(checks)), max_size=8)))
    for t in sorted(checks):
        expected = model_on_call(layers, overrides, tz, handoffs, t)
        containing = [p for p in timeline if p.starts_at <= t < p.ends_at]
        if expected is None:
            assert containing == [], t
        else:
            assert len(containing) == 1, t
            piece = containing[0]
            assert (piece.user_id, piece.source, piece.layer_id or piece.override_id) == expected, t
            assert timeline[bisect.bisect_right(starts, t) - 1] is piece
        if t not in ask:
            continue
        now = on_call_at(layers, overrides, tz, t)
        if expected is None:
            assert now is None, t
            continue
        assert now is not None and now.starts_at <= t < now.ends_at
        assert (now.user_id, now.source, now.layer_id or now.override_id) == expected
        piece = containing[0]
        if start < piece.starts_at and piece.ends_at < end and piece.ends_at - t < timedelta(days=35) \
                and t - piece.starts_at <= timedelta(days=35):
            assert (now.starts_at, now.ends_at) == (piece.starts_at, piece.ends_at)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["UTC", "America/New_York", "Europe/Berlin"]), windows(),
       st.sampled_from(["DAILY", "WEEKLY", "CUSTOM"]), st.integers(2, 100), st.data())
def test_rotation_order_continues_whatever_the_window(zone, window, kind, hours, data) -> None:
    tz = ZoneInfo(zone)
    start, _ = window
    end = start + timedelta(days=data.draw(st.integers(9, 30)))   # always across at least one week boundary
    lay = data.draw(layers_st((start, end), 0, restricted=False))
    lay = layer(lay.participants, kind=kind, hours=hours if kind == "CUSTOM" else None,
                start=start.date() - timedelta(days=data.draw(st.integers(1, 400))), handoff=lay.handoff_time)
    shifts = layer_shifts(lay, tz, start, end)
    handoffs = model_handoffs(lay, tz, end)
    first = bisect.bisect_right(handoffs, start) - 1
    assert first >= 0
    n = len(lay.participants)
    assert users(shifts) == [lay.participants[(first + i) % n] for i in range(len(shifts))]
    assert shifts[0].starts_at == start and shifts[-1].ends_at == end
    for before, after in pairwise(shifts):
        assert before.ends_at == after.starts_at
        assert after.starts_at in handoffs

    # Starting the window anywhere else gives the same person at every instant both windows cover.
    later = start + (end - start) * data.draw(st.floats(0, 0.9))
    for piece in layer_shifts(lay, tz, later, end):
        same = [s for s in shifts if s.starts_at <= piece.starts_at < s.ends_at]
        assert [s.user_id for s in same] == [piece.user_id]
        assert same[0].ends_at == piece.ends_at


DST_DAYS = [date(2026, 3, 8), date(2026, 3, 29), date(2026, 10, 25), date(2026, 11, 1)]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([NY, BERLIN]), st.one_of(st.sampled_from(DST_DAYS), st.dates(date(2026, 1, 1),
       date(2027, 12, 31))), st.sampled_from(["DAILY", "WEEKLY"]), quarter_hours, st.integers(0, 60),
       st.booleans(), st.lists(st.sampled_from(USERS), min_size=1, max_size=3))
def test_handoffs_stay_at_local_wall_clock_time_across_dst(tz, day, kind, handoff, back, aligned, people) -> None:
    step = 1 if kind == "DAILY" else 7
    # Aligned: the day itself is a handoff day; otherwise the rotation started on any day before it.
    lay = layer(tuple(people), kind=kind, handoff=handoff,
                start=day - timedelta(days=step * (back // step) if aligned else back))
    start = at(tz, day.year, day.month, day.day) - timedelta(days=15)
    end = start + timedelta(days=30)
    shifts = layer_shifts(lay, tz, start, end)
    handoffs = [s.starts_at for s in shifts if s.starts_at != start]
    intended_days = [lay.rotation_start + timedelta(days=step * k) for k in range(400)]
    assert [local(h, tz).date() for h in handoffs] == [
        d for d in intended_days if start < datetime.combine(d, handoff).replace(tzinfo=tz) < end]
    for instant in handoffs:
        wall = local(instant, tz)
        assert wall.fold == 0   # the first of two 01:30s on a fall-back day
        intended = datetime.combine(wall.date(), handoff)
        exists = intended.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == intended
        if exists:
            assert wall.time() == handoff, instant
        else:   # skipped by spring-forward: the same instant as the intended time on the old offset
            assert wall.replace(tzinfo=None) == intended + timedelta(hours=1), instant
    for before, after in pairwise(handoffs):   # 23-, 24- or 25-hour days
        assert abs((after - before) - timedelta(days=step)) <= timedelta(hours=1)
    if aligned:   # the DST day itself hands off
        assert any(local(h, tz).date() == day for h in handoffs)


# --- examples --------------------------------------------------------------------------------------------------------

def test_weekly_rotation_alternates_week_by_week_with_monday_to_monday_shifts() -> None:
    lay = layer(("a", "b"), start=date(2026, 3, 2))   # a Monday, 09:00 Berlin
    shifts = layer_shifts(lay, BERLIN, at(BERLIN, 2026, 3, 2, 9), at(BERLIN, 2026, 4, 6, 9))
    assert users(shifts) == ["a", "b", "a", "b", "a"]
    assert [local(s.starts_at, BERLIN).strftime("%a %d %H:%M") for s in shifts] == \
        ["Mon 02 09:00", "Mon 09 09:00", "Mon 16 09:00", "Mon 23 09:00", "Mon 30 09:00"]
    assert shifts[3].ends_at - shifts[3].starts_at == timedelta(days=7, hours=-1)   # the week of 2026-03-29
    assert shifts[0].reason == "layer 'Primary' (weekly rotation, hands off Mon 09:00 Europe/Berlin)"
    # Before the first handoff the layer has nobody.
    assert layer_shifts(lay, BERLIN, at(BERLIN, 2026, 2, 20), at(BERLIN, 2026, 3, 2, 9)) == []


def test_daily_rotation_of_three_continues_across_the_weekend() -> None:
    lay = layer(("a", "b", "c"), kind="DAILY", start=date(2026, 5, 7), handoff=time(8, 0))   # Thursday
    start = at(NY, 2026, 5, 8, 8)   # Friday
    timeline = final_timeline([lay], [], NY, start, start + timedelta(days=10))
    assert users(timeline) == ["b", "c", "a", "b", "c", "a", "b", "c", "a", "b"]
    assert [local(s.starts_at, NY).strftime("%a") for s in timeline[:4]] == ["Fri", "Sat", "Sun", "Mon"]


def test_overrides_beat_layers_and_the_newest_override_wins() -> None:
    low = layer(("low",), kind="DAILY", layer_id="low", position=0)
    high = layer(("high",), kind="DAILY", layer_id="high", position=1, name="Secondary")
    t = at(BERLIN, 2026, 3, 10)
    older = Override("o-older", "cover", t + timedelta(hours=2), t + timedelta(hours=8), reason="dentist",
                     created_at=datetime(2026, 3, 1, tzinfo=UTC))
    newer = Override("o-newer", "swap", t + timedelta(hours=4), t + timedelta(hours=6),
                     created_at=datetime(2026, 3, 2, tzinfo=UTC))
    timeline = final_timeline([low, high], [newer, older], BERLIN, t, t + timedelta(hours=10))
    assert [(s.user_id, s.source, int((s.ends_at - s.starts_at).total_seconds() // 3600)) for s in timeline] == [
        ("high", "LAYER", 2), ("cover", "OVERRIDE", 2), ("swap", "OVERRIDE", 2), ("cover", "OVERRIDE", 2),
        ("high", "LAYER", 2)]
    assert timeline[1].reason == "override: dentist" and timeline[1].override_id == "o-older"
    assert timeline[2].reason == "override: no reason given"
    # Without the higher layer's person the lower layer is in charge.
    assert users(final_timeline([low, high], [], BERLIN, t - timedelta(days=400), t - timedelta(days=399))) == []
    assert on_call_at([low], [], BERLIN, t).user_id == "low"  # type: ignore[union-attr]
    # Same creation time: the larger override id wins.
    tie = [Override("o-2", "two", t, t + timedelta(hours=1), created_at=t),
           Override("o-1", "one", t, t + timedelta(hours=1), created_at=t)]
    assert users(final_timeline([], tie, BERLIN, t, t + timedelta(hours=1))) == ["two"]


def test_restricted_layer_hands_evenings_and_weekends_to_the_lower_layer() -> None:
    always = layer(("night",), kind="WEEKLY", layer_id="base", position=0, name="Base")
    office = layer(("day",), kind="DAILY", layer_id="office", position=1, name="Office hours",
                   restrictions=parse_restrictions([{"days": [1, 2, 3, 4, 5], "start": "09:00", "end": "17:00"}]))
    layers = [office, always]

    def who(t: datetime) -> str | None:
        shift = on_call_at(layers, [], BERLIN, t)
        return shift.user_id if shift else None

    assert who(at(BERLIN, 2026, 3, 9, 10)) == "day"          # Monday morning
    assert who(at(BERLIN, 2026, 3, 9, 8, 59)) == "night"
    assert who(at(BERLIN, 2026, 3, 9, 18)) == "night"        # Monday evening
    assert who(at(BERLIN, 2026, 3, 13, 16, 59)) == "day"     # Friday afternoon
    assert who(at(BERLIN, 2026, 3, 13, 17)) == "night"
    assert who(at(BERLIN, 2026, 3, 14, 10)) == "night"       # Saturday
    assert who(at(BERLIN, 2026, 3, 30, 9)) == "day"          # after the DST change: still 09:00 local
    assert who(at(BERLIN, 2026, 3, 30, 8, 30)) == "night"
    week = final_timeline(layers, [], BERLIN, at(BERLIN, 2026, 3, 9), at(BERLIN, 2026, 3, 16))
    assert users(week) == ["night", "day"] * 5 + ["night"]
    office_hours = [s for s in week if s.user_id == "day"]
    assert all(local(s.starts_at, BERLIN).hour == 9 and local(s.ends_at, BERLIN).hour == 17 for s in office_hours)
    shift = on_call_at(layers, [], BERLIN, at(BERLIN, 2026, 3, 10, 12))
    assert shift is not None and (local(shift.starts_at, BERLIN).hour, local(shift.ends_at, BERLIN).hour) == (9, 17)
    # Alone, the restricted layer leaves nobody on call outside its window.
    assert on_call_at([office], [], BERLIN, at(BERLIN, 2026, 3, 14, 10)) is None


def test_restriction_keeps_the_rotation_pace_and_overnight_windows_cross_midnight() -> None:
    nights = layer(("a", "b"), kind="DAILY", start=date(2026, 3, 2), handoff=time(12, 0),
                   restrictions=(Restriction(days=(1, 2, 3, 4, 5, 6, 7), start=time(22, 0), end=time(6, 0)),))
    shifts = layer_shifts(nights, NY, at(NY, 2026, 3, 2), at(NY, 2026, 3, 6))
    assert [(s.user_id, local(s.starts_at, NY).strftime("%d %H:%M"), local(s.ends_at, NY).strftime("%d %H:%M"))
            for s in shifts] == [("a", "02 22:00", "03 06:00"), ("b", "03 22:00", "04 06:00"),
                                 ("a", "04 22:00", "05 06:00"), ("b", "05 22:00", "06 00:00")]
    full_day = layer(("a",), kind="DAILY", restrictions=(Restriction(days=(7,), start=time(0), end=time(0)),))
    sunday = layer_shifts(full_day, NY, at(NY, 2026, 3, 7), at(NY, 2026, 3, 10))   # spring-forward Sunday: 23 h
    assert (sunday[0].starts_at, sunday[-1].ends_at) == (at(NY, 2026, 3, 8), at(NY, 2026, 3, 9))
    assert sum((s.ends_at - s.starts_at for s in sunday), timedelta(0)) == timedelta(hours=23)
    assert len(sunday) == 2   # one piece per shift: the 09:00 handoff splits the day


def test_custom_twelve_hours_keep_eight_and_eight_across_the_berlin_change() -> None:
    lay = layer(("a", "b"), kind="CUSTOM", hours=12, start=date(2026, 3, 27), handoff=time(8, 0))
    shifts = layer_shifts(lay, BERLIN, at(BERLIN, 2026, 3, 27, 8), at(BERLIN, 2026, 3, 31, 8))
    assert [local(s.starts_at, BERLIN).strftime("%d %H:%M") for s in shifts] == [
        "27 08:00", "27 20:00", "28 08:00", "28 20:00", "29 08:00", "29 20:00", "30 08:00", "30 20:00"]
    assert users(shifts) == ["a", "b"] * 4
    assert [int((s.ends_at - s.starts_at).total_seconds() // 3600) for s in shifts] == [12, 12, 12, 11, 12, 12, 12,
                                                                                        12]
    assert shifts[0].reason == "layer 'Primary' (12-hour rotation, hands off 08:00/20:00 Europe/Berlin)"


def test_custom_twelve_hours_gain_an_hour_at_the_autumn_change() -> None:
    lay = layer(("a", "b"), kind="CUSTOM", hours=12, start=date(2026, 10, 24), handoff=time(20, 0))
    shifts = layer_shifts(lay, BERLIN, at(BERLIN, 2026, 10, 24, 20), at(BERLIN, 2026, 10, 25, 20))
    assert [(local(s.starts_at, BERLIN).strftime("%d %H:%M"), s.ends_at - s.starts_at) for s in shifts] == [
        ("24 20:00", timedelta(hours=13)), ("25 08:00", timedelta(hours=12))]


def test_handoff_in_the_spring_forward_gap_and_in_the_repeated_hour() -> None:
    lay = layer(("a", "b"), kind="DAILY", start=date(2026, 3, 6), handoff=time(2, 30))
    shifts = layer_shifts(lay, NY, at(NY, 2026, 3, 6, 2, 30), at(NY, 2026, 3, 10, 2, 30))
    starts = [local(s.starts_at, NY) for s in shifts]
    assert [s.strftime("%d %H:%M %Z") for s in starts] == [
        "06 02:30 EST", "07 02:30 EST", "08 03:30 EDT", "09 02:30 EDT"]
    assert shifts[2].starts_at == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    # A window opening at 03:10 EDT, after the skipped 02:30 but before the handoff, still starts with b.
    late = layer_shifts(lay, NY, at(NY, 2026, 3, 8, 3, 10), at(NY, 2026, 3, 8, 12))
    assert [(s.user_id, local(s.starts_at, NY).strftime("%H:%M")) for s in late] == [("b", "03:10"), ("a", "03:30")]
    assert [s.ends_at - s.starts_at for s in shifts] == [timedelta(hours=24), timedelta(hours=24),
                                                          timedelta(hours=23), timedelta(hours=24)]
    autumn = layer(("a", "b"), kind="DAILY", start=date(2026, 10, 30), handoff=time(1, 30))
    fall = layer_shifts(autumn, NY, at(NY, 2026, 10, 31, 1, 30), at(NY, 2026, 11, 2, 1, 30))
    assert fall[1].starts_at == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)   # the first 01:30, still EDT
    assert [s.ends_at - s.starts_at for s in fall] == [timedelta(hours=24), timedelta(hours=25)]


def test_an_hourly_rotation_skips_the_turn_that_falls_in_the_spring_forward_gap() -> None:
    lay = layer(("a", "b", "c"), kind="CUSTOM", hours=1, start=date(2026, 3, 8), handoff=time(0, 30))
    shifts = layer_shifts(lay, NY, at(NY, 2026, 3, 8, 0, 30), at(NY, 2026, 3, 8, 5, 30))
    assert [(s.user_id, local(s.starts_at, NY).strftime("%H:%M")) for s in shifts] == [
        ("a", "00:30"), ("b", "01:30"), ("a", "03:30"), ("b", "04:30")]   # c's 02:30 turn does not exist


def test_far_from_the_rotation_start_the_count_is_exact() -> None:
    lay = layer(("a", "b", "c", "d", "e", "f", "g"), kind="CUSTOM", hours=1, start=date(1990, 1, 1),
                handoff=time(0, 0))
    t = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    hours = int((t - datetime(1990, 1, 1, tzinfo=UTC)).total_seconds() // 3600)
    shift = on_call_at([lay], [], ZoneInfo("UTC"), t)
    assert shift is not None and shift.user_id == lay.participants[hours % 7]
    assert (shift.starts_at, shift.ends_at) == (t, t + timedelta(hours=1))
    year = final_timeline([lay], [], ZoneInfo("UTC"), YEAR, YEAR + timedelta(days=365))
    assert len(year) == 365 * 24
    assert all(s.ends_at - s.starts_at == timedelta(hours=1) for s in year)


def test_layer_starts_at_and_ends_at_bound_the_layer() -> None:
    base = layer(("base",), kind="DAILY", layer_id="base")
    bounded = layer(("temp",), kind="DAILY", layer_id="temp", position=1,
                    starts_at=at(BERLIN, 2026, 3, 10, 12), ends_at=at(BERLIN, 2026, 3, 12, 12))
    timeline = final_timeline([base, bounded], [], BERLIN, at(BERLIN, 2026, 3, 9), at(BERLIN, 2026, 3, 14))
    assert [(s.user_id, local(s.starts_at, BERLIN).strftime("%d %H:%M")) for s in timeline] == [
        ("base", "09 00:00"), ("temp", "10 12:00"), ("base", "12 12:00")]


def test_on_call_at_gives_the_whole_stretch_and_why() -> None:
    primary = layer(("a", "b"), start=date(2026, 3, 2), layer_id="primary")
    shift = on_call_at([primary], [], BERLIN, at(BERLIN, 2026, 3, 18, 12))
    assert shift is not None
    assert (shift.user_id, shift.source, shift.layer_id, shift.layer_name, shift.override_id) == \
        ("a", "LAYER", "primary", "Primary", None)
    assert (shift.starts_at, shift.ends_at) == (at(BERLIN, 2026, 3, 16, 9), at(BERLIN, 2026, 3, 23, 9))
    assert shift.reason == "layer 'Primary' (weekly rotation, hands off Mon 09:00 Europe/Berlin)"

    cover = Override("o1", "c", at(BERLIN, 2026, 3, 17), at(BERLIN, 2026, 3, 18), reason="swap with a colleague")
    during = on_call_at([primary], [cover], BERLIN, at(BERLIN, 2026, 3, 17, 12))
    assert during is not None and (during.user_id, during.source, during.override_id) == ("c", "OVERRIDE", "o1")
    assert (during.starts_at, during.ends_at) == (cover.starts_at, cover.ends_at)
    assert during.reason == "override: swap with a colleague" and during.layer_id is None
    after = on_call_at([primary], [cover], BERLIN, at(BERLIN, 2026, 3, 20))
    assert after is not None and (after.starts_at, after.ends_at) == (cover.ends_at, at(BERLIN, 2026, 3, 23, 9))

    # One person forever: the stretch reaches as far as the horizon each way.
    solo = layer(("z",), kind="DAILY", start=date(2025, 1, 1))
    t = at(BERLIN, 2026, 6, 1)
    whole = on_call_at([solo], [], BERLIN, t, horizon=timedelta(days=20))
    assert whole is not None and (whole.starts_at, whole.ends_at) == (t - timedelta(days=20), t + timedelta(days=20))
    assert on_call_at([primary], [], BERLIN, at(BERLIN, 2026, 3, 1)) is None   # before the first handoff


def test_upcoming_shifts_of_one_person() -> None:
    primary = layer(("a", "b"), start=date(2026, 3, 2))
    cover = Override("o1", "b", at(BERLIN, 2026, 3, 17), at(BERLIN, 2026, 3, 18))
    mine = upcoming_shifts([primary], [cover], BERLIN, "a", at(BERLIN, 2026, 3, 2, 9), at(BERLIN, 2026, 3, 30, 9))
    assert [(local(s.starts_at, BERLIN).strftime("%d %H:%M"), local(s.ends_at, BERLIN).strftime("%d %H:%M"))
            for s in mine] == [("02 09:00", "09 09:00"), ("16 09:00", "17 00:00"), ("18 00:00", "23 09:00")]
    assert all(s.user_id == "a" and s.source == "LAYER" for s in mine)
    theirs = upcoming_shifts([primary], [cover], BERLIN, "b", at(BERLIN, 2026, 3, 2, 9), at(BERLIN, 2026, 3, 30, 9))
    assert [s.source for s in theirs] == ["LAYER", "OVERRIDE", "LAYER"]
    assert upcoming_shifts([primary], [cover], BERLIN, "nobody", YEAR, YEAR + timedelta(days=90)) == []


# --- validation ------------------------------------------------------------------------------------------------------

def test_check_timezone() -> None:
    assert check_timezone("Europe/Berlin") == BERLIN
    assert check_timezone("UTC").key == "UTC"
    for bad in ("Mars/Olympus_Mons", "", "../../etc/passwd", "europe/berlin", None, 5):
        with pytest.raises(ValidationError) as caught:
            check_timezone(bad)  # type: ignore[arg-type]
        assert caught.value.field == "timezone"


def test_restrictions_round_trip() -> None:
    raw = [{"days": [5, 1, 3], "start": "09:00", "end": "17:30"}, {"days": [6], "start": "22:00", "end": "06:00"}]
    parsed = parse_restrictions(raw)
    assert parsed[0] == Restriction(days=(1, 3, 5), start=time(9, 0), end=time(17, 30))
    assert restrictions_json(parsed) == [{"days": [1, 3, 5], "start": "09:00", "end": "17:30"},
                                         {"days": [6], "start": "22:00", "end": "06:00"}]
    assert parse_restrictions(restrictions_json(parsed)) == parsed
    assert parse_restrictions([]) == () and parse_restrictions(None) == ()


@pytest.mark.parametrize(("raw", "field"), [
    ("not a list", "restrictions"),
    ({"days": [1]}, "restrictions"),
    ([{"days": [1], "start": "09:00", "end": "17:00"}] * 29, "restrictions"),
    (["09:00-17:00"], "restrictions[0]"),
    ([{"days": [], "start": "09:00", "end": "17:00"}], "restrictions[0].days"),
    ([{"days": [1], "start": "09:00", "end": "17:00"}, {"days": [8], "start": "09:00", "end": "17:00"}],
     "restrictions[1].days"),
    ([{"days": [1, 1], "start": "09:00", "end": "17:00"}], "restrictions[0].days"),
    ([{"days": [True], "start": "09:00", "end": "17:00"}], "restrictions[0].days"),
    ([{"days": [1], "start": "25:00", "end": "17:00"}], "restrictions[0].start"),
    ([{"days": [1], "start": "9:00", "end": "17:00"}], "restrictions[0].start"),
    ([{"days": [1], "start": "09:00", "end": "5pm"}], "restrictions[0].end"),
    ([{"days": [1], "start": "09:00"}], "restrictions[0].end"),
    ([{"days": [1], "start": "09:00", "end": "17:00", "tz": "UTC"}], "restrictions[0].tz"),
])
def test_bad_restrictions_name_the_field(raw, field) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_restrictions(raw)
    assert caught.value.field == field
    assert caught.value.details["field"] == field


GOOD = layer(("a", "b"))


@pytest.mark.parametrize(("changes", "field"), [
    ({"rotation_type": "MONTHLY"}, "rotation_type"),
    ({"rotation_type": "CUSTOM"}, "rotation_hours"),
    ({"rotation_type": "CUSTOM", "rotation_hours": 0}, "rotation_hours"),
    ({"rotation_type": "CUSTOM", "rotation_hours": 8761}, "rotation_hours"),
    ({"rotation_hours": 12}, "rotation_hours"),
    ({"participants": ()}, "participants"),
    ({"participants": tuple(f"u{i}" for i in range(101))}, "participants"),
    ({"participants": ("a", "")}, "participants[1]"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"starts_at": datetime(2026, 3, 2)}, "starts_at"),
    ({"starts_at": YEAR, "ends_at": YEAR}, "ends_at"),
    ({"restrictions": (Restriction(days=(0,), start=time(9), end=time(17)),)}, "restrictions[0].days"),
])
def test_bad_layers_name_the_field(changes, field) -> None:
    import dataclasses

    with pytest.raises(ValidationError) as caught:
        check_layer(dataclasses.replace(GOOD, **changes))
    assert caught.value.field == field


def test_good_layers_pass() -> None:
    check_layer(GOOD)
    check_layer(layer(("a",), kind="CUSTOM", hours=8760, starts_at=YEAR, ends_at=YEAR + timedelta(days=1)))
    check_layer(layer(tuple(f"u{i}" for i in range(100)), kind="DAILY", name="x" * 200))


def test_naive_window_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        final_timeline([GOOD], [], BERLIN, datetime(2026, 3, 2), datetime(2026, 3, 9, tzinfo=UTC))
    assert caught.value.field == "start"
    with pytest.raises(ValidationError) as caught:
        on_call_at([GOOD], [], BERLIN, datetime(2026, 3, 2))
    assert caught.value.field == "at"
