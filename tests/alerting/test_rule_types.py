"""MULTI, RATE, ANOMALY and GAP rules against a real database, with telemetry written by the real ingest writer."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting import worker
from pulse.alerting.evaluator import WINDOW_VERDICT_TTL, Evaluator
from pulse.alerting.rules import (
    AnomalySample,
    RateSample,
    anomaly_verdict,
    multi_verdict,
    parse_anomaly,
    parse_definition,
    parse_multi,
    parse_rate,
    rate_verdict,
)
from pulse.alerting.windows import anomaly_samples
from pulse.clock import FrozenClock
from pulse.db import system_tx
from pulse.errors import ValidationError
from pulse.ingest.validate import Accepted
from pulse.ingest.writer import BatchWriter
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant
from tests.ingest.conftest import eventually

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
_seq = itertools.count(1)


# --- validation -------------------------------------------------------------------------------------------------

RATE = {"metric": "temp_c", "op": "GT", "value": 2, "window_seconds": 300}
ANOMALY = {"metric": "temp_c", "window_seconds": 3600, "z_threshold": 3, "min_samples": 5}
COND = {"metric": "temp_c", "op": "GT", "value": 30}


@pytest.mark.parametrize(("rule_type", "definition", "field"), [
    ("RATE", {**RATE, "window_seconds": 59}, "definition.window_seconds"),
    ("RATE", {**RATE, "window_seconds": 86401}, "definition.window_seconds"),
    ("RATE", {**RATE, "window_seconds": "300"}, "definition.window_seconds"),
    ("RATE", {**RATE, "op": "EQ"}, "definition.op"),
    ("RATE", {**RATE, "clear_value": 3}, "definition.clear_value"),
    ("RATE", {k: v for k, v in RATE.items() if k != "metric"}, "definition.metric"),
    ("ANOMALY", {**ANOMALY, "min_samples": 2}, "definition.min_samples"),
    ("ANOMALY", {**ANOMALY, "z_threshold": 0}, "definition.z_threshold"),
    ("ANOMALY", {**ANOMALY, "z_threshold": -1.5}, "definition.z_threshold"),
    ("ANOMALY", {**ANOMALY, "clear_z": 4}, "definition.clear_z"),
    ("ANOMALY", {**ANOMALY, "window_seconds": 10}, "definition.window_seconds"),
    ("MULTI", {"conditions": []}, "definition.conditions"),
    ("MULTI", {"conditions": [COND] * 11}, "definition.conditions"),
    ("MULTI", {"conditions": [COND, {"op": "GT", "value": 1}]}, "definition.conditions[1].metric"),
    ("MULTI", {"conditions": [{**COND, "value": "hot"}]}, "definition.conditions[0].value"),
    ("MULTI", {"conditions": [COND], "match": "some"}, "definition.match"),
    ("GAP", {"metric": "temp_c", "gap_seconds": 30}, "definition.gap_seconds"),
    ("GAP", {"metric": "", "gap_seconds": 600}, "definition.metric"),
    ("GAP", {"metric": "temp_c", "gap_seconds": 600, "minutes": 10}, "definition.minutes"),
    ("SPIKE", {"metric": "temp_c"}, "rule_type"),
])
def test_invalid_definitions_name_the_field(rule_type: str, definition: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_definition(rule_type, definition)
    assert caught.value.field == field
    assert caught.value.details["field"] == field


def test_valid_definitions_parse_with_defaults() -> None:
    anomaly = parse_anomaly({"metric": "temp_c", "window_seconds": 3600})
    assert (anomaly.z_threshold, anomaly.min_samples, anomaly.clear_z) == (3.0, 10, None)
    assert parse_multi({"conditions": [COND]}).match == "all"
    assert parse_rate({**RATE, "op": "LT", "value": -2, "clear_value": -1}).clear_value == -1


# --- pure verdicts ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("match", "metrics", "state"), [
    ("all", {"temp_c": 35, "door_open": True}, "BREACH"),
    ("all", {"temp_c": 35}, "CLEAR"),                      # door_open missing: false, and cleared
    ("all", {"temp_c": 29, "door_open": True}, "HOLD"),    # temp below 30 but not yet at its clear_value 28
    ("all", {"temp_c": 28, "door_open": True}, "CLEAR"),
    ("any", {"door_open": True}, "BREACH"),                # temp_c missing: false, the other one suffices
    ("any", {"temp_c": 29, "door_open": False}, "HOLD"),   # nothing breaches, temp_c not past its clear_value
    ("any", {"temp_c": 27, "door_open": False}, "CLEAR"),
    ("any", {}, "CLEAR"),
])
def test_multi_combines_with_per_condition_hysteresis(match: str, metrics: dict[str, Any], state: str) -> None:
    d = parse_multi({"match": match, "conditions": [
        {"metric": "temp_c", "op": "GT", "value": 30, "clear_value": 28},
        {"metric": "door_open", "op": "EQ", "value": True}]})
    assert multi_verdict(d, metrics).state == state


def test_rate_needs_two_sample_times() -> None:
    d = parse_rate(RATE)
    assert rate_verdict(d, None).state == "HOLD"
    assert rate_verdict(d, RateSample(T0, 10.0, T0, 20.0)).state == "HOLD"
    assert rate_verdict(d, RateSample(T0, 10.0, T0 + timedelta(seconds=30), 12.0)).value == 4.0


_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(_finite, _finite, st.integers(min_value=3, max_value=1000))
def test_zero_variance_never_alerts(baseline: float, latest: float, n: int) -> None:
    d = parse_anomaly({"metric": "m", "window_seconds": 600, "min_samples": 3})
    assert anomaly_verdict(d, AnomalySample(latest, T0, n, baseline, 0.0)).state != "BREACH"


@given(_finite, st.floats(min_value=0.001, max_value=1e3), st.integers(min_value=0, max_value=9))
def test_fewer_than_min_samples_never_decides(latest: float, sd: float, n: int) -> None:
    d = parse_anomaly({"metric": "m", "window_seconds": 600, "min_samples": 10})
    assert anomaly_verdict(d, AnomalySample(latest, T0, n, 0.0, sd)).state == "HOLD"


# --- against the database ---------------------------------------------------------------------------------------

async def _rule(engine: AsyncEngine, tenant: TenantRef, rule_type: str, definition: dict[str, Any],
                **kw: Any) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text(
            "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition, for_seconds, tags) "
            "VALUES (:t, :n, :rt, :s, CAST(:d AS jsonb), :f, :tags) RETURNING rule_id"),
            {"t": tenant.tenant_id, "n": kw.get("name", rule_type.lower()), "rt": rule_type,
             "s": kw.get("severity", 3), "d": json.dumps(definition), "f": kw.get("for_seconds", 0),
             "tags": kw.get("tags", [])})).scalar_one())


async def _send(engine: AsyncEngine, tenant: TenantRef, device: str,
                messages: list[tuple[datetime, dict[str, Any]]], msg_type: str = "telemetry") -> None:
    """Write messages through ingest's batch writer (telemetry rows, device_state fold), one batch."""
    writer = BatchWriter(engine, FrozenClock(max(at for at, _ in messages)), batch_size=10_000, flush_ms=60_000)
    writer.start()
    try:
        for at, metrics in messages:
            await writer.submit(Accepted(
                tenant_id=tenant.tenant_id, device_id=device, site_id=None, msg_type=msg_type, ts=at,
                seq=next(_seq), metrics=metrics, lat=None, lng=None, received_at=at, transport="MQTT"))
        await writer.flush()
    finally:
        await writer.close()


