"""The evaluator: device liveness, and alert rules (THRESHOLD, MULTI, RATE, ANOMALY, GAP) over device telemetry."""

from __future__ import annotations

import asyncio
import logging
import math
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pulse.alerting.judged import Judged, RuleIndex, left_open, to_judge
from pulse.alerting.maintenance import MaintenanceCache, devices_in_maintenance, silent_since_maintenance
from pulse.alerting.partitions import partition_of, partition_sql
from pulse.alerting.rules import (
    RULE_TYPES,
    SEVERITY_NAMES,
    ZERO_VARIANCE,
    AnomalyDefinition,
    AnomalySample,
    GapDefinition,
    MultiDefinition,
    RateDefinition,
    Rule,
    ThresholdDefinition,
    Verdict,
    anomaly_verdict,
    describe,
    multi_verdict,
    parse_definition,
    rate_verdict,
    threshold_verdict,
)
from pulse.alerting.service import AlertSignal, clear_alert, notify_device_states, raise_alert
from pulse.alerting.windows import AnomalyStep, GapState, anomaly_samples, anomaly_steps, gap_changes, rate_samples
from pulse.db import driver_connection, is_data_error, sqlstate, system_tx
from pulse.errors import ValidationError

log = logging.getLogger("pulse.evaluate")

DeviceKey = tuple[str, str]
Owns = Callable[[str, str], bool]
CHUNK = 1000
"""Devices judged per transaction by default (PULSE_EVALUATE_CHUNK), whatever their tenants: the per-chunk queries
(state, liveness, open alerts) are one statement each for the whole chunk."""
WINDOW_VERDICT_TTL = timedelta(seconds=60)
"""How long a RATE/ANOMALY verdict is reused while no new sample of its metric arrives (see Evaluator)."""
GAP_CHECK_EVERY = timedelta(seconds=10)
"""How often GAP rules are checked for devices that send nothing (gaps are at least 60 s)."""


_NONE: frozenset[str] = frozenset()
_NO_RULES: frozenset[int] = frozenset()


@dataclass(slots=True)
class DeviceSnapshot:
    tenant_id: str
    device_id: str
    site_id: str | None
    tags: frozenset[str]
    groups: frozenset[str]
    metrics: dict[str, Any]
    last_telemetry_at: datetime | None
    metrics_at: dict[str, Any]  # metric -> newest reading's time (ISO text)
    status: str = "ONLINE"  # device_state.status when the chunk was read
    in_maintenance: bool = False  # in a maintenance window now: nothing is raised for it
    open_fps: frozenset[str] = _NONE  # fingerprints of the device's open alerts
    # Set before the rules are applied (see pulse.alerting.judged): the readings now, the rules to judge (None: all),
    # what judging changed (fingerprint -> open), the rules to judge again next time (both None until there is one).
    readings: array[int] | None = None
    todo: set[int] | None = None
    changes: dict[str, bool] | None = None
    again: set[int] | None = None

    def is_open(self, rule: Rule) -> bool:
        return bool(self.open_fps) and rule.fingerprint(self.device_id) in self.open_fps


@dataclass(frozen=True)
class _WindowVerdict:
    definition: RateDefinition | AnomalyDefinition
    anchor: Any  # the metric's newest reading time the verdict was computed for
    at: datetime
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class _Baseline:
    """An ANOMALY rule's baseline of one device: its samples before the latest one (at `latest_at`), in the window,
    as count and sums of (value - shift) and of its square (shift: the mean when it was last read whole)."""

    definition: AnomalyDefinition
    latest_at: datetime
    shift: float
    n: int
    s: float
    ss: float
    full_at: datetime  # when it was last read whole

    @classmethod
    def of(cls, d: AnomalyDefinition, sample: AnomalySample, now: datetime) -> _Baseline | None:
        if sample.count < 2 or sample.mean is None or sample.stddev is None:
            return None
        return cls(d, sample.latest_at, sample.mean, sample.count, 0.0, sample.stddev ** 2 * (sample.count - 1),
                   now)

    @property
    def mean(self) -> float:
        return self.shift + self.s / self.n

    @property
    def variance(self) -> float:
        return (self.ss - self.s * self.s / self.n) / (self.n - 1)

    def moved(self, step: AnomalyStep) -> _Baseline | None:
        """The baseline after `step`; None when it should be read whole (fewer than 2 samples, no variance)."""
        n = self.n + step.n_in - step.n_out
        if n < 2:
            return None
        moved = _Baseline(self.definition, step.latest_at, self.shift, n, self.s + step.s_in - step.s_out,
                          self.ss + step.ss_in - step.ss_out, self.full_at)
        if moved.variance <= (100 * ZERO_VARIANCE * max(1.0, abs(moved.mean))) ** 2:
            return None
        return moved

    def sample(self, latest: float) -> AnomalySample:
        return AnomalySample(latest, self.latest_at, self.n, self.mean, math.sqrt(self.variance))


