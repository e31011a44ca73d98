"""Report time spans: union and difference (properties against a per-second model), window occurrences across DST,
and CSV cells a spreadsheet would evaluate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pulse.alerting.maintenance import MaintenanceWindow
from pulse.reports.export import safe_cell
from pulse.reports.spans import Span, subtract, total_seconds, union, window_occurrences

BASE = datetime(2026, 3, 1, tzinfo=UTC)


def _span(a: int, b: int) -> Span:
    return BASE + timedelta(seconds=min(a, b)), BASE + timedelta(seconds=max(a, b))


spans = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)).map(lambda t: _span(*t)), max_size=8)


def _seconds(items: list[Span]) -> set[int]:
    return {s for a, b in items for s in range(int((a - BASE).total_seconds()), int((b - BASE).total_seconds()))}


@given(spans)
def test_union_covers_the_same_seconds_without_overlap(items: list[Span]) -> None:
    merged = union(items)
    assert _seconds(merged) == _seconds(items)
    assert all(merged[i][1] < merged[i + 1][0] for i in range(len(merged) - 1))
    assert total_seconds(items) == len(_seconds(items))


@given(spans, spans)
def test_subtract_removes_exactly_the_holes(items: list[Span], holes: list[Span]) -> None:
    assert _seconds(subtract(items, holes)) == _seconds(items) - _seconds(holes)


def _weekly(**fields: object) -> MaintenanceWindow:
    base: dict[str, object] = {
        "window_id": "w", "name": "w", "recurrence": "WEEKLY", "starts_at": None, "ends_at": None, "weekdays": [7],
        "start_time": "02:30", "duration_minutes": 60, "timezone": "Europe/Berlin", "site_ids": [], "group_ids": [],
        "device_types": [], "device_ids": [], "is_enabled": True, "created_at": BASE}
    base.update(fields)
    return MaintenanceWindow(**base)  # type: ignore[arg-type]


def test_weekly_occurrences_follow_local_time_across_daylight_saving() -> None:
    start, end = datetime(2026, 3, 20, tzinfo=UTC), datetime(2026, 4, 6, tzinfo=UTC)
    occurrences = window_occurrences(_weekly(), start, end)
    assert occurrences == [
        (datetime(2026, 3, 22, 1, 30, tzinfo=UTC), datetime(2026, 3, 22, 2, 30, tzinfo=UTC)),  # CET
        # 29 March: 02:30 does not exist in Berlin; the window starts as many minutes later as the clocks jumped
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 2, 30, tzinfo=UTC)),
        (datetime(2026, 4, 5, 0, 30, tzinfo=UTC), datetime(2026, 4, 5, 1, 30, tzinfo=UTC)),  # CEST
    ]


def test_occurrences_are_clipped_to_the_period_and_disabled_windows_have_none() -> None:
    start, end = datetime(2026, 3, 22, 2, 0, tzinfo=UTC), datetime(2026, 3, 22, 12, 0, tzinfo=UTC)
    assert window_occurrences(_weekly(), start, end) == [(start, datetime(2026, 3, 22, 2, 30, tzinfo=UTC))]
    assert window_occurrences(_weekly(is_enabled=False), start, end) == []
    once = _weekly(recurrence="ONCE", starts_at=start - timedelta(hours=5), ends_at=start + timedelta(hours=1))
    assert window_occurrences(once, start, end) == [(start, start + timedelta(hours=1))]


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_quoted() -> None:
    for risky in ("=1+1", "+SUM(A1)", "-2+3", "@cmd", "\t=x", "\r=x"):
        assert safe_cell(risky) == "'" + risky
    assert safe_cell("plain") == "plain" and safe_cell(-5) == -5 and safe_cell(1.5) == 1.5 and safe_cell(None) == ""
