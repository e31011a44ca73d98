"""`pulse ingest --workers N` as an operator runs it: children consume, SIGTERM stops them all, exit code 0."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.ingest.supervisor import child_environ
from pulse.ingest.worker import worker_index
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant
from tests.ingest.conftest import body, eventually, forget_session, publish, sql


def test_children_get_their_index_port_and_every_setting(settings: Settings) -> None:
    custom = settings.replace(health_port=9200, ingest_batch_size=77, allow_private_urls=("loopback", "private"),
                              demo=True)
    env = child_environ(custom, 3, {"PATH": "/bin", "PULSE_ENV_FILE": "/etc/pulse.env", "INGEST_WORKER_INDEX": "1"})
    assert env["INGEST_WORKER_INDEX"] == "3" and env["PULSE_HEALTH_PORT"] == "9203"
    assert env["PATH"] == "/bin" and "PULSE_ENV_FILE" not in env  # settings are spelled out instead
    assert Settings.from_env(env) == custom.replace(health_port=9203)
    assert child_environ(settings, 5)["PULSE_HEALTH_PORT"] == "0"  # "any port" stays "any port" for each child


def test_worker_index_comes_from_the_environment() -> None:
    assert worker_index({}) == 0
    assert worker_index({"INGEST_WORKER_INDEX": "12"}) == 12
    from pulse.errors import SettingsError

    try:
        worker_index({"INGEST_WORKER_INDEX": "-1"})
    except SettingsError as exc:
        assert "INGEST_WORKER_INDEX" in exc.message
    else:
        raise AssertionError("a negative index was accepted")


async def test_two_workers_consume_and_stop_on_sigterm(engine: AsyncEngine, settings: Settings,
                                                       mqtt_url: str) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    base = 10 + secrets.randbelow(1000)
    group = f"test-{secrets.token_hex(4)}"  # client ids {group}-{base} and {group}-{base + 1}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_ENV": "test", "PULSE_DATABASE_URL": settings.require_database_url(), "PULSE_MQTT_URL": mqtt_url,
                "PULSE_HEALTH_PORT": "0", "PULSE_INGEST_SHARED_GROUP": group,
                "PULSE_INGEST_FLUSH_MS": "50", "INGEST_WORKER_INDEX": str(base)})
    proc = subprocess.Popen([sys.executable, "-m", "pulse", "ingest", "--workers", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seq = 0

        async def written() -> bool:
            nonlocal seq
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            seq += 1  # until both workers subscribed, messages may find no subscriber yet: keep sending
            await publish(mqtt_url, [(f"tenant/{tenant.tenant_id}/device/{device}/telemetry",
                                      body(seq=seq, metrics={"a": seq}))] * 2)
            await asyncio.sleep(0.5)
            rows = await sql(engine, "SELECT count(*) AS n FROM telemetry WHERE tenant_id = :t", t=tenant.tenant_id)
            return rows[0]["n"] >= 4

        await eventually(written, timeout=60, what="rows written by the worker processes")
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, out.decode()
        log = out.decode()
        assert log.count("pulse.cli: stopped exit_code=0") == 2, log  # each worker exited 0
        assert f"client_id={group}-{base} " in log and f"client_id={group}-{base + 1} " in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for i in range(2):
            await forget_session(mqtt_url, f"{group}-{base + i}")