@dataclass
class Evaluator:
    """Holds enabled rules in memory and evaluates the devices it is told have new data.

    A RATE or ANOMALY verdict depends only on the samples up to the metric's newest one (windows end at the latest
    sample), so while a device sends other metrics its verdict is reused instead of reading the window again. A
    sample that arrives late (older than the newest) is taken in when the verdict is older than
    WINDOW_VERDICT_TTL.

    A device is judged again under a rule only when something the outcome depends on changed since it was last
    judged (`judged`, pulse.alerting.judged): a newer reading of one of the rule's metrics, the device entering or
    leaving a maintenance window, its alert opened or closed by someone else (a manual close), or the tenant's rules
    edited. A device reporting other metrics costs nothing under the rules it did not touch, and an alert that still
    breaches is updated per breaching reading, not per evaluation. A for_seconds window still running is always
    judged again.
    """

    engine: AsyncEngine
    base_url: str = ""
    chunk: int = CHUNK
    rule_index: dict[str, RuleIndex] = field(default_factory=dict)  # tenant -> its enabled rules, indexed
    rule_by_id: dict[str, Rule] = field(default_factory=dict)  # every tenant's, set with rule_index
    # (rule_id, device_id) -> when the condition started holding, for rules with for_seconds and no open alert.
    pending_since: dict[tuple[str, str], datetime] = field(default_factory=dict)
    window_verdicts: dict[tuple[str, str], _WindowVerdict] = field(default_factory=dict)
    baselines: dict[tuple[str, str], _Baseline] = field(default_factory=dict)  # (ANOMALY rule_id, device_id)
    judged: dict[DeviceKey, Judged] = field(default_factory=dict)  # dropped for a tenant whose rules change
    gaps_checked_at: datetime | None = None
    maintenance: MaintenanceCache = field(default_factory=MaintenanceCache)
    alerts_opened: int = 0
    alerts_closed: int = 0
    marked_online: int = 0  # devices this evaluator turned ONLINE (a new silence for the liveness passes)

    @property
    def rules_by_tenant(self) -> dict[str, list[Rule]]:
        return {t: index.rules for t, index in self.rule_index.items()}

    async def load_rules(self) -> None:
        async with system_tx(self.engine) as conn:
            rows = (await conn.execute(text(
                "SELECT rule_id::text, tenant_id, name, rule_type, severity, definition, for_seconds, site_ids, "
                "  group_ids::text[] AS group_ids, tags, device_ids, escalation_policy_id::text "
                "FROM alert_rules WHERE is_enabled AND rule_type = ANY(:types)"), {"types": list(RULE_TYPES)})).all()
        by_tenant: dict[str, list[Rule]] = defaultdict(list)
        for r in rows:
            try:
                definition = parse_definition(r.rule_type, r.definition)
            except ValidationError as exc:
                log.warning("skipping rule with invalid definition",
                            extra={"rule_id": r.rule_id, "error": exc.message, "field": exc.field})
                continue
            by_tenant[r.tenant_id].append(Rule(
                rule_id=r.rule_id, tenant_id=r.tenant_id, name=r.name, rule_type=r.rule_type, severity=r.severity,
                definition=definition, for_seconds=r.for_seconds, site_ids=tuple(r.site_ids or ()),
                group_ids=tuple(r.group_ids or ()), tags=tuple(r.tags or ()), device_ids=tuple(r.device_ids or ()),
                escalation_policy_id=r.escalation_policy_id))
        old = self.rule_index
        # An unchanged rule list is kept as it is, with what was judged under it; a changed one starts afresh.
        self.rule_index = {t: old[t] if t in old and old[t].rules == rules else RuleIndex.of(rules)
                           for t, rules in by_tenant.items()}
        self.rule_by_id = {r.rule_id: r for index in self.rule_index.values() for r in index.rules}
        changed = {t for t in old.keys() | self.rule_index.keys() if old.get(t) is not self.rule_index.get(t)}
        if changed and self.judged:
            self.judged = {k: v for k, v in self.judged.items() if k[0] not in changed}

    async def evaluate_devices(self, keys: Iterable[DeviceKey], now: datetime) -> None:
        """Evaluate every rule that applies to these devices; one transaction per chunk of devices."""
        ordered = sorted(set(keys))  # tenant by tenant; the same lock order in every evaluator
        for i in range(0, len(ordered), self.chunk):
            await self._evaluate_in_tx(ordered[i:i + self.chunk], now)

    async def _evaluate_in_tx(self, keys: list[DeviceKey], now: datetime) -> None:
        """One transaction; if it does not commit, what was judged in it is forgotten (judged again next time)."""
        try:
            async with system_tx(self.engine) as conn:
                await self._evaluate_chunk(conn, keys, now)
        except BaseException:
            for key in keys:
                self.judged.pop(key, None)
            raise

    async def evaluate_each(self, keys: Iterable[DeviceKey], now: datetime) -> list[DeviceKey]:
        """Evaluate devices one transaction each, after a chunk failed on its data: a device whose own evaluation the
        database refuses (is_data_error) is logged and skipped, so it cannot hold up the others. Returns those."""
        skipped: list[DeviceKey] = []
        for key in sorted(set(keys)):
            try:
                await self._evaluate_in_tx([key], now)
            except (SQLAlchemyError, asyncpg.PostgresError) as exc:
                if not is_data_error(exc):
                    raise
                log.error("evaluation of a device refused by the database; skipped until its next message",
                          extra={"tenant_id": key[0], "device_id": key[1], "sqlstate": sqlstate(exc),
                                 "error": str(exc)[:500]})
                skipped.append(key)
        return skipped

    async def _evaluate_chunk(self, conn: AsyncConnection, keys: list[DeviceKey], now: datetime) -> None:
        snapshots = await _load_snapshots(conn, keys)
        by_tenant: dict[str, list[DeviceSnapshot]] = defaultdict(list)
        for snap in snapshots:
            by_tenant[snap.tenant_id].append(snap)
        for tenant_id, snaps in by_tenant.items():
            held = await self.maintenance.devices_in_maintenance(conn, tenant_id, [s.device_id for s in snaps], now)
            for snap in snaps:
                snap.in_maintenance = snap.device_id in held
        self.marked_online += await _mark_online(
            conn, [(s.tenant_id, s.device_id) for s in snapshots if s.status != "ONLINE"], now)
        open_rows = (await conn.execute(text(
            "SELECT a.tenant_id, a.device_id, a.fingerprint, "
            "  a.alert_type = 'NO_HEARTBEAT' AND ds.last_seen_at > a.opened_at AS spoke_since "
            "FROM unnest(CAST(:t AS text[]), CAST(:d AS text[])) AS k(tenant_id, device_id) "
            "JOIN alerts a ON a.tenant_id = k.tenant_id AND a.device_id = k.device_id "
            "JOIN device_state ds ON ds.tenant_id = a.tenant_id AND ds.device_id = a.device_id "
            "WHERE a.status IN ('OPEN', 'ACKNOWLEDGED')"),
            {"t": [s.tenant_id for s in snapshots], "d": [s.device_id for s in snapshots]})).all()
        by_device: dict[DeviceKey, set[str]] = defaultdict(set)
        for r in open_rows:
            by_device[(r.tenant_id, r.device_id)].add(r.fingerprint)
        for snap in snapshots:
            if (fps := by_device.get((snap.tenant_id, snap.device_id))) is not None:
                snap.open_fps = frozenset(fps)
        for r in open_rows:
            if r.spoke_since:
                await clear_alert(conn, r.tenant_id, r.fingerprint, reason="device is sending again", now=now,
                                  base_url=self.base_url)
        for tenant_id, snaps in by_tenant.items():
            index = self.rule_index.get(tenant_id)
            if index is None:
                continue
            marked: list[list[DeviceSnapshot]] = [[] for _ in index.rules]  # per rule: devices with news for it
            every = range(len(index.rules))
            for snap in snaps:  # in order, so each rule's devices are too (the lock order)
                snap.readings = index.readings(snap.metrics_at, snap.metrics)
                snap.todo = to_judge(self.judged.get((snap.tenant_id, snap.device_id)), index, snap.readings,
                                     snap.in_maintenance, snap.open_fps)
                for position in every if snap.todo is None else snap.todo:
                    marked[position].append(snap)
            for position, rule in enumerate(index.rules):
                await asyncio.sleep(0)  # a turn is long: let the liveness passes (their own task) go on meanwhile
                await self._apply_rule(conn, rule, position, snaps, marked[position], now)
            for snap in snaps:
                assert snap.readings is not None
                self.judged[(snap.tenant_id, snap.device_id)] = Judged(
                    index, snap.readings, snap.in_maintenance,
                    left_open(snap.open_fps, snap.changes.items()) if snap.changes else snap.open_fps,
                    frozenset(snap.again) if snap.again else _NO_RULES)

    async def _apply_rule(self, conn: AsyncConnection, rule: Rule, position: int, snaps: list[DeviceSnapshot],
                          marked: list[DeviceSnapshot], now: datetime) -> None:
        """Judge the chunk's devices (`snaps`) under one rule (at `position` in its tenant's): only those with
        something new for it (`marked`, see `judged`); window rules with one query for the whole chunk."""
        d = rule.definition
        if isinstance(d, GapDefinition):
            # Gaps open in check_gaps; here a device whose metric is back has its gap alert closed at once.
            gapped = [s for s in snaps if s.is_open(rule) and self._in_scope(rule, s)]
            if gapped:
                held = {s.device_id for s in gapped if s.in_maintenance}
                for change in await gap_changes(conn, rule, d.metric, now - _gap_span(rule, d),
                                                device_ids=[s.device_id for s in gapped]):
                    await self._settle_gap(conn, rule, d, change, now, in_maintenance=change.device_id in held)
            return
        rechecked: set[str] = set()  # window verdicts due again without a newer reading (a late sample may count)
        if isinstance(d, RateDefinition | AnomalyDefinition):
            targets: list[DeviceSnapshot] = []
            for s in snaps:
                if not self._in_scope(rule, s):
                    continue
                if s.todo is None or position in s.todo:
                    targets.append(s)
                elif self._window_due(rule, d, s, now):
                    rechecked.add(s.device_id)
                    targets.append(s)
        else:
            targets = marked if rule.unscoped else [s for s in marked if self._in_scope(rule, s)]
        if not targets:
            return
        verdicts: dict[str, Verdict]
        if isinstance(d, RateDefinition | AnomalyDefinition):
            verdicts = await self._window_verdicts(conn, rule, d, targets, now)
        elif isinstance(d, MultiDefinition):
            verdicts = {s.device_id: multi_verdict(d, s.metrics) for s in targets}
        else:
            verdicts = {s.device_id: threshold_verdict(d, s.metrics) for s in targets}
        for snap in targets:
            is_open, verdict = snap.is_open(rule), verdicts[snap.device_id]
            news = (verdict.state == "BREACH" and not is_open) or (verdict.state == "CLEAR" and is_open)
            if snap.device_id in rechecked and not news:
                continue  # no newer reading: only an alert to open or to close is news
            after = await self._settle(conn, rule, snap, verdict, is_open, now)
            if after is None:
                if snap.again is None:
                    snap.again = set()
                snap.again.add(position)
            elif after != is_open:
                if snap.changes is None:
                    snap.changes = {}
                snap.changes[rule.fingerprint(snap.device_id)] = after

    @staticmethod
    def _in_scope(rule: Rule, snap: DeviceSnapshot) -> bool:
        return rule.unscoped or rule.applies_to(snap.device_id, snap.site_id, snap.tags, snap.groups)

    async def _anomaly_samples(self, conn: AsyncConnection, rule: Rule, d: AnomalyDefinition, device_ids: list[str],
                               now: datetime) -> dict[str, AnomalySample]:
        """ANOMALY baselines: moved on from the one kept for the device (only the samples that entered and left it
        are read), else read whole; read whole at least every WINDOW_VERDICT_TTL (late samples, rounding), and
        whenever the moved-on one has (nearly) no variance, so that a flat baseline is judged exactly."""
        out: dict[str, AnomalySample] = {}
        kept = {i: b for i in device_ids
                if (b := self.baselines.get((rule.rule_id, i))) is not None and b.definition == d
                and now - b.full_at < WINDOW_VERDICT_TTL}
        whole = [i for i in device_ids if i not in kept]
        if kept:
            steps = await anomaly_steps(conn, rule.tenant_id, {i: (b.latest_at, b.shift) for i, b in kept.items()},
                                        d.metric, d.window_seconds)
            for device_id, b in kept.items():
                step = steps.get(device_id)
                moved = None if step is None else b.moved(step)
                if step is None or moved is None:
                    whole.append(device_id)
                    continue
                self.baselines[(rule.rule_id, device_id)] = moved
                out[device_id] = moved.sample(step.latest)
        if whole:
            for device_id, sample in (await anomaly_samples(conn, rule.tenant_id, whole, d.metric,
                                                            d.window_seconds)).items():
                out[device_id] = sample
                baseline = _Baseline.of(d, sample, now)
                if baseline is None:
                    self.baselines.pop((rule.rule_id, device_id), None)
                else:
                    self.baselines[(rule.rule_id, device_id)] = baseline
        return out

    def _window_due(self, rule: Rule, d: RateDefinition | AnomalyDefinition, snap: DeviceSnapshot,
                    now: datetime) -> bool:
        """Whether a reused RATE/ANOMALY verdict has outlived WINDOW_VERDICT_TTL (or was dropped)."""
        if snap.metrics_at.get(d.metric) is None:
            return False
        cached = self.window_verdicts.get((rule.rule_id, snap.device_id))
        return cached is None or now - cached.at >= WINDOW_VERDICT_TTL

    async def _window_verdicts(self, conn: AsyncConnection, rule: Rule, d: RateDefinition | AnomalyDefinition,
                               targets: list[DeviceSnapshot], now: datetime) -> dict[str, Verdict]:
        """RATE/ANOMALY verdicts: reused while the metric has no newer reading, else one window query for the rest."""
        verdicts: dict[str, Verdict] = {}
        stale: list[str] = []
        for snap in targets:
            anchor = snap.metrics_at.get(d.metric)
            if anchor is None:  # never reported: the window query would find nothing
                verdicts[snap.device_id] = (rate_verdict(d, None) if isinstance(d, RateDefinition)
                                            else anomaly_verdict(d, None))
                continue
            cached = self.window_verdicts.get((rule.rule_id, snap.device_id))
            if (cached is not None and cached.anchor == anchor and cached.definition == d
                    and now - cached.at < WINDOW_VERDICT_TTL):
                verdicts[snap.device_id] = cached.verdict
            else:
                stale.append(snap.device_id)
        if stale:
            if isinstance(d, RateDefinition):
                rates = await rate_samples(conn, rule.tenant_id, stale, d.metric, d.window_seconds)
                fresh = {i: rate_verdict(d, rates.get(i)) for i in stale}
            else:
                samples = await self._anomaly_samples(conn, rule, d, stale, now)
                fresh = {i: anomaly_verdict(d, samples.get(i)) for i in stale}
            anchors = {s.device_id: s.metrics_at.get(d.metric) for s in targets}
            for device_id, verdict in fresh.items():
                self.window_verdicts[(rule.rule_id, device_id)] = _WindowVerdict(d, anchors[device_id], now, verdict)
            verdicts.update(fresh)
        return verdicts

    async def _settle(self, conn: AsyncConnection, rule: Rule, snap: DeviceSnapshot, verdict: Verdict,
                      is_open: bool, now: datetime) -> bool | None:
        """Open/update the alert on BREACH (after for_seconds), close it on CLEAR, leave it on HOLD.

        Returns whether the alert is meant to be open now (None while a for_seconds window runs). A close the
        alert refuses (flapping hold) leaves it open, so the device is judged again on its next evaluation."""
        key = (rule.rule_id, snap.device_id)
        if verdict.state == "BREACH":
            if snap.in_maintenance:  # no alert opens and an open one is left as it is
                self.pending_since.pop(key, None)
                return is_open
            if not is_open and rule.for_seconds > 0:
                since = self.pending_since.setdefault(key, now)
                if now - since < timedelta(seconds=rule.for_seconds):
                    return None
            self.pending_since.pop(key, None)
            d = rule.definition
            change = await raise_alert(conn, AlertSignal(
                tenant_id=rule.tenant_id, fingerprint=rule.fingerprint(snap.device_id), alert_type=rule.alert_type,
                severity=rule.severity, title=f"{rule.name}: {describe(d)} on {snap.device_id}",
                summary=f"{verdict.observation} ({describe(d)}), severity {SEVERITY_NAMES[rule.severity]}",
                device_id=snap.device_id, site_id=snap.site_id, rule_id=rule.rule_id, metric=_metric(d),
                value=verdict.value, triggered_at=snap.last_telemetry_at,
                escalation_policy_id=rule.escalation_policy_id), now=now, base_url=self.base_url)
            if change.kind == "OPENED":
                self.alerts_opened += 1
            return True
        self.pending_since.pop(key, None)
        if is_open and verdict.state == "CLEAR":
            closed = await clear_alert(conn, rule.tenant_id, rule.fingerprint(snap.device_id),
                                       reason=f"condition cleared: {verdict.observation}", now=now,
                                       base_url=self.base_url)
            if closed:
                self.alerts_closed += 1
            return False
        return is_open

    async def check_gaps(self, now: datetime, *, paused: bool = False, grace_from: datetime | None = None,
                         owns: Owns | None = None) -> None:
        """Open and close GAP alerts for every tenant, at most every GAP_CHECK_EVERY: one query per GAP rule.

        This runs without new data (a silent device wakes nobody). While ingest is down (`paused`) nothing is
        judged; after it came back (`grace_from`), no gap opens until a whole gap has passed since. With `owns`,
        only the devices it accepts (this instance's partitions) are judged.
        """
        if paused or (self.gaps_checked_at is not None and now - self.gaps_checked_at < GAP_CHECK_EVERY):
            return
        self.gaps_checked_at = now
        for index in list(self.rule_index.values()):
            for rule in index.rules:
                d = rule.definition
                if not isinstance(d, GapDefinition):
                    continue
                span = _gap_span(rule, d)
                may_open = grace_from is None or now - grace_from >= span
                async with system_tx(self.engine) as conn:
                    changes = [c for c in await gap_changes(conn, rule, d.metric, now - span)
                               if owns is None or owns(rule.tenant_id, c.device_id)]
                    held = await self.maintenance.devices_in_maintenance(
                        conn, rule.tenant_id, [c.device_id for c in changes if not c.has_recent], now)
                    for change in changes:
                        if change.has_recent or may_open:
                            await self._settle_gap(conn, rule, d, change, now,
                                                   in_maintenance=change.device_id in held)

    async def _settle_gap(self, conn: AsyncConnection, rule: Rule, d: GapDefinition, change: GapState,
                          now: datetime, *, in_maintenance: bool = False) -> None:
        fingerprint = rule.fingerprint(change.device_id)
        if change.has_recent:
            if await clear_alert(conn, rule.tenant_id, fingerprint, reason=f"{d.metric} is reported again",
                                 now=now, base_url=self.base_url):
                self.alerts_closed += 1
            return
        if in_maintenance:
            return
        last = change.last_reading_at  # the newest reading of any message; a heartbeat's is not telemetry
        span = _gap_span(rule, d)
        silent = (f"{int((now - last).total_seconds())} s" if last is not None and now - last >= span
                  else f"over {int(span.total_seconds())} s")
        result = await raise_alert(conn, AlertSignal(
            tenant_id=rule.tenant_id, fingerprint=fingerprint, alert_type=rule.alert_type, severity=rule.severity,
            title=f"{rule.name}: {describe(d)} on {change.device_id}",
            summary=f"no {d.metric} in telemetry from {change.device_id} for {silent} ({describe(d)}), "
                    f"severity {SEVERITY_NAMES[rule.severity]}",
            device_id=change.device_id, site_id=change.site_id, rule_id=rule.rule_id, metric=d.metric,
            value={"metric": d.metric, "gap_seconds": d.gap_seconds,
                   "last_reading_at": last.isoformat() if last is not None else None},
            triggered_at=now, escalation_policy_id=rule.escalation_policy_id), now=now, base_url=self.base_url)
        if result.kind == "OPENED":
            self.alerts_opened += 1

    def forget_devices(self, owns: Owns) -> None:
        """Drop the in-memory windows (for_seconds) of devices this instance no longer evaluates."""
        for table in (self.pending_since, self.window_verdicts, self.baselines):
            for key in list(table):
                rule = self.rule_by_id.get(key[0])
                if rule is None or not owns(rule.tenant_id, key[1]):
                    del table[key]
        self.judged = {k: v for k, v in self.judged.items() if owns(*k)}

    def prune_window_verdicts(self, now: datetime) -> None:
        """Drop reused verdicts that are too old to be used again (devices that went quiet, rules removed)."""
        for key, cached in list(self.window_verdicts.items()):
            if now - cached.at >= WINDOW_VERDICT_TTL:
                del self.window_verdicts[key]
        for key, baseline in list(self.baselines.items()):
            if now - baseline.full_at >= WINDOW_VERDICT_TTL:
                del self.baselines[key]

    def due_pending(self, now: datetime) -> set[DeviceKey]:
        """Devices whose for_seconds window has run out since their last evaluation."""
        due: set[DeviceKey] = set()
        for (rule_id, device_id), since in list(self.pending_since.items()):
            rule = self.rule_by_id.get(rule_id)
            if rule is None:
                del self.pending_since[(rule_id, device_id)]
            elif now - since >= timedelta(seconds=rule.for_seconds):
                due.add((rule.tenant_id, device_id))
        return due


