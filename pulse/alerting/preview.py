"""Rule previews: a device's raw telemetry replayed through a rule's own verdicts, as the episodes it would open.

The verdicts are those of pulse/alerting/rules.py, and the replay follows the evaluator: a BREACH opens an episode
once it has held for `for_seconds` (any other verdict in between starts that wait again), a CLEAR closes it, a HOLD
leaves it as it is. THRESHOLD and MULTI judge the device's latest value of each metric; RATE and ANOMALY a window
ending at the metric's latest numeric sample (the ANOMALY baseline without that sample), computed here from the
rows read with the same bounds as pulse/alerting/windows.py; GAP opens `gap_seconds + for_seconds` after the last
telemetry carrying the metric and closes when it comes again.

Only `telemetry` messages are read, and at most MAX_SAMPLES of them, so a busy device cannot make a preview costly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.rule_admin import FOR_SECONDS_MAX
from pulse.alerting.rules import (
    AnomalyDefinition,
    AnomalySample,
    GapDefinition,
    MultiDefinition,
    RateDefinition,
    RateSample,
    ThresholdDefinition,
    Verdict,
    anomaly_verdict,
    multi_verdict,
    parse_definition,
    rate_verdict,
    threshold_verdict,
)
from pulse.alerting.windows import ANCHOR_LOOKBACK
from pulse.checks import is_whole_number
from pulse.errors import ValidationError
from pulse.fleet.queries import require_device

MAX_RANGE = timedelta(hours=24)
"""The longest range a preview covers, and the default one (ending now)."""
MAX_SAMPLES = 50_000
"""The most telemetry rows one preview reads; a range with more is refused."""
PRIOR_LOOKBACK = ANCHOR_LOOKBACK
"""How far before `from` the device's last values (and a window's latest sample) are looked for."""

NOTES = (
    "Maintenance windows are ignored: an episode is shown even where a window would have held the alert back.",
    "Flapping is ignored: every CLEAR closes its episode, where the evaluator may keep a flapping alert open.",
    "Only telemetry messages are replayed (heartbeats are not), in time order as if none had arrived late; "
    "the rule's scopes are not checked.",
    "The replay starts at `from` with no episode open, from the device's last values before it: an episode "
    "already under way then opens at `from`.",
)


class PreviewEpisode(msgspec.Struct, kw_only=True):
    """An alert the rule would have opened: when, until when (null: still open at `to`), and what it saw then."""

    opened_at: datetime
    closed_at: datetime | None
    value: Any
    observation: str


class RulePreview(msgspec.Struct, kw_only=True):
    device_id: str
    rule_type: str
    range_from: datetime = msgspec.field(name="from")
    range_to: datetime = msgspec.field(name="to")
    samples_read: int
    """Telemetry rows read: the range's rows carrying the rule's metrics, and those before it that it needs."""
    episode_count: int
    episodes: list[PreviewEpisode]
    notes: list[str]


async def preview_rule(conn: AsyncConnection, tenant_id: str, device_id: str, rule_type: str, definition: Any, *,
                       for_seconds: int, now: datetime, range_from: datetime | None = None,
                       range_to: datetime | None = None, max_samples: int = MAX_SAMPLES) -> RulePreview:
    """The episodes a rule would have opened on one device of the tenant between `range_from` and `range_to`.

    The definition is validated like a stored rule's (errors name `definition.<field>`); an unknown device (or
    another tenant's, on a tenant-scoped connection) is NotFound naming `device_id`.
    """
    d = parse_definition(rule_type, definition)
    if not is_whole_number(for_seconds, 0, FOR_SECONDS_MAX):
        raise ValidationError(f"must be 0-{FOR_SECONDS_MAX} seconds", field="for_seconds")
    start, end = _range(range_from, range_to, now)
    await require_device(conn, tenant_id, device_id)
    source = _Source(conn, tenant_id, device_id, start, end, max_samples)
    hold = timedelta(seconds=for_seconds)
    if isinstance(d, GapDefinition):
        episodes = await _gap(source, d, hold)
    elif isinstance(d, RateDefinition | AnomalyDefinition):
        episodes = await _window(source, d, hold)
    else:
        episodes = await _latest_values(source, d, hold)
    notes = list(NOTES)
    if isinstance(d, GapDefinition):
        notes.append("The evaluator checks gaps every 10 s, so a GAP alert opens up to 10 s after the time shown.")
    return RulePreview(device_id=device_id, rule_type=rule_type, range_from=start, range_to=end,
                       samples_read=source.rows_read, episode_count=len(episodes), episodes=episodes, notes=notes)


def _range(range_from: datetime | None, range_to: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """`from`/`to` checked: both with a UTC offset, `from` before `to`, at most MAX_RANGE apart; `to` is at most now."""
    for value, name in ((range_from, "from"), (range_to, "to")):
        if value is not None and value.utcoffset() is None:
            raise ValidationError("must include a UTC offset (e.g. 2026-11-23T12:00:00Z)", field=name)
    end = min(range_to, now) if range_to is not None else now
    start = range_from if range_from is not None else end - MAX_RANGE
    if start >= end:
        raise ValidationError("must be before `to` (and before now)", field="from")
    if end - start > MAX_RANGE:
        raise ValidationError(f"the range is at most {int(MAX_RANGE.total_seconds() // 3600)} h: "
                              f"`from` must not be before {(end - MAX_RANGE).isoformat()}", field="from")
    return start, end


# --- reading --------------------------------------------------------------------------------------------------

_ROWS = """
SELECT t.time, {columns} FROM telemetry t
WHERE t.tenant_id = :t AND t.device_id = :d AND t.msg_type = 'telemetry' AND {carries}
  AND t.time > :after AND t.time <= :until
