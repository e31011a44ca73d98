"""Threshold rules and liveness against a real database: one alert per episode, events for every change."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.evaluator import Evaluator, liveness_pass
from pulse.alerting.rules import compare, is_cleared, parse_threshold
from pulse.alerting.service import acknowledge_alert, close_alert
from pulse.db import system_tx
from tests.conftest import TenantRef, make_device, make_tenant

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("op", "observed", "threshold", "expected"), [
    ("GT", 30, 30, False), ("GT", 30.0001, 30, True), ("GTE", 30, 30, True), ("GTE", 29.99, 30, False),
    ("LT", 30, 30, False), ("LT", 29, 30, True), ("LTE", 30, 30, True), ("LTE", 31, 30, False),
    ("EQ", 30, 30.0, True), ("EQ", 31, 30, False), ("NEQ", 31, 30, True), ("NEQ", 30, 30, False),
    ("GT", None, 30, False), ("GT", "hot", 30, False), ("GT", True, 0, False),
    ("EQ", True, True, True), ("EQ", "open", "open", True), ("NEQ", "open", "closed", True),
])
def test_operator_boundaries(op: str, observed: Any, threshold: Any, expected: bool) -> None:
    assert compare(op, observed, threshold) is expected


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False))
def test_gt_and_lte_are_complements(a: float, b: float) -> None:
    assert compare("GT", a, b) != compare("LTE", a, b)


def test_hysteresis_clear_value() -> None:
    d = parse_threshold({"metric": "temp_c", "op": "GT", "value": 30, "clear_value": 28})
    assert not is_cleared(d, 31)
    assert not is_cleared(d, 29)  # below the limit but not yet past the clear threshold
    assert is_cleared(d, 28)


async def _rule(engine: AsyncEngine, tenant: TenantRef, definition: dict[str, Any], **kw: Any) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text(
            "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition, for_seconds, tags) "
            "VALUES (:t, :n, 'THRESHOLD', :s, CAST(:d AS jsonb), :f, :tags) RETURNING rule_id"),
            {"t": tenant.tenant_id, "n": kw.get("name", "hot"), "s": kw.get("severity", 4),
             "d": json.dumps(definition), "f": kw.get("for_seconds", 0), "tags": kw.get("tags", [])})).scalar_one())


async def _one_rule(engine: AsyncEngine, definition: dict[str, Any]
                    ) -> tuple[TenantRef, str, Evaluator, list[tuple[str, str]]]:
    """A tenant with one device and one THRESHOLD rule, and an evaluator holding it."""
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await _rule(engine, tenant, definition)
    ev = Evaluator(engine)
    await ev.load_rules()
    return tenant, device, ev, [(tenant.tenant_id, device)]


async def _rule_id(engine: AsyncEngine, tenant: TenantRef) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text("SELECT rule_id FROM alert_rules WHERE tenant_id = :t"),
                                       {"t": tenant.tenant_id})).scalar_one())


async def _report(engine: AsyncEngine, tenant: TenantRef, device: str, at: datetime, **metrics: Any) -> None:
    """What ingest does per batch: merge the latest metric values into device_state."""
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "UPDATE device_state SET latest_metrics = latest_metrics || CAST(:m AS jsonb), last_seen_at = :at, "
            "last_telemetry_at = :at, updated_at = :at WHERE tenant_id = :t AND device_id = :d"),
            {"m": json.dumps(metrics), "at": at, "t": tenant.tenant_id, "d": device})


async def _alerts(engine: AsyncEngine, tenant: TenantRef) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT alert_id::text, status, occurrence_count, close_reason, last_value, triggered_at, detected_at "
            "FROM alerts WHERE tenant_id = :t ORDER BY opened_at"), {"t": tenant.tenant_id})).all())


async def _events(engine: AsyncEngine, alert_id: str) -> list[str]:
    async with system_tx(engine) as conn:
        return [r[0] for r in await conn.execute(text(
            "SELECT kind FROM alert_events WHERE alert_id = CAST(:a AS uuid) ORDER BY event_id"), {"a": alert_id})]


async def test_threshold_lifecycle_opens_updates_and_closes_one_alert(engine: AsyncEngine) -> None:
    tenant, device, ev, key = await _one_rule(engine, {"metric": "temp_c", "op": "GT", "value": 30})

    await _report(engine, tenant, device, T0, temp_c=30)
    await ev.evaluate_devices(key, T0)
    assert await _alerts(engine, tenant) == []  # GT 30 with 30: no alert

    await _report(engine, tenant, device, T0 + timedelta(seconds=1), temp_c=31.5)
    await ev.evaluate_devices(key, T0 + timedelta(seconds=1))
    await _report(engine, tenant, device, T0 + timedelta(seconds=2), temp_c=33)
    await ev.evaluate_devices(key, T0 + timedelta(seconds=2))
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "OPEN" and alert.occurrence_count == 2 and alert.last_value == 33
    assert alert.triggered_at == T0 + timedelta(seconds=1)

    await _report(engine, tenant, device, T0 + timedelta(seconds=3), temp_c=25)
    await ev.evaluate_devices(key, T0 + timedelta(seconds=3))
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "CLOSED" and "cleared" in alert.close_reason
    assert await _events(engine, alert.alert_id) == ["OPENED", "CLOSED"]


async def test_acknowledged_alert_stays_acknowledged_then_closes_on_clear(engine: AsyncEngine) -> None:
    tenant, device, ev, key = await _one_rule(engine, {"metric": "temp_c", "op": "GT", "value": 30})
    await _report(engine, tenant, device, T0, temp_c=40)
    await ev.evaluate_devices(key, T0)
    [alert] = await _alerts(engine, tenant)
    async with system_tx(engine) as conn:
        await acknowledge_alert(conn, tenant.tenant_id, alert.alert_id, actor="alice", now=T0)
    await _report(engine, tenant, device, T0 + timedelta(seconds=5), temp_c=41)
    await ev.evaluate_devices(key, T0 + timedelta(seconds=5))
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "ACKNOWLEDGED" and alert.occurrence_count == 2
    await _report(engine, tenant, device, T0 + timedelta(seconds=9), temp_c=20)
    await ev.evaluate_devices(key, T0 + timedelta(seconds=9))
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "CLOSED"
    assert await _events(engine, alert.alert_id) == ["OPENED", "ACKNOWLEDGED", "CLOSED"]


async def test_manual_close_then_new_breach_opens_a_new_alert(engine: AsyncEngine) -> None:
    tenant, device, ev, key = await _one_rule(engine, {"metric": "temp_c", "op": "GT", "value": 30})
    await _report(engine, tenant, device, T0, temp_c=35)
    await ev.evaluate_devices(key, T0)
    [first] = await _alerts(engine, tenant)
    async with system_tx(engine) as conn:
        await close_alert(conn, tenant.tenant_id, first.alert_id, actor="bob", reason="fixed the door", now=T0)
    await _report(engine, tenant, device, T0 + timedelta(seconds=1), temp_c=36)
    await ev.evaluate_devices(key, T0 + timedelta(seconds=1))
    alerts = await _alerts(engine, tenant)
    assert [a.status for a in alerts] == ["CLOSED", "OPEN"]


async def test_two_evaluators_racing_open_exactly_one_alert(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    devices = [await make_device(engine, tenant) for _ in range(5)]
    await _rule(engine, tenant, {"metric": "temp_c", "op": "GT", "value": 30})
    for d in devices:
        await _report(engine, tenant, d, T0, temp_c=50)
    evaluators = [Evaluator(engine) for _ in range(4)]
    for ev in evaluators:
        await ev.load_rules()
    keys = [(tenant.tenant_id, d) for d in devices]
    await asyncio.gather(*(ev.evaluate_devices(keys, T0) for ev in evaluators))
    alerts = await _alerts(engine, tenant)
    assert len(alerts) == len(devices)
    assert sum(a.occurrence_count for a in alerts) == len(devices) * len(evaluators)
    for a in alerts:
        assert (await _events(engine, a.alert_id)).count("OPENED") == 1


async def test_heartbeat_between_breaches_does_not_close_the_alert(engine: AsyncEngine) -> None:
    tenant, device, ev, key = await _one_rule(engine, {"metric": "temp_c", "op": "GT", "value": 30})
    await _report(engine, tenant, device, T0, temp_c=35)
    await ev.evaluate_devices(key, T0)
    async with system_tx(engine) as conn:  # a heartbeat: a sign of life, no metrics
        await conn.execute(text("UPDATE device_state SET last_seen_at = :at, last_heartbeat_at = :at "
                                "WHERE tenant_id = :t AND device_id = :d"),
                           {"at": T0 + timedelta(seconds=1), "t": tenant.tenant_id, "d": device})
    await ev.evaluate_devices(key, T0 + timedelta(seconds=1))
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "OPEN"


async def test_for_seconds_needs_the_condition_to_hold_for_the_window(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await _rule(engine, tenant, {"metric": "temp_c", "op": "GT", "value": 30}, for_seconds=60)
    ev = Evaluator(engine)
    await ev.load_rules()
    key = [(tenant.tenant_id, device)]
    await _report(engine, tenant, device, T0, temp_c=35)
    await ev.evaluate_devices(key, T0)
    await _report(engine, tenant, device, T0 + timedelta(seconds=30), temp_c=20)  # a dip resets the window
    await ev.evaluate_devices(key, T0 + timedelta(seconds=30))
    await _report(engine, tenant, device, T0 + timedelta(seconds=40), temp_c=35)
    await ev.evaluate_devices(key, T0 + timedelta(seconds=40))
    assert ev.due_pending(T0 + timedelta(seconds=90)) == set()
    assert await _alerts(engine, tenant) == []
    due = ev.due_pending(T0 + timedelta(seconds=100))
    assert due == {(tenant.tenant_id, device)}
    await ev.evaluate_devices(due, T0 + timedelta(seconds=100))
    assert len(await _alerts(engine, tenant)) == 1


async def _reading(engine: AsyncEngine, tenant: TenantRef, device: str, at: datetime, **metrics: Any) -> None:
    """As ingest writes a batch: the metrics' values and their readings' times."""
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "UPDATE device_state SET latest_metrics = latest_metrics || CAST(:m AS jsonb), "
            "latest_metrics_at = latest_metrics_at || CAST(:mat AS jsonb), last_seen_at = :at, "
            "last_telemetry_at = :at, updated_at = :at WHERE tenant_id = :t AND device_id = :d"),
            {"m": json.dumps(metrics), "mat": json.dumps(dict.fromkeys(metrics, at.isoformat())), "at": at,
             "t": tenant.tenant_id, "d": device})


async def test_an_open_alert_counts_breaching_readings_not_messages_about_other_metrics(engine: AsyncEngine) -> None:
    tenant, device, ev, key = await _one_rule(engine, {"metric": "temp_c", "op": "GT", "value": 30})
    await _reading(engine, tenant, device, T0, temp_c=35)
    await ev.evaluate_devices(key, T0)
    for s in range(1, 4):  # the device goes on reporting humidity only: temp_c is still 35, but no new reading
        await _reading(engine, tenant, device, T0 + timedelta(seconds=s), humidity=40 + s)
        await ev.evaluate_devices(key, T0 + timedelta(seconds=s))
    [alert] = await _alerts(engine, tenant)
    assert (alert.status, alert.occurrence_count) == ("OPEN", 1)
    await _reading(engine, tenant, device, T0 + timedelta(seconds=5), temp_c=35)  # the same value, a new reading
    await ev.evaluate_devices(key, T0 + timedelta(seconds=5))
    [alert] = await _alerts(engine, tenant)
    assert (alert.status, alert.occurrence_count) == ("OPEN", 2)


async def test_an_edited_rule_judges_the_latest_readings_again(engine: AsyncEngine) -> None:
    tenant, device, ev, key = await _one_rule(engine, {"metric": "temp_c", "op": "GT", "value": 30})
    rule_id = await _rule_id(engine, tenant)
    await _reading(engine, tenant, device, T0, temp_c=25)
    await ev.evaluate_devices(key, T0)
    assert await _alerts(engine, tenant) == []
    async with system_tx(engine) as conn:  # the limit is lowered below the value the device last reported
        await conn.execute(text("UPDATE alert_rules SET definition = CAST(:d AS jsonb) WHERE rule_id = "
                                "CAST(:r AS uuid)"), {"d": json.dumps({"metric": "temp_c", "op": "GT", "value": 20}),
                                                      "r": rule_id})
    await ev.load_rules()
    await _reading(engine, tenant, device, T0 + timedelta(seconds=1), humidity=40)
    await ev.evaluate_devices(key, T0 + timedelta(seconds=1))
    [alert] = await _alerts(engine, tenant)
    assert (alert.status, alert.last_value) == ("OPEN", 25)


async def test_a_manually_closed_alert_is_judged_again_on_the_next_message(engine: AsyncEngine) -> None:
    tenant, device, ev, key = await _one_rule(engine, {"metric": "temp_c", "op": "GT", "value": 30})
    await _reading(engine, tenant, device, T0, temp_c=35)
    await ev.evaluate_devices(key, T0)
    [first] = await _alerts(engine, tenant)
    async with system_tx(engine) as conn:
        await close_alert(conn, tenant.tenant_id, first.alert_id, actor="bob", reason="looked at it", now=T0)
    await _reading(engine, tenant, device, T0 + timedelta(seconds=1), humidity=40)  # temp_c still 35
    await ev.evaluate_devices(key, T0 + timedelta(seconds=1))
    assert [a.status for a in await _alerts(engine, tenant)] == ["CLOSED", "OPEN"]


async def test_rule_scoped_by_tag_ignores_other_devices(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    freezer = await make_device(engine, tenant, tags=["freezer"])
    other = await make_device(engine, tenant, tags=["office"])
    await _rule(engine, tenant, {"metric": "temp_c", "op": "GT", "value": -10}, tags=["freezer"])
    ev = Evaluator(engine)
    await ev.load_rules()
    for d in (freezer, other):
        await _report(engine, tenant, d, T0, temp_c=5)
    await ev.evaluate_devices([(tenant.tenant_id, freezer), (tenant.tenant_id, other)], T0)
    async with system_tx(engine) as conn:
        devices = [r[0] for r in await conn.execute(text("SELECT device_id FROM alerts WHERE tenant_id = :t"),
                                                     {"t": tenant.tenant_id})]
    assert devices == [freezer]


async def _online_device(engine: AsyncEngine) -> tuple[TenantRef, str, Evaluator, list[tuple[str, str]]]:
    """A device (heartbeat interval 30 s) that reported at T0 and was evaluated: ONLINE."""
    tenant = await make_tenant(engine, heartbeat_interval_s=30)
    device = await make_device(engine, tenant)
    ev = Evaluator(engine)
    await ev.load_rules()
    key = [(tenant.tenant_id, device)]
    await _report(engine, tenant, device, T0, temp_c=20)
    await ev.evaluate_devices(key, T0)
    return tenant, device, ev, key


async def _status(engine: AsyncEngine, tenant: TenantRef, device: str) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text("SELECT status FROM device_state WHERE tenant_id = :t AND device_id = :d"),
                                       {"t": tenant.tenant_id, "d": device})).scalar_one())


async def _history(engine: AsyncEngine, tenant: TenantRef, device: str) -> list[str]:
    async with system_tx(engine) as conn:
        return [r[0] for r in await conn.execute(text(
            "SELECT status FROM device_state_history WHERE tenant_id = :t AND device_id = :d ORDER BY history_id"),
            {"t": tenant.tenant_id, "d": device})]


async def test_a_message_committed_while_the_liveness_pass_runs_keeps_the_device_online(engine: AsyncEngine) -> None:
    """The pass decides from its statement's snapshot; a device whose message commits before the pass can write its
    row (here: ingest holds the row until the pass waits for it) must not be marked STALE after all."""
    tenant, device, _, _ = await _online_device(engine)
    now = T0 + timedelta(seconds=31)  # one interval and a second of silence, as the pass's snapshot sees it

    async with engine.connect() as ingest:  # a batch of ingest's, not yet committed
        tx = await ingest.begin()
        await ingest.execute(text("UPDATE device_state SET last_seen_at = :at WHERE tenant_id = :t AND device_id = :d"),
                             {"at": now - timedelta(seconds=1), "t": tenant.tenant_id, "d": device})

        async def run_pass() -> None:
            async with system_tx(engine) as conn:
                await liveness_pass(conn, now)
        passing = asyncio.create_task(run_pass())
        async with engine.connect() as probe:  # until the pass waits for ingest's row
            for _ in range(200):
                waiting = (await probe.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
                    "AND query LIKE '%WITH timing AS%'"))).scalar_one()
                await probe.commit()
                if waiting:
                    break
                await asyncio.sleep(0.02)
        assert waiting, "the liveness pass never waited for the device's row"
        await tx.commit()
        await passing

    assert await _status(engine, tenant, device) == "ONLINE"
    assert await _history(engine, tenant, device) == ["ONLINE"]


async def test_marking_a_device_online_skips_a_row_ingest_holds_and_marks_it_on_the_next_wake_up(
        engine: AsyncEngine) -> None:
    """Ingest's batch update and the evaluator's ONLINE mark take device_state rows in different orders; waiting for
    ingest's rows deadlocked. The evaluator now leaves a held row (ingest's commit wakes it for the device again)."""
    tenant, device, ev, key = await _online_device(engine)
    async with system_tx(engine) as conn:
        await liveness_pass(conn, T0 + timedelta(seconds=31))
    await _report(engine, tenant, device, T0 + timedelta(seconds=40), temp_c=21)  # it speaks again
    assert await _status(engine, tenant, device) == "STALE"
    async with engine.connect() as ingest:  # ingest's next batch holds the row, not yet committed
        tx = await ingest.begin()
        await ingest.execute(text("UPDATE device_state SET last_seen_at = :at WHERE tenant_id = :t AND device_id = :d"),
                             {"at": T0 + timedelta(seconds=41), "t": tenant.tenant_id, "d": device})
        await asyncio.wait_for(ev.evaluate_devices(key, T0 + timedelta(seconds=41)), 30)  # does not wait for it
        assert await _status(engine, tenant, device) == "STALE"
        await tx.commit()
    await ev.evaluate_devices(key, T0 + timedelta(seconds=42))  # the wake-up of ingest's commit
    assert await _status(engine, tenant, device) == "ONLINE"


async def test_liveness_stale_offline_and_back_online(engine: AsyncEngine) -> None:
    tenant, device, ev, key = await _online_device(engine)

    async def status() -> str:
        return await _status(engine, tenant, device)

    assert await status() == "ONLINE"
    for seconds, expected in ((29, "ONLINE"), (30, "STALE"), (149, "STALE"), (150, "OFFLINE")):
        async with system_tx(engine) as conn:
            await liveness_pass(conn, T0 + timedelta(seconds=seconds))
        assert await status() == expected, seconds
    [alert] = await _alerts(engine, tenant)  # default: NO_HEARTBEAT opens when OFFLINE
    assert alert.status == "OPEN"
    await _report(engine, tenant, device, T0 + timedelta(seconds=200), temp_c=21)
    await ev.evaluate_devices(key, T0 + timedelta(seconds=200))
    assert await status() == "ONLINE"
    [alert] = await _alerts(engine, tenant)
    assert alert.status == "CLOSED"
    assert await _history(engine, tenant, device) == ["ONLINE", "STALE", "OFFLINE", "ONLINE"]