def _series(start: datetime, step_s: int, metric: str, values: list[float]) -> list[tuple[datetime, dict[str, Any]]]:
    return [(start + timedelta(seconds=i * step_s), {metric: v}) for i, v in enumerate(values)]


async def _alerts(engine: AsyncEngine, tenant: TenantRef) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT alert_id::text, alert_type, device_id, status, metric, last_value, summary, close_reason "
            "FROM alerts WHERE tenant_id = :t AND alert_type <> 'NO_HEARTBEAT' ORDER BY opened_at, alert_id"),
            {"t": tenant.tenant_id})).all())


async def _events(engine: AsyncEngine, alert_id: str) -> list[str]:
    async with system_tx(engine) as conn:
        return [r[0] for r in await conn.execute(text(
            "SELECT kind FROM alert_events WHERE alert_id = CAST(:a AS uuid) ORDER BY event_id"), {"a": alert_id})]


async def _setup(engine: AsyncEngine, rule_type: str, definition: dict[str, Any],
                 **kw: Any) -> tuple[TenantRef, str, Evaluator]:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await _rule(engine, tenant, rule_type, definition, **kw)
    ev = Evaluator(engine)
    await ev.load_rules()
    return tenant, device, ev


async def test_multi_all_needs_every_condition_and_a_missing_metric_is_false(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "MULTI", {"match": "all", "conditions": [
        {"metric": "temp_c", "op": "GT", "value": 8, "clear_value": 6},
        {"metric": "door_open", "op": "EQ", "value": True}]})
    key = [(tenant.tenant_id, device)]
    await _send(engine, tenant, device, [(T0, {"temp_c": 12})])
    await ev.evaluate_devices(key, T0)
    assert await _alerts(engine, tenant) == []  # door_open never reported: false

    for s, metrics in ((10, {"door_open": True}), (20, {"temp_c": 13})):
        await _send(engine, tenant, device, [(T0 + timedelta(seconds=s), metrics)])
        await ev.evaluate_devices(key, T0 + timedelta(seconds=s))
    [alert] = await _alerts(engine, tenant)
    assert (alert.alert_type, alert.status) == ("THRESHOLD", "OPEN")
    assert alert.last_value == {"temp_c": 13, "door_open": True}

    await _send(engine, tenant, device, [(T0 + timedelta(seconds=30), {"temp_c": 7})])  # inside the hysteresis band
    await ev.evaluate_devices(key, T0 + timedelta(seconds=30))
    assert [a.status for a in await _alerts(engine, tenant)] == ["OPEN"]
    await _send(engine, tenant, device, [(T0 + timedelta(seconds=40), {"temp_c": 6})])
    await ev.evaluate_devices(key, T0 + timedelta(seconds=40))
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "CLOSED" and "temp_c is 6" in alert.close_reason
    assert await _events(engine, alert.alert_id) == ["OPENED", "CLOSED"]