def _gap_span(rule: Rule, d: GapDefinition) -> timedelta:
    """A gap alert needs the metric missing for gap_seconds, then for for_seconds more."""
    return timedelta(seconds=d.gap_seconds + rule.for_seconds)


def _metric(d: ThresholdDefinition | MultiDefinition | RateDefinition | AnomalyDefinition | GapDefinition
            ) -> str | None:
    """The alert's `metric`: the rule's one metric (a MULTI rule names several, so none)."""
    return None if isinstance(d, MultiDefinition) else d.metric


_SNAPSHOTS = """
SELECT d.tenant_id, d.device_id, d.site_id, d.tags, ds.latest_metrics, ds.latest_metrics_at, ds.last_telemetry_at,
  ds.status, coalesce(array(SELECT m.group_id::text FROM device_group_members m
    WHERE m.tenant_id = d.tenant_id AND m.device_id = d.device_id), '{}') AS groups
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(tenant_id, device_id, n)
JOIN devices d ON d.tenant_id = k.tenant_id AND d.device_id = k.device_id
JOIN device_state ds ON ds.tenant_id = d.tenant_id AND ds.device_id = d.device_id
WHERE d.status = 'ACTIVE' ORDER BY k.n
"""


async def _load_snapshots(conn: AsyncConnection, keys: list[DeviceKey]) -> list[DeviceSnapshot]:
    """The ACTIVE devices among `keys` with their latest metrics, in the order of `keys`.

    Fetched on the driver's connection (same transaction, same jsonb decoding): this runs for every woken device and
    the driver's records cost a fraction of result rows."""
    raw = await driver_connection(conn)
    rows = await raw.fetch(_SNAPSHOTS, [k[0] for k in keys], [k[1] for k in keys])
    return [DeviceSnapshot(tenant_id, device_id, site_id, frozenset(tags) if tags else _NONE,
                           frozenset(groups) if groups else _NONE, metrics or {}, last_telemetry_at, metrics_at or {},
                           status)
            for tenant_id, device_id, site_id, tags, metrics, metrics_at, last_telemetry_at, status, groups in rows]


