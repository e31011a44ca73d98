"""`pulse evaluate` as a loop: woken by ingest's NOTIFY, and still hearing it after the database link broke."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting import worker
from pulse.alerting.evaluator import NEXT_DUE_HORIZON, LivenessResult
from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant
from tests.ingest.conftest import TcpLink, eventually


async def _report_and_notify(engine: AsyncEngine, tenant_id: str, device_id: str, temp_c: float) -> None:
    """What ingest does for a batch: new latest values, then one NOTIFY naming the device."""
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "UPDATE device_state SET latest_metrics = latest_metrics || CAST(:m AS jsonb), last_seen_at = now(), "
            "last_telemetry_at = now(), updated_at = now() WHERE tenant_id = :t AND device_id = :d"),
            {"m": json.dumps({"temp_c": temp_c}), "t": tenant_id, "d": device_id})
        await conn.execute(text("SELECT pg_notify('pulse_telemetry', :p)"),
                           {"p": json.dumps([[tenant_id, device_id]])})


async def test_evaluator_reconnects_its_listener_after_the_database_link_breaks(
        engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition) "
            "VALUES (:t, 'hot', 'THRESHOLD', 4, '{\"metric\": \"temp_c\", \"op\": \"GT\", \"value\": 30}')"),
            {"t": tenant.tenant_id})
    url = settings.require_database_url()
    parts = urlsplit(url)
    link = TcpLink(parts.hostname or "127.0.0.1", parts.port or 5432)
    await link.start()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(settings.replace(database_url=link.url_for(url), health_port=0), stop))

    async def alerts() -> int:
        async with system_tx(engine) as conn:
            return int((await conn.execute(text("SELECT count(*) FROM alerts WHERE tenant_id = :t AND status = 'OPEN'"),
                                           {"t": tenant.tenant_id})).scalar_one())

    try:
        await _report_and_notify(engine, tenant.tenant_id, device, 31)
        await eventually(lambda: _at_least(alerts, 1), timeout=20, what="the first alert")
        async with system_tx(engine) as conn:  # close it so the next breach needs a fresh evaluation
            await conn.execute(text("UPDATE alerts SET status = 'CLOSED', closed_at = now() WHERE tenant_id = :t"),
                               {"t": tenant.tenant_id})
        link.cut()
        await asyncio.sleep(2)
        assert not task.done(), "the evaluator must outlive a broken database link"
        await _report_and_notify(engine, tenant.tenant_id, device, 35)  # sent while the evaluator cannot hear
        link.restore()
        await eventually(lambda: _at_least(alerts, 1), timeout=30, what="the alert after the link came back")
        await _report_and_notify(engine, tenant.tenant_id, device, 25)  # and it hears new NOTIFYs again
        await eventually(lambda: _exactly(alerts, 0), timeout=30, what="the alert closed by a later message")
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
        await link.close()


async def _at_least(probe: object, n: int) -> bool:
    return await probe() >= n  # type: ignore[operator]


async def _exactly(probe: object, n: int) -> bool:
    return await probe() == n  # type: ignore[operator]


async def test_a_device_whose_alert_the_database_refuses_does_not_hold_up_the_others(
        engine: AsyncEngine, settings: Settings) -> None:
    """One device's data makes its alert insert fail (a trigger stands in for any value PostgreSQL refuses); the
    other devices of the same batch still get their alerts, and the refused device gets its alert once its next
    message can be stored."""
    tenant = await make_tenant(engine)
    # The healthy devices sort first: they are judged in the chunk before the refused insert rolls it back, and
    # must be judged again (not taken as done) when the devices are then evaluated one by one.
    healthy = [await make_device(engine, tenant, f"a-{i}") for i in range(2)]
    poison = await make_device(engine, tenant, "z-refused")
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition) "
            "VALUES (:t, 'hot', 'THRESHOLD', 4, '{\"metric\": \"temp_c\", \"op\": \"GT\", \"value\": 30}')"),
            {"t": tenant.tenant_id})
    async with engine.begin() as conn:  # the login user, which owns the schema
        await conn.execute(text(
            "CREATE FUNCTION pulse_test_refuse_alert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.device_id = '{poison}' THEN RAISE EXCEPTION 'value out of range' USING ERRCODE = '22003'; "
            "END IF; RETURN NEW; END $$"))
        await conn.execute(text("CREATE TRIGGER pulse_test_refuse_alert BEFORE INSERT ON alerts "
                                "FOR EACH ROW EXECUTE FUNCTION pulse_test_refuse_alert()"))

    async def open_devices() -> set[str]:
        async with system_tx(engine) as conn:
            return {r[0] for r in await conn.execute(text(
                "SELECT device_id FROM alerts WHERE tenant_id = :t AND status = 'OPEN'"), {"t": tenant.tenant_id})}

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(settings.replace(health_port=0), stop))
    try:
        async with system_tx(engine) as conn:  # one batch naming all three devices
            for device in (poison, *healthy):
                await conn.execute(text(
                    "UPDATE device_state SET latest_metrics = '{\"temp_c\": 40}', last_seen_at = now(), "
                    "last_telemetry_at = now(), updated_at = now() WHERE tenant_id = :t AND device_id = :d"),
                    {"t": tenant.tenant_id, "d": device})
            await conn.execute(text("SELECT pg_notify('pulse_telemetry', :p)"),
                               {"p": json.dumps([[tenant.tenant_id, d] for d in (poison, *healthy)])})

        async def healthy_open() -> bool:
            return await open_devices() == set(healthy)

        await eventually(healthy_open, timeout=20, what="alerts of the two healthy devices")
        assert not task.done()
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER pulse_test_refuse_alert ON alerts"))
        await _report_and_notify(engine, tenant.tenant_id, poison, 41)

        async def all_open() -> bool:
            return await open_devices() == {poison, *healthy}

        await eventually(all_open, timeout=20, what="the alert of the device whose next message was accepted")
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


def test_a_wakeup_payload_names_devices_and_malformed_ones_are_ignored() -> None:
    assert worker.parse_wakeup('[["acme", "d1"], ["acme", "d2"]]') == [("acme", "d1"), ("acme", "d2")]
    assert worker.parse_wakeup('{"devices": [["acme", "d1"], ["acme"], [1, 2]]}') == [("acme", "d1")]
    assert worker.parse_wakeup("[[\"acme\", \"d1\"], \"junk\"]") == [("acme", "d1")]
    assert worker.parse_wakeup("not json") == []


class _Owner:
    """Owns the devices whose name ends in an even digit."""

    def owns(self, tenant_id: str, device_id: str) -> bool:
        return int(device_id[-1]) % 2 == 0


def test_a_turn_takes_the_oldest_owned_devices_and_leaves_the_rest_queued_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "MAX_BATCH", 2)
    queue = dict.fromkeys([("t", "d0"), ("t", "d1"), ("t", "d2"), ("t", "d3"), ("t", "d4"), ("t", "d6")])
    assert worker._take_batch(queue, _Owner()) == [("t", "d0"), ("t", "d2")]  # type: ignore[arg-type]
    assert list(queue) == [("t", "d3"), ("t", "d4"), ("t", "d6")]  # d1 is another evaluator's: dropped
    assert worker._take_batch(queue, _Owner()) == [("t", "d4"), ("t", "d6")]  # type: ignore[arg-type]
    assert queue == {}


async def test_a_silent_device_turns_stale_while_an_evaluation_turn_is_still_running(
        engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Liveness passes run beside the evaluation loop: a device that fell silent is marked STALE on time even while
    the evaluator is busy judging other devices (here: a turn that does not end until the test lets it)."""
    tenant = await make_tenant(engine, heartbeat_interval_s=5)
    silent, busy = await make_device(engine, tenant), await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "UPDATE device_state SET status = 'ONLINE', last_seen_at = now() - interval '3 seconds', "
            "last_state_change_at = now() - interval '3 seconds' WHERE tenant_id = :t AND device_id = :d"),
            {"t": tenant.tenant_id, "d": silent})
    release, judging = asyncio.Event(), asyncio.Event()

    async def a_long_turn(self: object, keys: object, now: object, *args: object) -> None:
        judging.set()
        await release.wait()

    monkeypatch.setattr(worker.Evaluator, "evaluate_devices", a_long_turn)

    async def status() -> str:
        async with system_tx(engine) as conn:
            return str((await conn.execute(text(
                "SELECT status FROM device_state WHERE tenant_id = :t AND device_id = :d"),
                {"t": tenant.tenant_id, "d": silent})).scalar_one())

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(settings.replace(health_port=0), stop))
    try:
        await _report_and_notify(engine, tenant.tenant_id, busy, 20)
        await asyncio.wait_for(judging.wait(), 20)
        assert await status() == "ONLINE"

        async def is_stale() -> bool:
            return await status() == "STALE"

        await eventually(is_stale, timeout=20, what="the silent device STALE during the evaluation turn")
        assert not release.is_set() and not task.done()
    finally:
        release.set()
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


