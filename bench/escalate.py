"""Escalation timing benchmark: how late a due step fires, with a real `pulse escalate` on real PostgreSQL.

    .venv/bin/python -m bench.escalate --rate 300 --duration 60

Alerts are opened at the given rate per minute (one transaction each, as the evaluator does) while one
`pulse escalate` runs. The policy has two levels: level 1 (delay 0) pages whoever is on call in a weekly
schedule, level 2 (delay 1 minute) pages a named user. A poller records when each ESCALATED event
becomes visible (committed); lateness is that moment minus the step's due time:
level 1 — woken by NOTIFY — is due when the alert opened; level 2 — woken by the timer — is due 60 s
after level 1 fired. Pages go to a webhook contact method nobody delivers (no `pulse deliver` runs), so only
escalation is measured. Loopback only; everything stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from bench.ingest import drop_database, new_database, percentile, start_pulse, stop_process

TENANT = "bench-escalate"
POLL_S = 0.02


async def prepare(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ($1, 'Bench')", TENANT)
        sub = await conn.fetchval("INSERT INTO subscriptions (tenant_id, kind, device_limit) VALUES "
                                  "($1, 'MAIN', 1000) RETURNING subscription_id", TENANT)
        await conn.execute("INSERT INTO devices (tenant_id, device_id, subscription_id) "
                           "SELECT $1, 'd' || i, $2 FROM generate_series(0, 99) i", TENANT, sub)
        users = [await conn.fetchval("INSERT INTO users (tenant_id, email, display_name) VALUES ($1, $2, $3) "
                                     "RETURNING user_id", TENANT, f"{name}@bench.test", name)
                 for name in ("ana", "ben", "cy")]
        for user in users:
            await conn.execute("INSERT INTO user_contact_methods (tenant_id, user_id, kind, address) "
                               "VALUES ($1, $2, 'WEBHOOK', 'http://127.0.0.1:9/nobody')", TENANT, user)
        schedule = await conn.fetchval("INSERT INTO oncall_schedules (tenant_id, name, timezone) "
                                       "VALUES ($1, 'ops', 'Europe/Berlin') RETURNING schedule_id", TENANT)
        await conn.execute("INSERT INTO oncall_layers (tenant_id, schedule_id, position, name, rotation_type, "
                           "rotation_start, handoff_time, participants) VALUES ($1, $2, 1, 'Primary', 'WEEKLY', "
                           "$3, '09:00', $4)", TENANT, schedule, date(2026, 1, 5), users[:2])
        policy = await conn.fetchval("INSERT INTO escalation_policies (tenant_id, name, is_default) "
                                     "VALUES ($1, 'default', true) RETURNING policy_id", TENANT)
        for position, delay, target in ((1, 0, {"type": "schedule", "id": str(schedule)}),
                                        (2, 1, {"type": "user", "id": str(users[2])})):
            await conn.execute("INSERT INTO escalation_levels (tenant_id, policy_id, position, delay_minutes, "
                               "targets) VALUES ($1, $2, $3, $4, $5::jsonb)", TENANT, policy, position, delay,
                               json.dumps([target]))
    finally:
        await conn.close()


async def open_alerts(url: str, total: int, per_minute: float) -> None:
    from pulse.alerting.service import AlertSignal, raise_alert
    from pulse.db import create_engine, system_tx

    engine = create_engine(url)
    interval = 60 / per_minute
    t0 = time.monotonic()
    try:
        for k in range(total):
            async with system_tx(engine) as conn:
                await raise_alert(conn, AlertSignal(
                    tenant_id=TENANT, fingerprint=f"BENCH:{k}", alert_type="THRESHOLD", severity=5,
                    title=f"bench alert {k}", summary="pressure too high", device_id=f"d{k % 100}"),
                    now=datetime.now(UTC))
            delay = t0 + (k + 1) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await engine.dispose()


async def watch(url: str, expected: int, timeout: float) -> dict[tuple[str, int], float]:
    """When each (alert, level) ESCALATED event became visible, by wall clock."""
    seen: dict[tuple[str, int], float] = {}
    conn = await asyncpg.connect(url)
    last = 0
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            rows = await conn.fetch("SELECT event_id, alert_id::text, (details->>'level')::int AS level "
                                    "FROM alert_events WHERE kind = 'ESCALATED' AND event_id > $1 "
                                    "ORDER BY event_id", last)
            now = time.time()
            for r in rows:
                seen.setdefault((r["alert_id"], r["level"]), now)
                last = max(last, r["event_id"])
            await asyncio.sleep(POLL_S)
    finally:
        await conn.close()
    return seen


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300, help="alerts opened per minute")
    parser.add_argument("--duration", type=float, default=60, help="seconds of opening alerts")
    args = parser.parse_args()
    total = int(args.rate * args.duration / 60)
    url = await new_database("bench_escalate")
    proc = None
    try:
        await prepare(url)
        proc = start_pulse("escalate", url)
        await asyncio.sleep(3)
        watcher = asyncio.create_task(watch(url, 2 * total, args.duration + 120))
        await open_alerts(url, total, args.rate)
        seen = await watcher
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT a.alert_id::text, a.opened_at, e.created_at AS fired_at, (e.details->>'level')::int AS level, "
                "  (SELECT count(*) FROM alert_events p WHERE p.alert_id = a.alert_id AND p.kind = 'PAGED') AS pages "
                "FROM alerts a JOIN alert_events e ON e.alert_id = a.alert_id AND e.kind = 'ESCALATED'")
        finally:
            await conn.close()
    finally:
        if proc is not None:
            stop_process(proc)
        await drop_database(url)
    fired = {(r["alert_id"], r["level"]): r for r in rows}
    late: dict[int, list[float]] = {1: [], 2: []}
    for (alert_id, level), visible in seen.items():
        row = fired[(alert_id, level)]
        due: datetime = row["opened_at"] if level == 1 else fired[(alert_id, 1)]["fired_at"] + timedelta(minutes=1)
        late[level].append(visible - due.timestamp())
    result: dict[str, Any] = {"alerts": total, "alerts_per_min": args.rate, "steps_seen": len(seen),
                              "steps_expected": 2 * total,
                              "pages_per_alert": sorted({int(r["pages"]) for r in rows})}
    for level, values in late.items():
        if values:
            result[f"level{level}_late_p50_s"] = round(percentile(values, 50), 3)
            result[f"level{level}_late_p99_s"] = round(percentile(values, 99), 3)
            result[f"level{level}_late_max_s"] = round(max(values), 3)
    result["machine"] = f"{os.cpu_count()} cores"
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
