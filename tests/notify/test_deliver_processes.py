"""Two real `pulse deliver` processes, one killed with kill -9 while sends are in flight: every job is
delivered, the survivor takes over the dead one's leased jobs, and a job sent twice carries one stable
X-Pulse-Delivery key the receiver can de-duplicate by."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, raise_alert
from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import start_pulse
from tests.notify.test_delivery import Receiver, _setup

JOBS = 120


async def _statuses(engine: AsyncEngine, tenant_id: str) -> Counter[str]:
    async with system_tx(engine) as conn:
        return Counter(r[0] for r in await conn.execute(text(
            "SELECT status FROM notification_jobs WHERE tenant_id = :t"), {"t": tenant_id}))


async def test_kill_9_of_one_deliverer_mid_batch_loses_nothing(engine: AsyncEngine, settings: Settings,
                                                               database_url: str) -> None:
    receiver = Receiver(delay_s=0.05)  # a deliverer always has sends in flight
    try:
        tenant, device = await _setup(engine, settings, receiver.url)
        settings_env = {"PULSE_ALLOW_PRIVATE_URLS": "loopback", "PULSE_DELIVER_LEASE_S": "5",
                        "PULSE_DELIVER_RETRY_BASE_S": "1"}
        twins = [start_pulse("deliver", database_url, **settings_env) for _ in range(2)]
        try:
            await asyncio.sleep(2.0)
            async with system_tx(engine) as conn:  # in one commit, so both deliverers claim batches at once
                now = datetime.now(UTC)
                for i in range(JOBS):
                    await raise_alert(conn, AlertSignal(
                        tenant_id=tenant.tenant_id, fingerprint=f"RULE:kill:{device}:{i}", alert_type="THRESHOLD",
                        severity=4, title=f"pump {i} stalled", summary="flow 0", device_id=device), now=now)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while loop.time() < deadline and (await _statuses(engine, tenant.tenant_id))["IN_PROGRESS"] < 10:
                await asyncio.sleep(0.01)
            in_flight = await _statuses(engine, tenant.tenant_id)
            twins[0].send_signal(signal.SIGKILL)
            twins[0].wait(timeout=10)
            assert in_flight["IN_PROGRESS"] >= 10, in_flight
            deadline = loop.time() + 60  # the dead one's leases run out after 5 s
            while loop.time() < deadline:
                statuses = await _statuses(engine, tenant.tenant_id)
                if statuses["DELIVERED"] == sum(statuses.values()):
                    break
                await asyncio.sleep(0.2)
            assert twins[1].poll() is None
        finally:
            for p in twins:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=20)
        statuses = await _statuses(engine, tenant.tenant_id)
        async with system_tx(engine) as conn:
            keys = {r[0] for r in await conn.execute(text(
                "SELECT idempotency_key FROM notification_jobs WHERE tenant_id = :t"), {"t": tenant.tenant_id})}
        assert statuses == Counter({"DELIVERED": len(keys)}), statuses
        received = Counter(headers["x-pulse-delivery"] for headers, _ in receiver.requests)
        assert set(received) == keys  # every job reached the receiver
        repeats = sum(n - 1 for n in received.values())
        assert repeats <= in_flight["IN_PROGRESS"]  # only sends the killed process had in hand came twice
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