def test_a_pass_is_due_at_the_next_device_due_within_the_idle_gap() -> None:
    now = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    due = LivenessResult([], now + timedelta(seconds=3))
    assert worker.LivenessPasses._next_pass(now, due) == now + timedelta(seconds=3)
    soon = LivenessResult([], now + timedelta(milliseconds=50))
    assert worker.LivenessPasses._next_pass(now, soon) == now + worker.LIVENESS_MIN_GAP
    assert worker.LivenessPasses._next_pass(now, LivenessResult([], None)) == now + worker.LIVENESS_IDLE
    assert worker.LivenessPasses._next_pass(now, None) == now + worker.LIVENESS_EVERY  # ingest down: try each second
    assert worker.LIVENESS_IDLE <= NEXT_DUE_HORIZON  # a pass sees every due time before the next idle pass


async def test_a_device_back_online_with_a_short_interval_is_stale_on_time_between_idle_passes(
        engine: AsyncEngine, settings: Settings) -> None:
    """Passes run when the next device is due, else LIVENESS_IDLE (5 s) apart. A device the evaluator has just turned
    ONLINE again has a due time no pass has seen; the evaluator pokes the passes, so a 1 s silence is caught within
    about a second, not at the next idle pass."""
    tenant = await make_tenant(engine, heartbeat_interval_s=1)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "UPDATE device_state SET status = 'OFFLINE', last_seen_at = now() - interval '1 hour', "
            "last_state_change_at = now() - interval '55 minutes' WHERE tenant_id = :t AND device_id = :d"),
            {"t": tenant.tenant_id, "d": device})

    async def transitions() -> list[Any]:
        async with system_tx(engine) as conn:
            return list((await conn.execute(text(
                "SELECT h.status, h.changed_at, s.last_seen_at FROM device_state_history h JOIN device_state s "
                "  USING (tenant_id, device_id) WHERE tenant_id = :t AND device_id = :d ORDER BY h.changed_at"),
                {"t": tenant.tenant_id, "d": device})).all())

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(settings.replace(health_port=0), stop))
    try:
        await asyncio.sleep(1.5)  # the loop runs its first liveness pass
        await _report_and_notify(engine, tenant.tenant_id, device, 20)  # one message, then silence

        async def stale_again() -> list[Any]:
            rows = await transitions()
            return rows if [r.status for r in rows] == ["ONLINE", "STALE"] else []
        rows = await eventually(stale_again, timeout=20, what="ONLINE, then STALE")
        late = rows[1].changed_at - rows[1].last_seen_at - timedelta(seconds=1)
        assert late < worker.LIVENESS_EVERY * 1.5, late  # without the poke: about 2.5 s here
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