async def test_multi_any_opens_on_one_condition_with_the_other_metric_missing(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "MULTI", {"match": "any", "conditions": [
        {"metric": "temp_c", "op": "GT", "value": 8}, {"metric": "humidity", "op": "GT", "value": 90}]})
    key = [(tenant.tenant_id, device)]
    await _send(engine, tenant, device, [(T0, {"temp_c": 5})])
    await ev.evaluate_devices(key, T0)
    assert await _alerts(engine, tenant) == []
    await _send(engine, tenant, device, [(T0 + timedelta(seconds=10), {"temp_c": 9})])
    await ev.evaluate_devices(key, T0 + timedelta(seconds=10))
    await ev.evaluate_devices(key, T0 + timedelta(seconds=11))
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "OPEN" and "humidity is missing" in alert.summary
    await _send(engine, tenant, device, [(T0 + timedelta(seconds=20), {"temp_c": 7})])
    await ev.evaluate_devices(key, T0 + timedelta(seconds=20))
    assert [a.status for a in await _alerts(engine, tenant)] == ["CLOSED"]


async def test_multi_for_seconds_applies_to_the_combination(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "MULTI", {"match": "all", "conditions": [
        {"metric": "a", "op": "GT", "value": 1}, {"metric": "b", "op": "GT", "value": 1}]}, for_seconds=60)
    key = [(tenant.tenant_id, device)]
    await _send(engine, tenant, device, [(T0, {"a": 2, "b": 2})])
    await ev.evaluate_devices(key, T0)
    await _send(engine, tenant, device, [(T0 + timedelta(seconds=30), {"b": 0})])  # the combination breaks
    await ev.evaluate_devices(key, T0 + timedelta(seconds=30))
    await _send(engine, tenant, device, [(T0 + timedelta(seconds=40), {"b": 2})])
    await ev.evaluate_devices(key, T0 + timedelta(seconds=40))
    assert ev.due_pending(T0 + timedelta(seconds=90)) == set()
    due = ev.due_pending(T0 + timedelta(seconds=100))
    assert due == {(tenant.tenant_id, device)}
    await ev.evaluate_devices(due, T0 + timedelta(seconds=100))
    assert [a.status for a in await _alerts(engine, tenant)] == ["OPEN"]
    assert ev.due_pending(T0 + timedelta(seconds=200)) == set()  # open: nothing left to wait for


