"""Two real `pulse deliver` processes, one killed with kill -9 while sends are in flight: every job is
delivered, the survivor takes over the dead one's leased jobs, and a job sent twice carries one stable
X-Pulse-Delivery key the receiver can de-duplicate by."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, raise_alert
from pulse.db import system_tx
from pulse.settings import Settings
from tests.notify.test_delivery import _setup

JOBS = 120


class SlowReceiver:
    """Answers 200 after 50 ms, so a deliverer always has sends in flight; counts deliveries by key."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(0.05)
                with lock:
                    outer.keys[self.headers.get("X-Pulse-Delivery", "")] += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # both deliverers connect 50 at a time

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _start(database_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_DATABASE_URL": database_url, "PULSE_ENV": "test", "PULSE_HEALTH_PORT": "0",
                "PULSE_ALLOW_PRIVATE_URLS": "loopback", "PULSE_DELIVER_LEASE_S": "5", "PULSE_DELIVER_RETRY_BASE_S": "1",
                "PULSE_LOG_LEVEL": "warning"})
    return subprocess.Popen([sys.executable, "-m", "pulse", "deliver"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def _statuses(engine: AsyncEngine, tenant_id: str) -> Counter[str]:
    async with system_tx(engine) as conn:
        return Counter(r[0] for r in await conn.execute(text(
            "SELECT status FROM notification_jobs WHERE tenant_id = :t"), {"t": tenant_id}))


async def test_kill_9_of_one_deliverer_mid_batch_loses_nothing(engine: AsyncEngine, settings: Settings,
                                                               database_url: str) -> None:
    receiver = SlowReceiver()
    try:
        tenant, device = await _setup(engine, settings, receiver.url)
        twins = [_start(database_url), _start(database_url)]
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
        assert set(receiver.keys) == keys  # every job reached the receiver
        repeats = sum(n - 1 for n in receiver.keys.values())
        assert repeats <= in_flight["IN_PROGRESS"]  # only sends the killed process had in hand came twice
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