ORDER BY t.time, t.seq LIMIT :limit
"""
_PRIOR = """
SELECT t.time, {columns} FROM telemetry t
WHERE t.tenant_id = :t AND t.device_id = :d AND t.msg_type = 'telemetry' AND {carries}
  AND t.time <= :at AND t.time > :since
ORDER BY t.time DESC, t.seq DESC LIMIT 1
"""
_NUMBER = "jsonb_typeof(t.metrics -> CAST(:m AS text)) = 'number'"
_NUMBER_VALUE = "CAST(t.metrics ->> CAST(:m AS text) AS float8) AS v"
_HAS = "(t.metrics -> CAST(:m AS text)) IS NOT NULL"


@dataclass
class _Source:
    """One device's telemetry for a preview, counting (and capping) the rows read."""

    conn: AsyncConnection
    tenant_id: str
    device_id: str
    start: datetime
    end: datetime
    max_samples: int
    rows_read: int = 0
    prior_times: set[datetime] = field(default_factory=set)
    """Rows before `from` already counted (several metrics may find the same row)."""

    async def prior(self, columns: str, carries: str, m: str) -> Any:
        """The last row carrying metric `m` at or before `start` (looked for PRIOR_LOOKBACK back), or None."""
        row = (await self.conn.execute(text(_PRIOR.format(columns=columns, carries=carries)), {
            "t": self.tenant_id, "d": self.device_id, "m": m, "at": self.start,
            "since": self.start - PRIOR_LOOKBACK})).first()
        if row is not None and row.time not in self.prior_times:
            self.prior_times.add(row.time)
            self.rows_read += 1
        return row

    async def rows(self, columns: str, carries: str, params: dict[str, Any], after: datetime) -> Sequence[Any]:
        """The rows in (after, end] in time order; more than max_samples is a ValidationError naming the range."""
        rows = (await self.conn.execute(text(_ROWS.format(columns=columns, carries=carries)), {
            "t": self.tenant_id, "d": self.device_id, "after": after, "until": self.end,
            "limit": self.max_samples + 1, **params})).all()
        if len(rows) > self.max_samples:
            raise ValidationError(
                f"device {self.device_id} has more than {self.max_samples} telemetry samples for this rule between "
                f"{after.isoformat()} and {self.end.isoformat()}; preview a shorter range",
                field="from", details={"device_id": self.device_id, "max_samples": self.max_samples})
        self.rows_read += len(rows)
        return rows


