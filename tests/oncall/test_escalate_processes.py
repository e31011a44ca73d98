"""Escalation with real processes. Two `pulse escalate` on one database, one killed with SIGKILL mid-step:
every level of every alert pages exactly once, none is skipped. And one alert followed from opening through
`pulse escalate` and `pulse deliver` to the on-call person's webhook."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, raise_alert
from pulse.db import system_tx
from pulse.notify.channels.webhook import verify_signature
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant, start_pulse
from tests.oncall.test_escalation import SECRET, _contact, _policy, _user

ALERTS = 150
LEVELS = 3


def _local_ports(pid: int) -> list[int]:
    """The local TCP ports of a process's sockets (its database connections), from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


async def _writing(database_url: str, pid: int) -> bool:
    """Whether the process holds an open transaction that has written (uncommitted escalation work)."""
    conn = await asyncpg.connect(database_url)  # as the database owner: pg_stat_activity shows every session
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY($1::int[]) AND backend_xid IS NOT NULL",
            _local_ports(pid)))
    finally:
        await conn.close()


async def _count(engine: AsyncEngine, tenant_id: str, sql: str) -> int:
    async with system_tx(engine) as conn:
        return int((await conn.execute(text(sql), {"t": tenant_id})).scalar_one())


async def test_a_killed_escalator_neither_skips_nor_repeats_a_level(engine: AsyncEngine, settings: Settings,
                                                                     database_url: str) -> None:
    tenant = await make_tenant(engine)
    user = await _user(engine, tenant, "oncall")
    await _contact(engine, settings, tenant, user, "WEBHOOK", "http://127.0.0.1:9/unused", {"secret": SECRET})
    await _policy(engine, tenant, [(0, [{"type": "user", "id": user}])] * LEVELS)  # all due at once
    devices = [await make_device(engine, tenant) for _ in range(ALERTS)]
    twins = [start_pulse("escalate", database_url) for _ in range(2)]
    try:
        await asyncio.sleep(2.0)  # both listening
        assert all(p.poll() is None for p in twins)
        async with system_tx(engine) as conn:
            now = datetime.now(UTC)
            for device in devices:
                await raise_alert(conn, AlertSignal(
                    tenant_id=tenant.tenant_id, fingerprint=f"RULE:kill:{device}", alert_type="THRESHOLD",
                    severity=4, title="pump stalled", summary="flow 0", device_id=device), now=now)
        total = ALERTS * LEVELS
        escalated = "SELECT count(*) FROM alert_events WHERE tenant_id = :t AND kind = 'ESCALATED'"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        writing = False
        while loop.time() < deadline and not writing:
            writing = await _writing(database_url, twins[0].pid)
        twins[0].send_signal(signal.SIGKILL)  # in the middle of a step: its open transaction is lost
        assert writing, "the escalator to kill never started a step"
        assert await _count(engine, tenant.tenant_id, escalated) < total, "all work was done before the kill"
        twins[0].wait(timeout=10)
        deadline = loop.time() + 60
        while loop.time() < deadline and await _count(engine, tenant.tenant_id, escalated) < total:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything extra would show up now
        assert twins[1].poll() is None, "the surviving escalator exited"
    finally:
        for p in twins:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=20)
    async with system_tx(engine) as conn:
        per_alert = (await conn.execute(text(
            "SELECT a.alert_id, array(SELECT (e.details->>'level')::int FROM alert_events e "
            "  WHERE e.alert_id = a.alert_id AND e.kind = 'PAGED' ORDER BY e.event_id) AS pages, "
            "  (SELECT count(*) FROM notification_jobs j WHERE j.alert_id = a.alert_id) AS jobs "
            "FROM alerts a WHERE a.tenant_id = :t"), {"t": tenant.tenant_id})).all()
    assert len(per_alert) == ALERTS
    wrong = [(r.alert_id, r.pages, r.jobs) for r in per_alert if list(r.pages) != [1, 2, 3] or r.jobs != LEVELS]
    assert wrong == []


async def test_an_opened_alert_pages_the_on_call_person_through_real_processes(
        engine: AsyncEngine, settings: Settings, database_url: str, receiver: Any) -> None:
    """Alert opened → `pulse escalate` resolves the schedule → `pulse deliver` posts the page to the person's
    webhook contact method, signed, within seconds."""
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    ana, ben = await _user(engine, tenant, "ana"), await _user(engine, tenant, "ben")
    await _contact(engine, settings, tenant, ben, "WEBHOOK", receiver.url, {"secret": SECRET})
    async with system_tx(engine) as conn:
        schedule = str((await conn.execute(text(
            "INSERT INTO oncall_schedules (tenant_id, name, timezone) VALUES (:t, 'ops', 'UTC') "
            "RETURNING schedule_id::text"), {"t": tenant.tenant_id})).scalar_one())
        await conn.execute(text(  # a daily rotation of one: ben is on call whenever this runs
            "INSERT INTO oncall_layers (tenant_id, schedule_id, position, name, rotation_type, rotation_start, "
            "  handoff_time, participants) VALUES (:t, CAST(:s AS uuid), 1, 'Primary', 'DAILY', '2026-01-01', "
            "  '00:00', CAST(:p AS uuid[]))"), {"t": tenant.tenant_id, "s": schedule, "p": [ben]})
    await _policy(engine, tenant, [(0, [{"type": "schedule", "id": schedule}]), (30, [{"type": "user", "id": ana}])])
    processes = [start_pulse("escalate", database_url),
                 start_pulse("deliver", database_url, PULSE_ALLOW_PRIVATE_URLS="loopback")]
    try:
        await asyncio.sleep(2.0)
        async with system_tx(engine) as conn:
            alert = await raise_alert(conn, AlertSignal(
                tenant_id=tenant.tenant_id, fingerprint=f"RULE:e2e:{device}", alert_type="THRESHOLD", severity=5,
                title="boiler pressure", summary="pressure too high", device_id=device), now=datetime.now(UTC))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline and not receiver.requests:
            await asyncio.sleep(0.05)
        assert all(p.poll() is None for p in processes)
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
    [(headers, body)] = receiver.requests
    page = json.loads(body)
    assert page["event"] == "PAGED" and page["alert"]["alert_id"] == alert.alert_id
    assert verify_signature(SECRET, headers["x-pulse-timestamp"], body, headers["x-pulse-signature"],
                            now=datetime.now(UTC))
    async with system_tx(engine) as conn:
        paged = (await conn.execute(text(
            "SELECT details FROM alert_events WHERE alert_id = CAST(:a AS uuid) AND kind = 'PAGED'"),
            {"a": alert.alert_id})).scalar_one()
    assert paged["user_id"] == ben and paged["via"]["schedule_id"] == schedule
