"""The values behind the workers' /metrics series: evaluator lag, escalation backlog, delivery queue depth."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import prometheus_client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.lag import WakeupLag
from pulse.clock import FrozenClock
from pulse.db import system_tx
from pulse.notify.service import create_channel
from pulse.notify.worker import sample_queue
from pulse.oncall.worker import _measure_backlog
from pulse.settings import Settings
from tests.conftest import make_tenant
from tests.web.conftest import insert_alert


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_the_lag_runs_from_the_oldest_wakeup_to_the_end_of_its_pass() -> None:
    lag = WakeupLag()
    count = _value("pulse_evaluate_lag_seconds_count")
    lag.woke()
    first = lag.since
    time.sleep(0.01)
    lag.woke()
    assert lag.since == first, "a later wake-up does not move the oldest"
    taken = lag.take()
    assert taken == first and lag.since is None
    lag.done(taken, pending_left=3)
    assert _value("pulse_evaluate_lag_seconds_count") == count + 1
    assert _value("pulse_evaluate_lag_seconds_sum") >= 0.01
    assert lag.since == first, "devices left for the next pass keep their wait"
    assert _value("pulse_evaluate_pending_devices") == 3
    lag.done(lag.take(), pending_left=0)
    assert lag.since is None and _value("pulse_evaluate_pending_devices") == 0


async def test_escalation_backlog_counts_due_steps(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    now = datetime.now(UTC) + timedelta(days=3650)  # far ahead: every step anyone left due counts, and ours do
    before = await _backlog(engine, now)
    alerts = [await insert_alert(engine, tenant.tenant_id) for _ in range(3)]
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE alerts SET next_escalation_at = :at WHERE alert_id = ANY(CAST(:ids AS uuid[]))"),
                           {"at": now - timedelta(seconds=90), "ids": alerts})
    assert await _backlog(engine, now) == before + 3
    assert _value("pulse_escalate_oldest_due_seconds") >= 90
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE alerts SET next_escalation_at = NULL, status = 'CLOSED', closed_at = now() "
                                "WHERE alert_id = ANY(CAST(:ids AS uuid[]))"), {"ids": alerts})


async def _backlog(engine: AsyncEngine, now: datetime) -> float:
    async with system_tx(engine) as conn:
        await _measure_backlog(conn, now)
    return _value("pulse_escalate_backlog")


async def test_the_delivery_queue_gauges_follow_the_queue(engine: AsyncEngine, settings: Settings) -> None:
    tenant = await make_tenant(engine)
    later = datetime.now(UTC) + timedelta(days=3650)  # due only for this test's clock: no deliverer takes them
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, "hook", "WEBHOOK", {"url": "http://127.0.0.1:9/x"},
                                       {"secret": "s" * 20}, settings=settings)
        for i in range(4):
            await conn.execute(text(
                "INSERT INTO notification_jobs (tenant_id, channel_id, event_kind, payload, idempotency_key, "
                "  next_attempt_at) VALUES (:t, CAST(:c AS uuid), 'OPENED', '{}', :k, :at)"),
                {"t": tenant.tenant_id, "c": channel, "k": f"{tenant.tenant_id}-{i}", "at": later - timedelta(hours=i)})
        expected = (await conn.execute(text(
            "SELECT count(*) FROM notification_jobs WHERE status = 'PENDING' AND next_attempt_at <= :at"),
            {"at": later})).scalar_one()
    stop = asyncio.Event()
    task = asyncio.create_task(sample_queue(engine, FrozenClock(later), stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while _value("pulse_deliver_queue_depth") != expected:
            assert loop.time() < deadline, "the queue gauge never showed the due jobs"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        async with system_tx(engine) as conn:
            await conn.execute(text("DELETE FROM notification_jobs WHERE tenant_id = :t"), {"t": tenant.tenant_id})
    assert expected >= 4 and _value("pulse_deliver_oldest_due_seconds") >= 3 * 3600