async def _mark_online(conn: AsyncConnection, keys: list[DeviceKey], now: datetime) -> int:
    """Any accepted message is a sign of life: devices that were not ONLINE become ONLINE (recorded); returns how
    many.

    Called with the chunk's devices that were not ONLINE when it was read. A device read as ONLINE needs nothing
    here: a liveness pass turns a device STALE only while its row still has the last message the pass decided
    from (see _LIVENESS), and a message committed after that wakes the evaluator for the device again, and that
    evaluation reads it STALE.

    A row another transaction holds is skipped, not waited for: it is ingest writing a newer message of the device
    (whose commit wakes the evaluator for it again) or a liveness pass. Waiting made a deadlock with ingest's batch
    update, which takes the same rows in another order; PostgreSQL broke it by failing this chunk."""
    if not keys:
        return 0
    changed = (await conn.execute(text(
        "WITH changed AS ("
        "  UPDATE device_state ds SET status = 'ONLINE', last_state_change_at = :now "
        "  FROM (SELECT s.tenant_id, s.device_id, s.status AS old FROM device_state s "
        "        JOIN unnest(CAST(:t AS text[]), CAST(:d AS text[])) AS k(tenant_id, device_id) "
        "          ON s.tenant_id = k.tenant_id AND s.device_id = k.device_id "
        "        WHERE s.status <> 'ONLINE' ORDER BY s.tenant_id, s.device_id FOR UPDATE OF s SKIP LOCKED) prev "
        "  WHERE ds.tenant_id = prev.tenant_id AND ds.device_id = prev.device_id "
        "    AND ds.last_seen_at > coalesce(ds.last_state_change_at, '-infinity') "
        "  RETURNING ds.tenant_id, ds.device_id, prev.old), "
        "hist AS (INSERT INTO device_state_history (tenant_id, device_id, status, previous_status, changed_at) "
        "  SELECT tenant_id, device_id, 'ONLINE', old, :now FROM changed) "
        "SELECT tenant_id, device_id FROM changed"),
        {"t": [k[0] for k in keys], "d": [k[1] for k in keys], "now": now})).all()
    await notify_device_states(conn, [(r.tenant_id, r.device_id, "ONLINE") for r in changed], changed_at=now)
    return len(changed)