async def test_rate_opens_on_a_rising_series_and_closes_when_flat(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "RATE", {"metric": "temp_c", "op": "GT", "value": 2,
                                                        "clear_value": 1, "window_seconds": 300})
    key = [(tenant.tenant_id, device)]
    await _send(engine, tenant, device, [(T0, {"temp_c": 20.0})])
    await ev.evaluate_devices(key, T0)
    assert await _alerts(engine, tenant) == []  # one sample: no decision

    # +1 °C every 20 s: 3 °C/min. Heartbeats in between (one even carrying temp_c) are not samples.
    rising = _series(T0 + timedelta(seconds=20), 20, "temp_c", [21.0 + i for i in range(9)])
    await _send(engine, tenant, device, rising)
    await _send(engine, tenant, device, [(T0 + timedelta(seconds=185), {"temp_c": -50.0})], msg_type="heartbeat")
    for s in (180, 185):
        await ev.evaluate_devices(key, T0 + timedelta(seconds=s))
    [alert] = await _alerts(engine, tenant)
    assert (alert.alert_type, alert.status, alert.metric, alert.last_value) == ("RATE", "OPEN", "temp_c", 3.0)

    flat = _series(T0 + timedelta(seconds=200), 20, "temp_c", [29.0] * 17)  # the window ends up all flat
    await _send(engine, tenant, device, flat[:5])
    await ev.evaluate_devices(key, T0 + timedelta(seconds=280))
    [alert] = await _alerts(engine, tenant)  # 20 → 29 over the 280 s in the window: 1.93/min, not below 1 yet
    assert alert.status == "OPEN"
    await _send(engine, tenant, device, flat[5:])
    await ev.evaluate_devices(key, T0 + timedelta(seconds=520))
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "CLOSED" and "+0/min" in alert.close_reason
    assert await _events(engine, alert.alert_id) == ["OPENED", "CLOSED"]


async def test_rate_falling_limit_and_devices_without_samples(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "RATE", {"metric": "pressure", "op": "LT", "value": -5,
                                                        "window_seconds": 600})
    quiet = await make_device(engine, tenant)
    await _send(engine, tenant, device, _series(T0, 60, "pressure", [100, 90, 80]))
    await _send(engine, tenant, quiet, [(T0, {"other": 1})])
    await ev.evaluate_devices([(tenant.tenant_id, device), (tenant.tenant_id, quiet)], T0 + timedelta(minutes=2))
    [alert] = await _alerts(engine, tenant)
    assert alert.device_id == device and alert.last_value == -10.0


async def test_rate_verdict_is_reused_until_the_metric_has_a_new_sample(engine: AsyncEngine) -> None:
    """Messages without the rule's metric reuse its verdict; a new sample of the metric is judged at once."""
    tenant, device, ev = await _setup(engine, "RATE", {"metric": "temp_c", "op": "GT", "value": 2,
                                                        "window_seconds": 600})
    key = [(tenant.tenant_id, device)]
    await _send(engine, tenant, device, _series(T0, 60, "temp_c", [20.0, 20.0, 20.0]))
    await ev.evaluate_devices(key, T0 + timedelta(minutes=2))
    for s in range(1, 4):  # other metrics only: nothing to judge anew
        await _send(engine, tenant, device, [(T0 + timedelta(minutes=2, seconds=s), {"humidity": 40 + s})])
        await ev.evaluate_devices(key, T0 + timedelta(minutes=2, seconds=s))
    assert await _alerts(engine, tenant) == []

    await _send(engine, tenant, device, [(T0 + timedelta(minutes=3), {"temp_c": 28.0})])  # 20 → 28 in 3 min
    await ev.evaluate_devices(key, T0 + timedelta(minutes=3))
    [alert] = await _alerts(engine, tenant)
    assert (alert.status, alert.last_value) == ("OPEN", round(8 / 3, 6))


async def test_anomaly_verdict_takes_in_a_late_sample_after_the_reuse_limit(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "ANOMALY", {"metric": "temp_c", "window_seconds": 3600,
                                                           "z_threshold": 3, "min_samples": 6})
    key = [(tenant.tenant_id, device)]
    baseline = [20.0, 20.5, 19.5, 20.2, 19.8]
    await _send(engine, tenant, device, _series(T0, 60, "temp_c", [*baseline, 30.0]))
    now = T0 + timedelta(minutes=6)
    await ev.evaluate_devices(key, now)
    assert await _alerts(engine, tenant) == []  # 5 baseline samples: no decision yet
    # The sixth baseline sample arrives late, timed before the outlier: the outlier now has its 6 samples.
    await _send(engine, tenant, device, [(T0 + timedelta(minutes=4, seconds=30), {"temp_c": 20.0})])
    await ev.evaluate_devices(key, now + WINDOW_VERDICT_TTL)
    [alert] = await _alerts(engine, tenant)
    assert (alert.alert_type, alert.status, alert.last_value) == ("ANOMALY", "OPEN", 30.0)


