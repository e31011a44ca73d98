"""Time spans for reports: half-open [start, end) intervals, their union and difference, and the occurrences of a
maintenance window within a period (the same wall-clock rules the evaluator applies, pulse.alerting.maintenance)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pulse.alerting.maintenance import MaintenanceWindow
from pulse.checks import parse_clock

Span = tuple[datetime, datetime]


def clip(spans: Iterable[Span], start: datetime, end: datetime) -> list[Span]:
    """The parts of `spans` inside [start, end), empty parts dropped."""
    out = []
    for a, b in spans:
        a, b = max(a, start), min(b, end)
        if a < b:
            out.append((a, b))
    return out


def union(spans: Iterable[Span]) -> list[Span]:
    """Sorted, non-overlapping spans covering the same time (touching spans merge)."""
    merged: list[Span] = []
    for a, b in sorted(s for s in spans if s[0] < s[1]):
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def subtract(spans: Iterable[Span], holes: Iterable[Span]) -> list[Span]:
    """`spans` with every part covered by `holes` removed."""
    out: list[Span] = []
    cut = union(holes)
    for a, b in union(spans):
        cursor = a
        for ha, hb in cut:
            if hb <= cursor or ha >= b:
                continue
            if ha > cursor:
                out.append((cursor, ha))
            cursor = max(cursor, hb)
            if cursor >= b:
                break
        if cursor < b:
            out.append((cursor, b))
    return out


def total_seconds(spans: Iterable[Span]) -> float:
    """Length of the union of `spans`, in seconds."""
    return sum((b - a).total_seconds() for a, b in union(spans))


def window_occurrences(window: MaintenanceWindow, start: datetime, end: datetime) -> list[Span]:
    """The window's occurrences overlapping [start, end), clipped to it; none for a disabled window.

    WEEKLY windows start at their local `start_time` on each of their weekdays in their time zone and last
    `duration_minutes` of elapsed time, converted with zoneinfo on the day itself (as the evaluator does).
    """
    if not window.is_enabled:
        return []
    if window.recurrence == "ONCE":
        if window.starts_at is None or window.ends_at is None:
            return []
        return clip([(window.starts_at, window.ends_at)], start, end)
    at = parse_clock(window.start_time) if window.start_time else None
    if at is None or not window.duration_minutes or not window.weekdays:
        return []
    zone = ZoneInfo(window.timezone)
    duration = timedelta(minutes=window.duration_minutes)
    day = (start - duration).astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    spans: list[Span] = []
    while day <= last:
        if day.isoweekday() in window.weekdays:
            begins = datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
            spans.append((begins, begins + duration))
        day += timedelta(days=1)
    return union(clip(spans, start, end))