# Each ONLINE/STALE device's status at :now from its silence (since its last message, or since ingest came back);
# `due_at` is when it would next change if nothing is heard. Only devices whose status changes need their partition.
# A row that changed after the statement's snapshot (ingest committed a message for it while the pass waited for the
# row) is left as it is: the conditions on `ds` are checked again against the row's newest version.
_LIVENESS = """
WITH timing AS (
  SELECT ds.tenant_id, ds.device_id, ds.status AS old, d.site_id, t.no_heartbeat_alert_on, ds.last_seen_at,
    coalesce(d.heartbeat_interval_s, t.heartbeat_interval_s) AS iv,
    GREATEST(ds.last_seen_at, :grace) + make_interval(secs => coalesce(d.heartbeat_interval_s,
      t.heartbeat_interval_s) * t.stale_after_intervals) AS stale_at,
    GREATEST(ds.last_seen_at, :grace) + make_interval(secs => coalesce(d.heartbeat_interval_s,
      t.heartbeat_interval_s) * t.offline_after_intervals) AS offline_at
  FROM device_state ds JOIN devices d USING (tenant_id, device_id) JOIN tenants t USING (tenant_id)
  WHERE d.status = 'ACTIVE' AND ds.last_seen_at IS NOT NULL AND ds.status IN ('ONLINE', 'STALE')),
next AS (
  SELECT *, CASE WHEN :now >= offline_at THEN 'OFFLINE' WHEN :now >= stale_at THEN 'STALE' ELSE 'ONLINE' END AS status,
    CASE WHEN :now < stale_at THEN stale_at WHEN :now < offline_at THEN offline_at END AS due_at
  FROM timing),
changed AS (
  UPDATE device_state ds SET status = next.status, last_state_change_at = :now FROM next
  WHERE ds.tenant_id = next.tenant_id AND ds.device_id = next.device_id AND next.status <> next.old{owned_change}
    AND ds.last_seen_at = next.last_seen_at AND ds.status = next.old
  RETURNING next.*),
hist AS (INSERT INTO device_state_history (tenant_id, device_id, status, previous_status, changed_at)
  SELECT tenant_id, device_id, status, old, :now FROM changed),
soon AS (SELECT min(due_at) FILTER (WHERE CASE WHEN due_at < :horizon THEN {owned_soon} ELSE false END) AS next_due
  FROM next)
SELECT c.*, soon.next_due FROM soon LEFT JOIN changed c ON true
"""
NEXT_DUE_HORIZON = timedelta(seconds=5)
"""How far ahead a liveness pass looks for the next device to change (the evaluator runs a pass then, and at the
latest this long after the last one)."""


