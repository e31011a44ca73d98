"""A webhook receiver down for "10 minutes", compressed 60x by configuration (10 s; retry base 30 s → 0.5 s, cap
2 h → 120 s), while a real `pulse deliver` works on 20 notifications: every attempt is recorded, and the
notifications are delivered once the receiver is back — when the attempt budget spans the outage.

The default budget (8 attempts: 30 s, 60 s, … 1,920 s apart, ±20 %) spans about an hour, so the notifications are
delivered once the receiver is back. A budget of 5 attempts is spent after about 7.5 minutes and leaves them
dead-lettered; an operator's replay then delivers them. Both are shown here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, raise_alert
from pulse.db import system_tx
from pulse.notify.service import replay_dead_job
from pulse.settings import Settings
from tests.conftest import free_port
from tests.faults.data import fetch
from tests.faults.processes import PulseProcesses, eventually, processes
from tests.notify.test_delivery import _setup

__all__ = ["processes"]  # fixtures

ALERTS = 20
OUTAGE_S = 10.0  # "10 minutes" at 60x
COMPRESSED = {"PULSE_DELIVER_RETRY_BASE_S": "0.5", "PULSE_DELIVER_RETRY_CAP_S": "120", "PULSE_DELIVER_LEASE_S": "5",
              "PULSE_DELIVER_POLL_MS": "100",
              "PULSE_ALLOW_PRIVATE_URLS": "loopback"}


class PortReceiver:
    """A webhook endpoint on a fixed port that can be absent (connections refused) and come up later."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self.requests: list[dict[str, str]] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


async def _attempts(database_url: str, tenant_id: str) -> dict[str, list[Any]]:
    rows = await fetch(database_url, "SELECT job_id::text, attempt_no, outcome, started_at, error "
                       "FROM notification_attempts WHERE tenant_id = $1 ORDER BY job_id, attempt_no", tenant_id)
    out: dict[str, list[Any]] = {}
    for r in rows:
        out.setdefault(r["job_id"], []).append(r)
    return out


async def _statuses(database_url: str, tenant_id: str) -> dict[str, str]:
    rows = await fetch(database_url, "SELECT job_id::text, status FROM notification_jobs WHERE tenant_id = $1",
                       tenant_id)
    return {r["job_id"]: r["status"] for r in rows}


@pytest.mark.parametrize(("max_attempts", "delivered_without_replay"), [("8", True), ("5", False)])
async def test_a_receiver_down_for_ten_minutes_gets_every_notification_after_it_recovers(
        max_attempts: str, delivered_without_replay: bool, engine: AsyncEngine, settings: Settings,
        database_url: str, processes: PulseProcesses) -> None:
    receiver = PortReceiver(free_port())
    tenant, device = await _setup(engine, settings, receiver.url)
    t = tenant.tenant_id
    processes.env["PULSE_DATABASE_URL"] = database_url
    processes.start("deliver", "deliver", PULSE_DELIVER_MAX_ATTEMPTS=max_attempts, **COMPRESSED)
    try:
        await processes.ready("deliver")
        async with system_tx(engine) as conn:
            now = datetime.now(UTC)
            for i in range(ALERTS):
                await raise_alert(conn, AlertSignal(
                    tenant_id=t, fingerprint=f"RULE:outage:{device}:{i}", alert_type="THRESHOLD", severity=4,
                    title=f"cold room {i} warm", summary="temp_c 9 > 8", device_id=device), now=now)
        down_since = time.monotonic()

        async def everyone_tried() -> bool:
            return len(await _attempts(database_url, t)) == ALERTS
        await eventually(everyone_tried, timeout=30, what="a first attempt at every notification",
                         details=lambda: processes.output("deliver"))
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))
        receiver.start()
        recovered_at = datetime.now(UTC)
        before = await _statuses(database_url, t)

        async def settled() -> bool:
            return all(s in ("DELIVERED", "DEAD") for s in (await _statuses(database_url, t)).values())
        await eventually(settled, timeout=60, what="every notification to be delivered or dead-lettered",
                         details=lambda: processes.output("deliver"))
        statuses = await _statuses(database_url, t)
        attempts = await _attempts(database_url, t)
        assert len(statuses) == ALERTS and "DELIVERED" not in before.values()
        for tries in attempts.values():
            assert [a["attempt_no"] for a in tries] == list(range(1, len(tries) + 1))
            failed = [a for a in tries if a["outcome"] != "DELIVERED"]
            assert all(a["started_at"] < recovered_at and a["error"] for a in failed), failed
            assert len(failed) >= 4, "the outage was shorter than four retries"
        if delivered_without_replay:
            assert set(statuses.values()) == {"DELIVERED"}
            for tries in attempts.values():
                assert [a["outcome"] for a in tries][-1] == "DELIVERED" and tries[-1]["started_at"] >= recovered_at
                assert {a["outcome"] for a in tries[:-1]} == {"RETRY"}
        else:
            assert set(statuses.values()) == {"DEAD"}  # the default budget ran out during the outage
            for tries in attempts.values():
                assert [a["outcome"] for a in tries] == ["RETRY"] * 4 + ["FAILED"]
            async with system_tx(engine) as conn:
                for job_id in statuses:
                    await replay_dead_job(conn, t, job_id, now=datetime.now(UTC))

            async def delivered() -> bool:
                return set((await _statuses(database_url, t)).values()) == {"DELIVERED"}
            await eventually(delivered, timeout=30, what="the replayed notifications",
                             details=lambda: processes.output("deliver"))
        keys = {r["idempotency_key"] for r in await fetch(
            database_url, "SELECT idempotency_key FROM notification_jobs WHERE tenant_id = $1", t)}
        assert sorted(h["x-pulse-delivery"] for h in receiver.requests) == sorted(keys)  # each once
        assert processes.stop("deliver") == 0
    finally:
        receiver.close()