async def test_anomaly_opens_on_an_outlier_after_min_samples_and_closes(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "ANOMALY", {"metric": "temp_c", "window_seconds": 3600,
                                                           "z_threshold": 3, "min_samples": 6})
    key = [(tenant.tenant_id, device)]
    baseline = [20.0, 20.5, 19.5, 20.2, 19.8, 20.0]
    await _send(engine, tenant, device, _series(T0, 60, "temp_c", [*baseline[:5], 30.0]))
    await ev.evaluate_devices(key, T0 + timedelta(minutes=5))
    assert await _alerts(engine, tenant) == []  # the outlier comes after 5 samples only

    await _send(engine, tenant, device, _series(T0 + timedelta(minutes=6), 60, "temp_c", [*baseline, 30.0]))
    now = T0 + timedelta(minutes=12)
    await ev.evaluate_devices(key, now)
    await _send(engine, tenant, device, [(now, {"seen": 1})], msg_type="heartbeat")
    await ev.evaluate_devices(key, now + timedelta(seconds=5))
    [alert] = await _alerts(engine, tenant)
    assert (alert.alert_type, alert.status, alert.last_value) == ("ANOMALY", "OPEN", 30.0)
    assert "z = +" in alert.summary

    await _send(engine, tenant, device, [(T0 + timedelta(minutes=13), {"temp_c": 20.1})])
    await ev.evaluate_devices(key, T0 + timedelta(minutes=13))
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "CLOSED"
    assert await _events(engine, alert.alert_id) == ["OPENED", "CLOSED"]


async def test_anomaly_baseline_moved_on_sample_by_sample_matches_the_whole_window(engine: AsyncEngine) -> None:
    """The evaluator moves a device's ANOMALY baseline on by the samples that entered and left it; at every step it
    equals the baseline read whole, also across other metrics, a non-numeric value and a flat stretch."""
    definition = {"metric": "temp_c", "window_seconds": 600, "z_threshold": 50, "min_samples": 3}
    tenant, device, ev = await _setup(engine, "ANOMALY", definition)
    [rule] = ev.rule_index[tenant.tenant_id].rules
    values: list[Any] = [20.5, 21.25, 19.0, 22.75, 18.5, 20.0, 23.5, 17.25, 21.0, 19.75, 24.0, 16.5, "n/a", 22.0,
                         *[20.0] * 12, 21.5, 18.0]
    now = T0 + timedelta(minutes=len(values) + 1)
    moved = 0
    for i, value in enumerate(values):
        at = T0 + timedelta(minutes=i)
        await _send(engine, tenant, device, [(at, {"temp_c": value}), (at + timedelta(seconds=20), {"rpm": i})])
        now += timedelta(seconds=1)  # well within the reuse limit: only the first evaluation reads it whole
        await ev.evaluate_devices([(tenant.tenant_id, device)], now)
        async with system_tx(engine) as conn:
            whole = (await anomaly_samples(conn, tenant.tenant_id, [device], "temp_c", 600)).get(device)
        baseline = ev.baselines.get((rule.rule_id, device))
        if baseline is None:  # fewer than 2 samples, or no variance: read whole every time
            assert whole is None or whole.count < 2 or whole.stddev == 0
            continue
        moved += baseline.full_at != now
        assert whole is not None and baseline.latest_at == whole.latest_at
        kept = baseline.sample(whole.latest)
        assert kept.count == whole.count
        assert kept.mean == pytest.approx(whole.mean, rel=1e-12)
        assert kept.stddev == pytest.approx(whole.stddev, rel=1e-9)
    assert moved >= 15
    assert await _alerts(engine, tenant) == []


async def test_anomaly_never_alerts_on_zero_variance(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "ANOMALY", {"metric": "temp_c", "window_seconds": 3600,
                                                           "min_samples": 3})
    await _send(engine, tenant, device, _series(T0, 60, "temp_c", [20.1] * 10 + [500.0]))
    await ev.evaluate_devices([(tenant.tenant_id, device)], T0 + timedelta(minutes=10))
    assert await _alerts(engine, tenant) == []