@dataclass(frozen=True)
class LivenessResult:
    transitions: list[tuple[str, str, str]]  # (tenant_id, device_id, new status)
    next_due: datetime | None  # the earliest change within NEXT_DUE_HORIZON if nothing is heard meanwhile


async def liveness_pass(conn: AsyncConnection, now: datetime, *, base_url: str = "",
                        grace_from: datetime | None = None, partitions: AbstractSet[int] | None = None
                        ) -> LivenessResult:
    """Move silent devices ONLINE → STALE → OFFLINE, record each transition, raise/clear NO_HEARTBEAT alerts.

    Only devices in `partitions` change (None: every device; empty: none). The partition is computed only for
    devices whose status would change or is due soon, so a partial owner's pass costs about what a full one does.

    A device in a maintenance window gets no NO_HEARTBEAT alert; one still silent when its window ends gets it then.

    Silence is counted from the later of the device's last message and `grace_from` (when ingest came back
    after an outage: devices get their full interval to be heard again). Returns the transitions and when the next
    one is due, so the caller can run the next pass right then instead of up to a cadence later.
    """
    if partitions is not None and not partitions:
        return LivenessResult([], None)
    owned = "true" if partitions is None else (
        f"{partition_sql('next.tenant_id', 'next.device_id')} = ANY(CAST(:parts AS int[]))")
    sql = _LIVENESS.format(owned_change="" if partitions is None else
                           f" AND CASE WHEN next.status <> next.old THEN {owned} ELSE false END", owned_soon=owned)
    params: dict[str, Any] = {"now": now, "grace": grace_from or datetime.min.replace(tzinfo=UTC),
                              "horizon": now + NEXT_DUE_HORIZON}
    if partitions is not None:
        params["parts"] = sorted(partitions)
    result = (await conn.execute(text(sql), params)).all()
    rows = [r for r in result if r.device_id is not None]
    next_due: datetime | None = result[0].next_due if result else None
    await notify_device_states(conn, [(r.tenant_id, r.device_id, r.status) for r in rows], changed_at=now)
    due: list[Any] = [r for r in rows if not (r.no_heartbeat_alert_on == "NEVER"
                                              or (r.no_heartbeat_alert_on == "OFFLINE" and r.status != "OFFLINE"))]
    held = {t: await devices_in_maintenance(conn, t, [r.device_id for r in due if r.tenant_id == t], now)
            for t in {r.tenant_id for r in due}}  # no alert for a device in a maintenance window
    due = [r for r in due if r.device_id not in held[r.tenant_id]]
    outlasted = [s for s in await silent_since_maintenance(conn, now)  # silences that outlasted their window
                 if partitions is None or partition_of(s.tenant_id, s.device_id) in partitions]
    for r in [*due, *outlasted]:
        silent_s = int((now - r.last_seen_at).total_seconds())
        await raise_alert(conn, AlertSignal(
            tenant_id=r.tenant_id, fingerprint=f"NO_HEARTBEAT:{r.device_id}", alert_type="NO_HEARTBEAT",
            severity=4 if r.status == "OFFLINE" else 3, title=f"{r.device_id} is {r.status}",
            summary=f"no message from {r.device_id} for {silent_s} s (heartbeat interval {r.iv} s)",
            device_id=r.device_id, site_id=r.site_id, value={"status": r.status, "silent_s": silent_s},
            triggered_at=now), now=now, base_url=base_url)
    return LivenessResult([(r.tenant_id, r.device_id, r.status) for r in rows], next_due)
