"""Telemetry-window queries for RATE, ANOMALY and GAP rules: one statement per rule per chunk of devices.

Only `telemetry` messages count (heartbeats never do), and only numeric values for RATE and ANOMALY. A
device's window ends at its latest telemetry sample of the metric, not at the evaluation time, so an
evaluation woken by a heartbeat (or run later) sees exactly the same samples as the one woken by that sample.
The latest sample is looked up at most ANCHOR_LOOKBACK before the metric's newest reading in
`device_state.latest_metrics_at`, which bounds the index scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.rules import AnomalySample, RateSample, Rule

ANCHOR_LOOKBACK = timedelta(days=1)

_NUMERIC = "t.msg_type = 'telemetry' AND jsonb_typeof(t.metrics -> CAST(:m AS text)) = 'number'"

# The latest numeric telemetry sample of the metric for each device of the chunk that ever reported it.
_LATEST = f"""
SELECT ds.device_id, l.time AS latest_at, l.v AS latest
FROM device_state ds
CROSS JOIN LATERAL (
  SELECT t.time, CAST(t.metrics ->> CAST(:m AS text) AS float8) AS v FROM telemetry t
  WHERE t.tenant_id = ds.tenant_id AND t.device_id = ds.device_id AND {_NUMERIC}
    AND t.time <= CAST(ds.latest_metrics_at ->> CAST(:m AS text) AS timestamptz)
    AND t.time > CAST(ds.latest_metrics_at ->> CAST(:m AS text) AS timestamptz) - CAST(:lookback AS interval)
  ORDER BY t.time DESC LIMIT 1) l
WHERE ds.tenant_id = :t AND ds.device_id = ANY(:d) AND (ds.latest_metrics_at -> CAST(:m AS text)) IS NOT NULL
"""

_RATE = f"""
SELECT latest.device_id, f.time AS first_at, f.v AS first_value, latest.latest_at, latest.latest
FROM ({_LATEST}) latest
CROSS JOIN LATERAL (
  SELECT t.time, CAST(t.metrics ->> CAST(:m AS text) AS float8) AS v FROM telemetry t
  WHERE t.tenant_id = :t AND t.device_id = latest.device_id AND {_NUMERIC}
    AND t.time > latest.latest_at - CAST(:w AS interval) AND t.time <= latest.latest_at
  ORDER BY t.time ASC LIMIT 1) f
"""

# The baseline is the window's samples before the latest one: an outlier must not inflate its own yardstick.
_ANOMALY = f"""
SELECT latest.device_id, latest.latest_at, latest.latest, b.n, b.mean, b.sd
FROM ({_LATEST}) latest
CROSS JOIN LATERAL (
  SELECT count(*) AS n, avg(v) AS mean, stddev_samp(v) AS sd FROM (
    SELECT CAST(t.metrics ->> CAST(:m AS text) AS float8) AS v FROM telemetry t
    WHERE t.tenant_id = :t AND t.device_id = latest.device_id AND {_NUMERIC}
      AND t.time > latest.latest_at - CAST(:w AS interval) AND t.time < latest.latest_at) s) b
"""


# The baseline of a device whose latest sample moved from `p.at` to `latest.latest_at` (both L0 < L1): the samples
# that entered it, in [L0, L1), and those that left it, in (L0 - w, L1 - w]; as count, and sums of (v - shift) and
# of its square. Two short index ranges instead of the whole window.
_SUMS = """
SELECT count(*) AS n, coalesce(sum(v - p.shift), 0) AS s, coalesce(sum((v - p.shift) * (v - p.shift)), 0) AS ss
FROM (SELECT CAST(t.metrics ->> CAST(:m AS text) AS float8) AS v FROM telemetry t
      WHERE t.tenant_id = :t AND t.device_id = latest.device_id AND {numeric} AND {range}) x
"""
_ANOMALY_STEP = f"""
SELECT latest.device_id, latest.latest_at, latest.latest, i.n AS n_in, i.s AS s_in, i.ss AS ss_in,
  o.n AS n_out, o.s AS s_out, o.ss AS ss_out
FROM ({_LATEST}) latest
JOIN unnest(CAST(:d AS text[]), CAST(:prev AS timestamptz[]), CAST(:shift AS float8[])) AS p(device_id, at, shift)
  ON p.device_id = latest.device_id
CROSS JOIN LATERAL ({_SUMS.format(numeric=_NUMERIC, range="t.time >= p.at AND t.time < latest.latest_at")}) i
CROSS JOIN LATERAL ({_SUMS.format(numeric=_NUMERIC, range="t.time > p.at - CAST(:w AS interval) "
                                  "AND t.time <= latest.latest_at - CAST(:w AS interval)")}) o
WHERE latest.latest_at >= p.at
"""


@dataclass(frozen=True)
class AnomalyStep:
    """How a device's ANOMALY baseline changed since its latest sample was `at` (see anomaly_steps)."""

    latest_at: datetime
    latest: float
    n_in: int
    s_in: float
    ss_in: float
    n_out: int
    s_out: float
    ss_out: float