async def test_gap_opens_without_new_data_and_closes_when_the_metric_returns(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "GAP", {"metric": "temp_c", "gap_seconds": 600}, severity=4)
    never = await make_device(engine, tenant)  # reports humidity only: temp_c is not watched there
    await _send(engine, tenant, never, [(T0, {"humidity": 40})])
    key = [(tenant.tenant_id, device)]
    await _send(engine, tenant, device, [(T0, {"temp_c": 4.0})])
    await ev.evaluate_devices(key, T0)
    await ev.check_gaps(T0 + timedelta(minutes=9))
    assert await _alerts(engine, tenant) == []

    # Heartbeats keep coming (one carrying temp_c), telemetry without temp_c too; none of it is temp_c telemetry.
    await _send(engine, tenant, device, [(T0 + timedelta(minutes=9, seconds=30), {"temp_c": 4.0})],
                msg_type="heartbeat")
    await _send(engine, tenant, device, [(T0 + timedelta(minutes=9, seconds=40), {"door_open": False})])
    await ev.check_gaps(T0 + timedelta(minutes=11))
    await ev.check_gaps(T0 + timedelta(minutes=11, seconds=5))  # within GAP_CHECK_EVERY: skipped
    await ev.check_gaps(T0 + timedelta(minutes=11, seconds=20))
    [alert] = await _alerts(engine, tenant)
    assert (alert.alert_type, alert.device_id, alert.status, alert.metric) == ("NO_TELEMETRY", device, "OPEN", "temp_c")

    await _send(engine, tenant, device, [(T0 + timedelta(minutes=12), {"temp_c": 4.0})], msg_type="heartbeat")
    await ev.evaluate_devices(key, T0 + timedelta(minutes=12))
    await ev.check_gaps(T0 + timedelta(minutes=12, seconds=30))
    assert [a.status for a in await _alerts(engine, tenant)] == ["OPEN"]

    await _send(engine, tenant, device, [(T0 + timedelta(minutes=13), {"temp_c": 4.2})])
    await ev.evaluate_devices(key, T0 + timedelta(minutes=13))  # closed as the metric arrives, no pass needed
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "CLOSED" and alert.close_reason == "temp_c is reported again"
    assert await _events(engine, alert.alert_id) == ["OPENED", "CLOSED"]

    await ev.check_gaps(T0 + timedelta(minutes=24))  # silent again: a new episode
    assert [a.status for a in await _alerts(engine, tenant)] == ["CLOSED", "OPEN"]


async def test_gap_waits_while_ingest_is_down_and_for_a_full_gap_after(engine: AsyncEngine) -> None:
    tenant, device, ev = await _setup(engine, "GAP", {"metric": "temp_c", "gap_seconds": 300}, tags=["cold"])
    other = await make_device(engine, tenant, tags=["office"])
    await _send(engine, tenant, other, [(T0, {"temp_c": 20})])
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE devices SET tags = '{cold}' WHERE tenant_id = :t AND device_id = :d"),
                           {"t": tenant.tenant_id, "d": device})
    await _send(engine, tenant, device, [(T0, {"temp_c": 4})])
    await ev.check_gaps(T0 + timedelta(minutes=10), paused=True)
    await ev.check_gaps(T0 + timedelta(minutes=11), grace_from=T0 + timedelta(minutes=8))
    assert await _alerts(engine, tenant) == []
    await ev.check_gaps(T0 + timedelta(minutes=13), grace_from=T0 + timedelta(minutes=8))
    assert [(a.device_id, a.status) for a in await _alerts(engine, tenant)] == [(device, "OPEN")]


async def test_evaluate_process_opens_a_gap_alert_for_a_silent_device(engine: AsyncEngine,
                                                                       settings: Settings) -> None:
    tenant, device, _ = await _setup(engine, "GAP", {"metric": "temp_c", "gap_seconds": 120})
    await _send(engine, tenant, device, [(T0, {"temp_c": 4})])
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(settings.replace(health_port=0), stop,
                                          clock=FrozenClock(T0 + timedelta(minutes=5))))

    async def opened() -> bool:
        return [a.alert_type for a in await _alerts(engine, tenant)] == ["NO_TELEMETRY"]

    try:
        await eventually(opened, timeout=20, what="the NO_TELEMETRY alert")
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


async def test_invalid_stored_rule_is_skipped_and_the_rest_load(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    await _rule(engine, tenant, "ANOMALY", {"metric": "temp_c", "window_seconds": 3600, "min_samples": 1})
    good = await _rule(engine, tenant, "GAP", {"metric": "temp_c", "gap_seconds": 600})
    ev = Evaluator(engine)
    await ev.load_rules()
    assert [r.rule_id for r in ev.rules_by_tenant[tenant.tenant_id]] == [good]
