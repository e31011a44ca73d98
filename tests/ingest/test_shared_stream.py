"""`pulse ingest --workers 2`: both workers take part in one shared stream and no message is stored twice."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import threading

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.settings import Settings
from tests.conftest import make_device, make_tenant
from tests.ingest.conftest import body, eventually, forget_session, publish, sql

MESSAGES = 1000


def _rows_written(metrics_text: str) -> float:
    m = re.search(r"^pulse_ingest_rows_written_total (\S+)$", metrics_text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_two_workers_share_the_stream_without_duplicates(engine: AsyncEngine, settings: Settings,
                                                               mqtt_url: str) -> None:
    tenant = await make_tenant(engine)
    devices = [await make_device(engine, tenant) for _ in range(10)]
    base = 2000 + secrets.randbelow(1000)
    group = f"shared-{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_ENV": "test", "PULSE_DATABASE_URL": settings.require_database_url(), "PULSE_MQTT_URL": mqtt_url,
                "PULSE_HEALTH_PORT": "0", "PULSE_INGEST_SHARED_GROUP": group, "PULSE_INGEST_FLUSH_MS": "50",
                "PULSE_INGEST_RATE_PER_S": "100000", "PULSE_INGEST_BURST": "100000", "PULSE_LOG_FORMAT": "text",
                "INGEST_WORKER_INDEX": str(base)})
    proc = subprocess.Popen([sys.executable, "-m", "pulse", "ingest", "--workers", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        async def both_subscribed() -> bool:
            assert proc.poll() is None, "".join(log)
            return sum("subscribed" in line for line in log) >= 2

        await eventually(both_subscribed, timeout=60, what="both workers subscribed")
        ports = [int(p) for p in re.findall(r"health endpoint listening url=http://127\.0\.0\.1:(\d+)/", "".join(log))]
        assert len(ports) == 2

        messages = [(f"tenant/{tenant.tenant_id}/device/{devices[i % 10]}/telemetry",
                     body(seq=i, metrics={"n": i})) for i in range(MESSAGES)]
        await publish(mqtt_url, messages)

        async def all_stored() -> bool:
            rows = await sql(engine, "SELECT count(*) AS n FROM telemetry WHERE tenant_id = :t", t=tenant.tenant_id)
            return rows[0]["n"] >= MESSAGES

        await eventually(all_stored, timeout=60, what="every message stored")
        await asyncio.sleep(1)  # a duplicate, if any, would arrive in the next flushes
        [row] = await sql(engine, "SELECT count(*) AS n, count(DISTINCT (device_id, seq)) AS distinct_n "
                                  "FROM telemetry WHERE tenant_id = :t", t=tenant.tenant_id)
        assert (row["n"], row["distinct_n"]) == (MESSAGES, MESSAGES)

        async with httpx.AsyncClient() as http:
            written = [_rows_written((await http.get(f"http://127.0.0.1:{p}/metrics")).text) for p in ports]
        assert all(w > 0 for w in written), f"one worker took no part: {written}"
        assert sum(written) == MESSAGES
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
        for i in range(2):
            await forget_session(mqtt_url, f"{group}-{base + i}")
    assert proc.returncode == 0, "".join(log)[-3000:]
