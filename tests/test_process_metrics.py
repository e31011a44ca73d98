"""Real processes: every process type's /metrics parses as Prometheus text and carries every series that
docs/operations.md documents for it; two `pulse schedule` processes run each job once per period."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx
from tests.conftest import free_port, start_pulse

DOCS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
PROCESS_TYPES = ("web", "ingest", "evaluate", "escalate", "deliver", "schedule")
_ROW = re.compile(r"^\|\s*`(pulse_[a-z0-9_]+)(?:\{[^}]*\})?`\s*\|\s*(counter|gauge|histogram)\s*\|\s*([a-z, ]+?)\s*\|")


def documented_series() -> dict[str, set[str]]:
    """The Prometheus metrics table of docs/operations.md: process type → series names."""
    section = DOCS.read_text().split("## Prometheus metrics", 1)[1].split("\n## ", 1)[0]
    wanted: dict[str, set[str]] = {p: set() for p in PROCESS_TYPES}
    for line in section.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        name, _kind, processes = match.groups()
        for process in (p.strip() for p in processes.split(",")):
            for target in (PROCESS_TYPES if process == "all" else (process,)):
                wanted[target].add(name)
    return wanted


def exposed(body: str) -> set[str]:
    """Family and sample names in a Prometheus text body (raises if it does not parse)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(body):
        names.add(family.name)
        names.add(family.name + "_total" if family.type == "counter" else family.name)
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture
def processes(database_url: str, mqtt_url: str) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], int]]]:
    started: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for kind in PROCESS_TYPES:
            port = free_port()
            # a group of its own: the broker is shared, and an ingest worker in the default group would take
            # messages meant for other tests' workers
            extra = {"PULSE_HEALTH_PORT": str(port), "PULSE_MQTT_URL": mqtt_url,
                     "PULSE_INGEST_SHARED_GROUP": f"metrics-test-{port}"}
            if kind == "web":
                extra["PULSE_HTTP_PORT"] = str(free_port())
            started[kind] = (start_pulse(kind, database_url, **extra), port)
        yield started
    finally:
        for proc, _ in started.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in started.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def _scrape(kind: str, proc: subprocess.Popen[bytes], port: int) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        while True:
            assert proc.poll() is None, f"pulse {kind} exited with {proc.returncode}"
            try:
                r = await client.get(f"http://127.0.0.1:{port}/metrics")
                if r.status_code == 200:
                    assert r.headers["content-type"].startswith("text/plain")
                    return r.text
            except httpx.TransportError:
                pass
            assert loop.time() < deadline, f"pulse {kind} never served /metrics on port {port}"
            await asyncio.sleep(0.2)


async def test_every_process_type_exposes_its_documented_series(
        processes: dict[str, tuple[subprocess.Popen[bytes], int]]) -> None:
    wanted = documented_series()
    assert all(wanted[kind] for kind in PROCESS_TYPES), wanted
    assert "pulse_live_sockets" in wanted["web"] and "pulse_deliver_queue_depth" in wanted["deliver"]
    missing: dict[str, set[str]] = {}
    for kind, (proc, port) in processes.items():
        names = exposed(await _scrape(kind, proc, port))
        if wanted[kind] - names:
            missing[kind] = wanted[kind] - names
        pools = [n for n in names if n.startswith("pulse_db_pool_size")]
        assert pools, f"pulse {kind} reports no database pool"
    assert missing == {}


async def _sample_times(engine: AsyncEngine, since: datetime) -> list[datetime]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT time FROM system_metrics WHERE metric = 'db.size_bytes' AND time >= :since ORDER BY time"),
            {"since": since})).scalars())


async def _job_runs(engine: AsyncEngine) -> dict[str, int]:
    async with system_tx(engine) as conn:
        return {r.job_name: r.run_count for r in (await conn.execute(text(
            "SELECT job_name, run_count FROM scheduled_job_runs"))).all()}


async def test_two_schedule_processes_run_each_job_once_per_period(engine: AsyncEngine, database_url: str) -> None:
    from pulse.scheduler import JOBS

    before = await _job_runs(engine)
    since = datetime.now(UTC)
    twins = [start_pulse("schedule", database_url, PULSE_HEALTH_PORT=str(free_port())) for _ in range(2)]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while len(await _sample_times(engine, since)) < 4:  # four 5-second slots, each sampled by one of the two
            assert all(p.poll() is None for p in twins), "a scheduler exited"
            assert loop.time() < deadline, "the system_metrics job did not run every 5 s"
            await asyncio.sleep(0.5)
    finally:
        for p in twins:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in twins]
    assert codes == [0, 0]

    times = await _sample_times(engine, since)
    slots = [int(t.timestamp()) // 5 for t in times]
    assert len(slots) == len(set(slots)), f"a 5-second slot was sampled twice: {times}"
    after = await _job_runs(engine)
    assert after["system_metrics"] - before.get("system_metrics", 0) == len(times)
    for job in JOBS:
        runs = after.get(job.name, 0) - before.get(job.name, 0)
        if job.every >= timedelta(minutes=10):  # one slot while the test ran: once (or not, if already covered)
            limit = 2 if job.run_at_start else 1  # a run_at_start job runs when each process starts
            assert runs <= limit, f"{job.name} ran {runs} times"
            assert runs >= 1 or before.get(job.name, 0) >= 1, f"{job.name} never ran"


def test_the_documented_table_is_complete_for_the_process_types() -> None:
    wanted = documented_series()
    for name in ("pulse_ingest_messages_total", "pulse_ingest_batch_seconds", "pulse_evaluate_lag_seconds",
                 "pulse_escalate_backlog", "pulse_deliver_attempts_total", "pulse_db_pool_checked_out"):
        assert any(name in series for series in wanted.values()), name