async def anomaly_steps(conn: AsyncConnection, tenant_id: str, previous: dict[str, tuple[datetime, float]],
                        metric: str, window_seconds: int) -> dict[str, AnomalyStep]:
    """For devices whose baseline was last taken at their latest sample `at` ({device: (at, shift)}): the latest
    sample now, and the samples that entered and left the baseline since, summed as (value - shift). Devices with no
    latest sample, or an older one than `at`, are absent."""
    devices = list(previous)
    rows = (await conn.execute(text(_ANOMALY_STEP), {
        "t": tenant_id, "d": devices, "prev": [previous[i][0] for i in devices],
        "shift": [previous[i][1] for i in devices], "m": metric, "lookback": ANCHOR_LOOKBACK,
        "w": timedelta(seconds=window_seconds)})).all()
    return {r.device_id: AnomalyStep(r.latest_at, r.latest, int(r.n_in), r.s_in, r.ss_in, int(r.n_out), r.s_out,
                                     r.ss_out) for r in rows}


async def rate_samples(conn: AsyncConnection, tenant_id: str, device_ids: list[str], metric: str,
                       window_seconds: int) -> dict[str, RateSample]:
    """First and last sample in each device's window (devices with no sample are absent)."""
    rows = (await conn.execute(text(_RATE), {
        "t": tenant_id, "d": device_ids, "m": metric, "lookback": ANCHOR_LOOKBACK,
        "w": timedelta(seconds=window_seconds)})).all()
    return {r.device_id: RateSample(r.first_at, r.first_value, r.latest_at, r.latest) for r in rows}


async def anomaly_samples(conn: AsyncConnection, tenant_id: str, device_ids: list[str], metric: str,
                          window_seconds: int) -> dict[str, AnomalySample]:
    """The latest value and count/mean/sample-stddev of the earlier samples in each device's window."""
    rows = (await conn.execute(text(_ANOMALY), {
        "t": tenant_id, "d": device_ids, "m": metric, "lookback": ANCHOR_LOOKBACK,
        "w": timedelta(seconds=window_seconds)})).all()
    return {r.device_id: AnomalySample(r.latest, r.latest_at, int(r.n), r.mean, r.sd) for r in rows}


# A device is silent for sure when even its newest reading (telemetry or heartbeat) is before the cutoff.
_GAP = """
SELECT device_id, site_id, has_recent, last_reading_at FROM (
  SELECT d.device_id, d.site_id,
    CAST(ds.latest_metrics_at ->> CAST(:m AS text) AS timestamptz) AS last_reading_at,
    EXISTS (SELECT 1 FROM alerts a WHERE a.tenant_id = d.tenant_id
            AND a.fingerprint = CAST(:fp AS text) || d.device_id
            AND a.status IN ('OPEN', 'ACKNOWLEDGED')) AS is_open,
    CASE WHEN CAST(ds.latest_metrics_at ->> CAST(:m AS text) AS timestamptz) <= :cutoff THEN false
      ELSE EXISTS (SELECT 1 FROM telemetry t WHERE t.tenant_id = d.tenant_id AND t.device_id = d.device_id
                   AND t.time > :cutoff AND t.msg_type = 'telemetry'
                   AND (t.metrics -> CAST(:m AS text)) IS NOT NULL) END AS has_recent
  FROM devices d JOIN device_state ds USING (tenant_id, device_id)
  WHERE d.tenant_id = :t AND d.status = 'ACTIVE' AND (ds.latest_metrics_at -> CAST(:m AS text)) IS NOT NULL{scope}
) s WHERE is_open = has_recent ORDER BY device_id
"""


@dataclass(frozen=True)
class GapState:
    """A device whose GAP alert should change: `has_recent` True means close, False means open."""

    device_id: str
    site_id: str | None
    has_recent: bool
    last_reading_at: datetime | None


def _scope(rule: Rule) -> tuple[str, dict[str, Any]]:
    """The rule's scopes as SQL over `devices d` (the same meaning as Rule.applies_to)."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    if rule.device_ids:
        parts.append("d.device_id = ANY(CAST(:scope_devices AS text[]))")
        params["scope_devices"] = list(rule.device_ids)
    if rule.site_ids:
        parts.append("d.site_id = ANY(CAST(:scope_sites AS text[]))")
        params["scope_sites"] = list(rule.site_ids)
    if rule.tags:
        parts.append("d.tags && CAST(:scope_tags AS text[])")
        params["scope_tags"] = list(rule.tags)
    if rule.group_ids:
        parts.append("EXISTS (SELECT 1 FROM device_group_members m WHERE m.tenant_id = d.tenant_id "
                     "AND m.device_id = d.device_id AND m.group_id::text = ANY(CAST(:scope_groups AS text[])))")
        params["scope_groups"] = list(rule.group_ids)
    return "".join(f" AND {p}" for p in parts), params


async def gap_changes(conn: AsyncConnection, rule: Rule, metric: str, cutoff: datetime, *,
                      device_ids: list[str] | None = None) -> list[GapState]:
    """Devices in the rule's scope whose GAP alert must open (no telemetry with `metric` after `cutoff`, none
    open) or close (there is, one is open). One statement for the whole tenant, or for `device_ids`.

    Only ACTIVE devices that have reported the metric at least once are watched. The newest reading in
    `latest_metrics_at` decides most devices without touching `telemetry` (older than the cutoff: certainly
    silent); the others are checked with one index probe each, so a metric carried by heartbeats does not count.
    """
    scope, params = _scope(rule)
    only = ""
    if device_ids is not None:
        only = " AND d.device_id = ANY(CAST(:only AS text[]))"
        params["only"] = device_ids
    rows = (await conn.execute(text(_GAP.format(scope=scope + only)), {
        "t": rule.tenant_id, "m": metric, "fp": rule.fingerprint_prefix, "cutoff": cutoff, **params})).all()
    return [GapState(r.device_id, r.site_id, r.has_recent, r.last_reading_at) for r in rows]
