"""The `pulse` command: help for every process type, settings errors naming the variable, SIGTERM → exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import asyncpg
import httpx
import pytest

from pulse.settings import Settings
from tests.conftest import free_port, run_pulse

PROCESS_TYPES = ["web", "ingest", "evaluate", "escalate", "deliver", "schedule", "migrate", "dev", "simulate"]


def test_top_level_help_lists_every_process_type() -> None:
    result = run_pulse("--help")
    assert result.returncode == 0
    for name in PROCESS_TYPES:
        assert name in result.stdout
    assert "PULSE_DATABASE_URL" in result.stdout


@pytest.mark.parametrize("process_type", PROCESS_TYPES)
def test_each_process_type_has_help_naming_its_settings(process_type: str) -> None:
    result = run_pulse(process_type, "--help")
    assert result.returncode == 0, result.stderr
    assert "Settings read:" in result.stdout
    if process_type not in ("dev",):
        assert "PULSE_DATABASE_URL" in result.stdout


def test_missing_database_url_names_the_variable() -> None:
    result = run_pulse("evaluate")
    assert result.returncode == 2
    assert "PULSE_DATABASE_URL" in result.stderr


@pytest.mark.parametrize(("name", "value"), [
    ("PULSE_DATABASE_URL", "mysql://x@localhost/db"),
    ("PULSE_HTTP_PORT", "eighty"),
    ("PULSE_SECRET_KEY", "too-short"),
    ("PULSE_ENV", "staging"),
])
def test_bad_setting_stops_with_message_naming_it(name: str, value: str) -> None:
    result = run_pulse("evaluate", env={"PULSE_DATABASE_URL": "postgresql://x@127.0.0.1/db", name: value})
    assert result.returncode == 2
    assert name in result.stderr
    if name == "PULSE_SECRET_KEY":
        assert value not in result.stderr, "a secret's value must not be echoed"


def test_unknown_setting_is_refused() -> None:
    result = run_pulse("evaluate", env={"PULSE_DATABASE_URL": "postgresql://x@127.0.0.1/db", "PULSE_DATABSE_URL": "x"})
    assert result.returncode == 2
    assert "PULSE_DATABSE_URL" in result.stderr


def test_production_refuses_default_secrets() -> None:
    result = run_pulse("evaluate", env={"PULSE_ENV": "production", "PULSE_DATABASE_URL": "postgresql://x@127.0.0.1/db"})
    assert result.returncode == 2
    assert "PULSE_ADMIN_KEY" in result.stderr or "PULSE_SECRET_KEY" in result.stderr


def test_env_file_is_read(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "pulse.env"
    path.write_text("# comment\nPULSE_HTTP_PORT=9999\nexport PULSE_LOG_LEVEL='debug'\n")
    s = Settings.from_env({}, env_file=path)
    assert s.http_port == 9999 and s.log_level == "debug"


def _wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


async def _forget_ingest_instances(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM service_heartbeats")
    finally:
        await conn.close()


@pytest.mark.parametrize("process_type", ["web", "ingest", "evaluate", "escalate", "deliver", "schedule"])
def test_sigterm_stops_each_process_type_cleanly(process_type: str, database_url: str, mqtt_url: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_DATABASE_URL": database_url, "PULSE_MQTT_URL": mqtt_url, "PULSE_ENV": "test",
                "PULSE_LOG_FORMAT": "json", "PULSE_INGEST_SHARED_GROUP": f"sigterm-{port}"})
    env["PULSE_HTTP_PORT" if process_type == "web" else "PULSE_HEALTH_PORT"] = str(port)
    if process_type == "evaluate":  # ingest workers stopped by earlier tests would read as an ingest outage (an error)
        asyncio.run(_forget_ingest_instances(database_url))
    proc = subprocess.Popen([sys.executable, "-m", "pulse", process_type], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert '"level": "error"' not in err and '"level":"error"' not in err, err[-3000:]