# --- replay ---------------------------------------------------------------------------------------------------

@dataclass
class _Replay:
    """The evaluator's settling of verdicts (Evaluator._settle) for one rule and one device, in sample time."""

    hold: timedelta
    episodes: list[PreviewEpisode]
    is_open: bool = False
    pending_since: datetime | None = None
    pending: Verdict | None = None

    def judge(self, at: datetime, verdict: Verdict) -> None:
        self._due(at, inclusive=False)
        if verdict.state == "BREACH":
            if self.is_open:
                return
            if self.hold:
                if self.pending_since is None:
                    self.pending_since = at
                self.pending = verdict  # the evaluator judges the latest values when the wait runs out
                if at - self.pending_since < self.hold:
                    return
            self._open(at, verdict)
            return
        self.pending_since = self.pending = None
        if self.is_open and verdict.state == "CLEAR":
            self.episodes[-1].closed_at = at
            self.is_open = False

    def finish(self, end: datetime) -> list[PreviewEpisode]:
        self._due(end, inclusive=True)
        return self.episodes

    def _due(self, at: datetime, *, inclusive: bool) -> None:
        """A breach that has held for `hold` opens when the wait runs out, before the sample at `at` is judged (a
        sample exactly then is judged first: it decides)."""
        if self.pending_since is None or self.pending is None:
            return
        due = self.pending_since + self.hold
        if due < at or (inclusive and due <= at):
            self._open(due, self.pending)

    def _open(self, at: datetime, verdict: Verdict) -> None:
        self.episodes.append(PreviewEpisode(opened_at=at, closed_at=None, value=verdict.value,
                                            observation=verdict.observation))
        self.is_open = True
        self.pending_since = self.pending = None


async def _latest_values(source: _Source, d: ThresholdDefinition | MultiDefinition,
                         hold: timedelta) -> list[PreviewEpisode]:
    """THRESHOLD and MULTI: the device's latest value of each metric, judged at `from` and at every sample."""
    wanted = [d.metric] if isinstance(d, ThresholdDefinition) else list(dict.fromkeys(c.metric for c in d.conditions))
    values: dict[str, Any] = {}
    for m in wanted:
        row = await source.prior("t.metrics -> CAST(:m AS text) AS v", _HAS, m)
        if row is not None:
            values[m] = row.v

    def judge(metrics: dict[str, Any]) -> Verdict:
        return threshold_verdict(d, metrics) if isinstance(d, ThresholdDefinition) else multi_verdict(d, metrics)

    rows = await source.rows("t.metrics", "jsonb_exists_any(t.metrics, CAST(:ms AS text[]))", {"ms": wanted},
                             source.start)
    replay = _Replay(hold, [])
    replay.judge(source.start, judge(values))
    for row in rows:
        values.update({m: row.metrics[m] for m in wanted if m in row.metrics})
        replay.judge(row.time, judge(values))
    return replay.finish(source.end)


async def _window(source: _Source, d: RateDefinition | AnomalyDefinition, hold: timedelta) -> list[PreviewEpisode]:
    """RATE and ANOMALY: the window ending at the latest numeric sample, judged at `from` and at every sample."""
    window = timedelta(seconds=d.window_seconds)
    anchor = await source.prior(_NUMBER_VALUE, _NUMBER, d.metric)
    after = anchor.time - window if anchor is not None else source.start
    rows = await source.rows(_NUMBER_VALUE, _NUMBER, {"m": d.metric}, after)
    source.rows_read -= int(anchor is not None)  # the anchor is among the rows: counted once
    times = [r.time for r in rows]
    values = [float(r.v) for r in rows]
    first_in_range = next((i for i, t in enumerate(times) if t > source.start), len(times))
    verdicts = list(_rate_verdicts(d, times, values) if isinstance(d, RateDefinition)
                    else _anomaly_verdicts(d, times, values))
    replay = _Replay(hold, [])
    if first_in_range:  # the latest sample at `from` decides there
        replay.judge(source.start, verdicts[first_in_range - 1])
    else:
        replay.judge(source.start, rate_verdict(d, None) if isinstance(d, RateDefinition) else anomaly_verdict(d, None))
    for at, verdict in zip(times[first_in_range:], verdicts[first_in_range:], strict=True):
        replay.judge(at, verdict)
    return replay.finish(source.end)


