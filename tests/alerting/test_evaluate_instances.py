"""Two real `pulse evaluate` processes share the devices by partition; when one is killed with SIGKILL the survivor
takes its partitions over, and every breach and every silence still gives exactly one alert."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.partitions import LOCK_CLASS, PARTITIONS, partition_of
from pulse.db import system_tx
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant
from tests.ingest.conftest import eventually

DEVICES = 40
WAIT_S = 60.0  # generous: the machine is shared; the point is that it happens, not how fast


class Evaluators:
    """Real `pulse evaluate` processes with their output kept for failure messages."""

    def __init__(self, database_url: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        self.env.update({"PULSE_DATABASE_URL": database_url, "PULSE_ENV": "test", "PULSE_HEALTH_PORT": "0",
                         "PULSE_LOG_LEVEL": "info", "PULSE_EVALUATE_REBALANCE_S": "1"})
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[IO[str]] = []

    def start(self) -> subprocess.Popen[str]:
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen([sys.executable, "-m", "pulse", "evaluate"], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def output(self) -> str:
        out = []
        for proc, log in zip(self.procs, self.logs, strict=True):
            log.seek(0)
            out.append(f"--- pulse evaluate pid {proc.pid} ---\n{log.read()[-4000:]}")
        return "\n".join(out)

    def stop(self) -> list[int | None]:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=30))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(None)
        return codes


@pytest.fixture
def evaluators(settings: Settings) -> Iterator[Evaluators]:
    procs = Evaluators(settings.require_database_url())
    yield procs
    procs.stop()


async def _q(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(sql), params)).all())


async def _report(engine: AsyncEngine, tenant: TenantRef, devices: list[str], temp_c: float) -> None:
    """What ingest does for a batch: new latest values and last-seen times, then one NOTIFY naming the devices."""
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "UPDATE device_state SET latest_metrics = latest_metrics || CAST(:m AS jsonb), last_seen_at = now(), "
            "last_telemetry_at = now(), updated_at = now() WHERE tenant_id = :t AND device_id = ANY(:d)"),
            {"m": json.dumps({"temp_c": temp_c}), "t": tenant.tenant_id, "d": devices})
        await conn.execute(text("SELECT pg_notify('pulse_telemetry', :p)"),
                           {"p": json.dumps([[tenant.tenant_id, d] for d in devices])})


async def _holders(engine: AsyncEngine) -> dict[int, set[int]]:
    """Partition locks held now, by PostgreSQL backend pid."""
    rows = await _q(engine, "SELECT pid, objid::int AS p FROM pg_locks WHERE locktype = 'advisory' AND granted "
                            "AND classid = CAST(CAST(:c AS int) AS oid) AND objsubid = 2 "
                            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    c=LOCK_CLASS)
    out: dict[int, set[int]] = {}
    for r in rows:
        out.setdefault(r.pid, set()).add(r.p)
    return out


async def _open_alerts(engine: AsyncEngine, tenant: TenantRef, alert_type: str) -> dict[str, Any]:
    rows = await _q(engine, "SELECT device_id, fingerprint, occurrence_count FROM alerts WHERE tenant_id = :t "
                            "AND alert_type = :a AND status IN ('OPEN', 'ACKNOWLEDGED')",
                    t=tenant.tenant_id, a=alert_type)
    assert len({r.fingerprint for r in rows}) == len(rows), "two open alerts for one fingerprint"
    return {r.device_id: r for r in rows}


async def _opened_per_alert(engine: AsyncEngine, tenant: TenantRef) -> dict[str, list[int]]:
    """Per fingerprint, the number of OPENED events of each of its alerts (one alert per episode)."""
    rows = await _q(engine, "SELECT a.fingerprint, count(e.event_id) FILTER (WHERE e.kind = 'OPENED') AS opened "
                            "FROM alerts a LEFT JOIN alert_events e ON e.alert_id = a.alert_id "
                            "WHERE a.tenant_id = :t GROUP BY a.alert_id, a.fingerprint", t=tenant.tenant_id)
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r.fingerprint, []).append(int(r.opened))
    return out


async def test_two_evaluators_split_devices_and_the_survivor_takes_over_a_killed_ones_share(
        engine: AsyncEngine, evaluators: Evaluators) -> None:
    async with system_tx(engine) as conn:  # this test owns the evaluator instances; no ingest: liveness runs
        await conn.execute(text("DELETE FROM service_heartbeats WHERE process_type IN ('evaluate', 'ingest')"))
    tenant = await make_tenant(engine, prefix="split", heartbeat_interval_s=3600)  # only the silenced go STALE
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE tenants SET no_heartbeat_alert_on = 'STALE' WHERE tenant_id = :t"),
                           {"t": tenant.tenant_id})
        await conn.execute(text(
            "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition) VALUES "
            "(:t, 'Too warm', 'THRESHOLD', 4, '{\"metric\": \"temp_c\", \"op\": \"GT\", \"value\": 30}')"),
            {"t": tenant.tenant_id})
    devices = [await make_device(engine, tenant, f"sensor-{i:02d}") for i in range(DEVICES)]
    await _report(engine, tenant, devices, 20)

    procs = [evaluators.start(), evaluators.start()]

    async def split() -> dict[int, set[int]] | None:
        """32 partitions each, and both have beaten since they got them: a beat starts the round after the one
        that took partitions and caught up on their devices, so each has evaluated its share once by then."""
        held = await _holders(engine)
        beats = await _q(engine, "SELECT count(*) FROM service_heartbeats WHERE process_type = 'evaluate' "
                                 "AND ready AND detail = :d", d=f"owns {PARTITIONS // 2} of {PARTITIONS} partitions")
        settled = sorted(len(p) for p in held.values()) == [PARTITIONS // 2] * 2 and beats[0][0] == 2
        return held if settled else None

    try:
        held = await eventually(split, timeout=WAIT_S, what="two evaluators holding 32 partitions each")
    except AssertionError:
        raise AssertionError(evaluators.output()) from None
    assert held is not None
    (pid_a, parts_a), (pid_b, parts_b) = held.items()
    assert not parts_a & parts_b and parts_a | parts_b == set(range(PARTITIONS))
    owner_of = {d: pid_a if partition_of(tenant.tenant_id, d) in parts_a else pid_b for d in devices}
    assert sum(o == pid_a for o in owner_of.values()) >= 5 and sum(o == pid_b for o in owner_of.values()) >= 5

    # 1. a breach on every device: one alert each, judged by one evaluator only (one occurrence, one OPENED)
    await _report(engine, tenant, devices, 31)
    await eventually(lambda: _count_is(_open_alerts(engine, tenant, "THRESHOLD"), DEVICES), timeout=WAIT_S,
                     what="one alert per breaching device")
    await asyncio.sleep(3)  # time for the other evaluator to judge the same devices too, which it must not do
    opened = await _open_alerts(engine, tenant, "THRESHOLD")
    assert {d: a.occurrence_count for d, a in opened.items()} == dict.fromkeys(devices, 1)
    assert set(map(tuple, (await _opened_per_alert(engine, tenant)).values())) == {(1,)}

    # 2. kill -9 one evaluator: its session's locks vanish with it
    procs[0].kill()
    procs[0].wait(10)

    async def survivor_holds_all() -> int | None:
        now = await _holders(engine)
        return next(iter(now)) if len(now) == 1 and len(next(iter(now.values()))) == PARTITIONS else None

    survivor = await eventually(survivor_holds_all, timeout=WAIT_S, what="the survivor holding all 64 partitions")
    orphaned = [d for d, o in owner_of.items() if o != survivor]
    assert orphaned, "the killed evaluator owned devices"

    # 3. the condition clears everywhere, then a new breach: the survivor closes and opens for every device
    await _report(engine, tenant, devices, 20)
    await eventually(lambda: _count_is(_open_alerts(engine, tenant, "THRESHOLD"), 0), timeout=WAIT_S,
                     what="every alert closed, the killed evaluator's devices' too")
    await _report(engine, tenant, devices, 33)
    await eventually(lambda: _count_is(_open_alerts(engine, tenant, "THRESHOLD"), DEVICES), timeout=WAIT_S,
                     what="a new alert per device after the takeover")

    # 4. devices fall silent, on both sides of the old split: each goes STALE and gets one NO_HEARTBEAT alert
    silent = orphaned[:3] + [d for d in devices if d not in orphaned][:3]
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE devices SET heartbeat_interval_s = 2 WHERE tenant_id = :t "
                                "AND device_id = ANY(:d)"), {"t": tenant.tenant_id, "d": silent})

    async def all_stale() -> bool:
        rows = await _q(engine, "SELECT count(*) FROM device_state WHERE tenant_id = :t AND device_id = ANY(:d) "
                                "AND status = 'STALE'", t=tenant.tenant_id, d=silent)
        return int(rows[0][0]) == len(silent)

    await eventually(all_stale, timeout=WAIT_S, what="the silent devices marked STALE")
    await eventually(lambda: _count_is(_open_alerts(engine, tenant, "NO_HEARTBEAT"), len(silent)), timeout=WAIT_S,
                     what="one NO_HEARTBEAT alert per silent device")
    assert set(await _open_alerts(engine, tenant, "NO_HEARTBEAT")) == set(silent)

    # no duplicates anywhere: per fingerprint one alert per episode, each with exactly one OPENED event
    episodes = await _opened_per_alert(engine, tenant)
    assert {fp: sorted(v) for fp, v in episodes.items()} == {
        **{f"NO_HEARTBEAT:{d}": [1] for d in silent},
        **{fp: [1, 1] for fp in episodes if fp.startswith("RULE:")}}
    assert len([fp for fp in episodes if fp.startswith("RULE:")]) == DEVICES
    assert procs[1].poll() is None, evaluators.output()
    assert evaluators.stop()[1] == 0


async def _count_is(probe: Any, n: int) -> bool:
    return len(await probe) == n