def _rate_verdicts(d: RateDefinition, times: list[datetime], values: list[float]) -> Iterator[Verdict]:
    """For each sample as the latest: first and last sample of (latest - window, latest], as windows.rate_samples."""
    window = timedelta(seconds=d.window_seconds)
    lo = 0
    for i, at in enumerate(times):
        while times[lo] <= at - window:
            lo += 1
        yield rate_verdict(d, RateSample(times[lo], values[lo], at, values[i]))


_SCALE = 1074
"""Every finite float is an integer times 2**-1074: sums of scaled values are exact, however long the window."""


def _scaled(v: float) -> tuple[int, int]:
    """v * 2**1074 and v**2 * 2**2148, exactly."""
    p, q = v.as_integer_ratio()
    shift = _SCALE - (q.bit_length() - 1)
    return p << shift, (p * p) << (2 * shift)


def _anomaly_verdicts(d: AnomalyDefinition, times: list[datetime], values: list[float]) -> Iterator[Verdict]:
    """For each sample as the latest: count, mean and sample standard deviation of the samples of
    (latest - window, latest), as windows.anomaly_samples, kept as exact running sums while the window slides."""
    window = timedelta(seconds=d.window_seconds)
    scaled = [_scaled(v) for v in values]
    lo = hi = 0  # the baseline is [lo, hi)
    s1 = s2 = 0
    for i, at in enumerate(times):
        while hi < len(times) and times[hi] < at:
            s1, s2 = s1 + scaled[hi][0], s2 + scaled[hi][1]
            hi += 1
        while lo < hi and times[lo] <= at - window:
            s1, s2 = s1 - scaled[lo][0], s2 - scaled[lo][1]
            lo += 1
        n = hi - lo
        mean = s1 / (n << _SCALE) if n else None
        sd = math.sqrt((n * s2 - s1 * s1) / ((n * (n - 1)) << (2 * _SCALE))) if n > 1 else None
        yield anomaly_verdict(d, AnomalySample(values[i], at, n, mean, sd))


async def _gap(source: _Source, d: GapDefinition, hold: timedelta) -> list[PreviewEpisode]:
    """GAP: open once the metric has been missing from telemetry for gap_seconds + for_seconds, close when it is back.

    A device is watched from its first reading of the metric on, as in the evaluator."""
    span = timedelta(seconds=d.gap_seconds) + hold
    prior = await source.prior("t.time AS v", _HAS, d.metric)
    rows = await source.rows("t.time AS v", _HAS, {"m": d.metric}, source.start)
    readings = ([prior.time] if prior is not None else []) + [r.time for r in rows]
    episodes: list[PreviewEpisode] = []

    def opened(last: datetime) -> PreviewEpisode:
        return PreviewEpisode(
            opened_at=max(last + span, source.start), closed_at=None,
            value={"metric": d.metric, "gap_seconds": d.gap_seconds, "last_reading_at": last.isoformat()},
            observation=f"no {d.metric} in telemetry from {source.device_id} since {last.isoformat()} "
                        f"(over {int(span.total_seconds())} s)")

    for last, back in pairwise(readings):
        if back > last + span:
            episode = opened(last)
            episode.closed_at = back
            episodes.append(episode)
    if readings and source.end >= readings[-1] + span:
        episodes.append(opened(readings[-1]))
    return episodes
