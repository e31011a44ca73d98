"""Evaluation benchmark: real Mosquitto, real `pulse ingest` and `pulse evaluate` processes, real PostgreSQL.

    .venv/bin/python -m bench.evaluate --tenants 10 --devices 1000 --rules 20 --rate 10000 --duration 60
    .venv/bin/python -m bench.evaluate --liveness-devices 100000

Live (the first command): tenants x devices, `--rules` rules per tenant (bench/evaluate_load.py), steady telemetry
at `--rate` msg/s over MQTT QoS 1 from publisher processes, `--breach-rate` breaches a second (one device, one
threshold rule each) after a warm-up, and `--silent` devices that stop sending halfway (heartbeat interval
`--silent-interval`). A poller on its own connection checks every 50 ms when each breach message becomes visible
(committed) in `telemetry`, when its alert becomes visible, and when each silent device becomes STALE. Reported:

- breach message committed → alert committed (both as seen by the poller), p50/p99/max; also the alert's own
  record, `detected_at` (its insert, inside the committing transaction) - `triggered_at` (the message's arrival
  at ingest), and publish → alert visible;
- STALE lateness: visible STALE - (last message arrival + interval), and the recorded transition time
  (`device_state_history.changed_at`) - (last arrival + interval);
- alerts missing or duplicated, devices wrongly marked STALE, CPU seconds of each `pulse evaluate` process, and
  the machine's CPU shares while publishing (busy, idle, iowait, steal) with the checkpoints started meanwhile.

`--publisher c` sends the steady telemetry with bench/pub.c (one process per tenant) and the breaches with one
raw-socket publisher; each breach's metric is then one the steady rotation leaves alone for the next six rounds.

Liveness (`--liveness-devices N`): N ONLINE devices (10 tenants) heard within the last 20 s; one liveness pass is
run repeatedly in this process: CPU seconds of this process and of the PostgreSQL backend (from /proc, when the
server runs on this host) around each pass, for a full owner, a half owner (32 of 64 partitions) and a pass in which
1 % of the devices go STALE. Loopback only; everything stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.evaluate_load import LoadPlan, make_plan, prepare_fleet, publish
from bench.ingest import (
    drop_database,
    free_ports,
    new_database,
    percentile,
    start_broker,
    start_ingest,
    start_pulse,
    stop_process,
)

POLL_S = 0.05
LOCK_CLASS = 0x70756C73  # pulse.alerting.partitions.LOCK_CLASS


def _stats(values: list[float], prefix: str) -> dict[str, Any]:
    if not values:
        return {f"{prefix}_n": 0}
    return {f"{prefix}_n": len(values), f"{prefix}_p50_s": round(percentile(values, 50), 3),
            f"{prefix}_p99_s": round(percentile(values, 99), 3), f"{prefix}_max_s": round(max(values), 3)}


class Watcher:
    """Polls when breach messages, their alerts and silent devices' STALE states become visible (wall clock)."""

    def __init__(self, plan: LoadPlan, silent_interval_s: int) -> None:
        self.plan = plan
        self.interval = timedelta(seconds=silent_interval_s)
        self.start_wall = 0.0
        self.message_seen: dict[int, float] = {}  # breach seq -> visible
        self.alert_seen: dict[int, tuple[float, datetime | None, datetime]] = {}  # seq -> visible, triggered, detected
        self.stale_seen: dict[tuple[str, str], tuple[float, datetime]] = {}  # device -> visible, last_seen_at
        self.by_key = {(b.tenant_id, b.device_id, b.metric): b.seq for b in plan.breaches}
        self.alerts_unmatched = 0
        self.stop = asyncio.Event()
        self.rounds: list[float] = []  # how long each poll round took (its own lag bounds what it can see)

    async def run(self, url: str) -> None:
        conn = await asyncpg.connect(url)
        since = datetime.now(UTC)
        seen_alerts: set[str] = set()
        silent_t = [t for t, _ in self.plan.silent]
        silent_d = [d for _, d in self.plan.silent]
        try:
            while not self.stop.is_set():
                now = time.time()
                due = [b for b in self.plan.breaches
                       if b.seq not in self.message_seen and self.start_wall + b.at_s <= now]
                if due:
                    rows = await conn.fetch(
                        "SELECT u.s FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(t, d, s) WHERE EXISTS ("
                        "  SELECT 1 FROM telemetry x WHERE x.tenant_id = u.t AND x.device_id = u.d AND x.seq = u.s "
                        "  AND x.time > $4)", [b.tenant_id for b in due], [b.device_id for b in due],
                        [b.seq for b in due], since - timedelta(minutes=1))
                    for r in rows:
                        self.message_seen[r["s"]] = now
                for r in await conn.fetch(
                        "SELECT alert_id::text, tenant_id, device_id, rule_id::text, triggered_at, detected_at "
                        "FROM alerts WHERE alert_type = 'THRESHOLD' AND opened_at > $1", since):
                    if r["alert_id"] in seen_alerts:
                        continue
                    seen_alerts.add(r["alert_id"])
                    seq = self.by_key.get((r["tenant_id"], r["device_id"], self.plan.rule_metric.get(r["rule_id"], -1)))
                    if seq is None:
                        self.alerts_unmatched += 1
                    else:
                        self.alert_seen.setdefault(seq, (now, r["triggered_at"], r["detected_at"]))
                if self.plan.silent and now >= self.start_wall + self.plan.silence_at_s:
                    for r in await conn.fetch(
                            "SELECT tenant_id, device_id, last_seen_at FROM device_state WHERE status <> 'ONLINE' "
                            "AND (tenant_id, device_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                            silent_t, silent_d):
                        self.stale_seen.setdefault((r["tenant_id"], r["device_id"]), (now, r["last_seen_at"]))
                self.rounds.append(time.time() - now)
                await asyncio.sleep(POLL_S)
        finally:
            await conn.close()

    def settled(self) -> bool:
        return len(self.alert_seen) >= len(self.plan.breaches) and len(self.stale_seen) >= len(self.plan.silent)


async def _wait_for_partitions(url: str, timeout: float) -> None:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                       "AND classid = $1::int::oid AND objsubid = 2", LOCK_CLASS)
            if held == 64:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("the evaluators did not take all 64 partitions")
    finally:
        await conn.close()


async def _recorded(url: str, plan: LoadPlan, started: datetime, published_until: datetime) -> dict[str, Any]:
    """What the database recorded: STALE transition times of silent devices, devices wrongly marked STALE while
    telemetry still flowed, duplicate alerts."""
    conn = await asyncpg.connect(url)
    try:
        stale = await conn.fetch(
            "SELECT h.tenant_id, h.device_id, h.changed_at, ds.last_seen_at FROM device_state_history h "
            "JOIN device_state ds USING (tenant_id, device_id) WHERE h.status = 'STALE' AND h.changed_at > $1 "
            "ORDER BY h.changed_at", started)
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM (SELECT alert_id FROM alert_events WHERE kind = 'OPENED' "
            "GROUP BY alert_id HAVING count(*) > 1) x")
        rows, settled_by = -1, time.monotonic() + 15  # ingest may still be committing the publishers' last messages
        while (now_rows := await conn.fetchval("SELECT count(*) FROM telemetry")) != rows and \
                time.monotonic() < settled_by:
            rows = now_rows
            await asyncio.sleep(1.0)
        rows = now_rows
    finally:
        await conn.close()
    silent = set(plan.silent)
    silenced_at = started + timedelta(seconds=plan.silence_at_s)
    fell_silent: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for r in stale:
        if (r["tenant_id"], r["device_id"]) in silent and r["changed_at"] > silenced_at:
            fell_silent.setdefault((r["tenant_id"], r["device_id"]), (r["changed_at"], r["last_seen_at"]))
    return {"stale": fell_silent,
            "wrongly_stale": sum((r["tenant_id"], r["device_id"]) not in silent and r["changed_at"] < published_until
                                 for r in stale),
            "alerts_with_two_opened_events": int(duplicates), "telemetry_rows": int(rows)}


async def live(args: argparse.Namespace) -> dict[str, Any]:
    plan = make_plan(args.tenants, args.devices, args.duration, args.breach_rate, args.silent, args.warmup,
                     rounds_per_s=args.rate / args.tenants / args.devices if args.publisher == "c" else None)
    url = await new_database("bench_evaluate")
    tmp = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    broker, port = start_broker(tmp)
    procs: list[Any] = []
    try:
        await prepare_fleet(url, args.tenants, args.devices, args.rules, args.silent_interval, plan)
        health = free_ports(args.workers)
        ingest, _ = start_ingest(url, port, args.workers, f"bench-{secrets.token_hex(3)}", health)
        procs.append(ingest)
        chunk = {"PULSE_EVALUATE_CHUNK": str(args.chunk)} if args.chunk else {}
        evaluators = [start_pulse("evaluate", url, PULSE_EVALUATE_REBALANCE_S=str(args.rebalance), **chunk)
                      for _ in range(args.evaluators)]
        procs.extend(evaluators)
        await _wait_for_partitions(url, 60)
        await asyncio.sleep(3 * args.rebalance)  # several evaluators: let the shares settle
        cpu0 = [sum(psutil.Process(p.pid).cpu_times()[:2]) for p in evaluators]
        machine0, checkpoints0 = psutil.cpu_times(), await _checkpoints(url)
        started = datetime.now(UTC)
        watcher = Watcher(plan, args.silent_interval)
        watcher.start_wall = time.time()
        watch = asyncio.create_task(watcher.run(url))
        pub = await asyncio.to_thread(publish, port, plan, args.rate, args.duration, args.publishers, args.publisher)
        published_until = datetime.now(UTC)
        machine = _machine_share(machine0, psutil.cpu_times())
        machine["checkpoints"] = await _checkpoints(url) - checkpoints0
        deadline = time.monotonic() + args.silent_interval + 10
        while not watcher.settled() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        watcher.stop.set()
        await watch
        cpu = [round(sum(psutil.Process(p.pid).cpu_times()[:2]) - c, 1) for p, c in zip(evaluators, cpu0, strict=True)]
        recorded = await _recorded(url, plan, started, published_until)
    finally:
        exits = [stop_process(p) for p in procs]
        broker.terminate()
        broker.wait(10)
        await drop_database(url)
    to_alert = [watcher.alert_seen[s][0] - watcher.message_seen[s] for s in watcher.alert_seen
                if s in watcher.message_seen]
    at_s = {b.seq: b.at_s for b in plan.breaches}
    slowest = sorted(((round(watcher.alert_seen[s][0] - watcher.message_seen[s], 3), at_s[s])
                      for s in watcher.alert_seen if s in watcher.message_seen), reverse=True)[:5]
    by_5s: dict[int, list[float]] = {}  # committed -> alert by when the breach was sent (5 s buckets)
    for s in watcher.alert_seen:
        if s in watcher.message_seen:
            by_5s.setdefault(int(at_s[s] // 5) * 5, []).append(watcher.alert_seen[s][0] - watcher.message_seen[s])
    publish_to_alert = [watcher.alert_seen[s][0] - pub["published"][s] for s in watcher.alert_seen
                        if s in pub["published"]]
    arrival_to_insert = [(d - t).total_seconds() for _, t, d in watcher.alert_seen.values() if t is not None]
    interval = timedelta(seconds=args.silent_interval)
    stale_visible = [v - (last + interval).timestamp() for v, last in watcher.stale_seen.values()]
    stale_recorded = [(changed - (last + interval)).total_seconds() for changed, last in recorded["stale"].values()]
    return {"mode": "live", "tenants": args.tenants, "devices": args.tenants * args.devices, "rules": args.rules,
            "evaluators": args.evaluators, "ingest_workers": args.workers, "target_rate": args.rate,
            "duration_s": args.duration, "published_from": started.isoformat(timespec="seconds"),
            "published": pub["sent"], "unacked": pub["unacked"], "publisher": args.publisher,
            "publisher_cpu_s": round(pub["cpu_s"], 1),
            "telemetry_rows": recorded["telemetry_rows"], "breaches": len(plan.breaches),
            "breach_messages_seen": len(watcher.message_seen), "alerts_seen": len(watcher.alert_seen),
            "alerts_missing": len(plan.breaches) - len(watcher.alert_seen),
            "alerts_unexpected": watcher.alerts_unmatched,
            "alerts_with_two_opened_events": recorded["alerts_with_two_opened_events"],
            **_stats(watcher.rounds, "poll_round"),
            **_stats(to_alert, "committed_to_alert"), "committed_to_alert_slowest_and_at_s": slowest,
            "committed_to_alert_max_by_5s": {k: round(max(v), 2) for k, v in sorted(by_5s.items())},
            **_stats(arrival_to_insert, "recorded_arrival_to_alert"),
            **_stats(publish_to_alert, "publish_to_alert"),
            "silent_devices": len(plan.silent), "silent_interval_s": args.silent_interval,
            **_stats(stale_visible, "stale_late_visible"), **_stats(stale_recorded, "stale_late_recorded"),
            "wrongly_stale": recorded["wrongly_stale"], "evaluator_cpu_s": cpu, "machine_while_publishing": machine,
            "exit_codes": exits}


def _machine_share(before: Any, after: Any) -> dict[str, float]:
    """Shares of the machine's CPU time (all cores) between two psutil.cpu_times(): busy, idle, iowait, steal."""
    spent = {k: getattr(after, k) - getattr(before, k) for k in after._fields if k not in ("guest", "guest_nice")}
    total = sum(spent.values()) or 1.0
    idle, iowait, steal = spent.get("idle", 0.0), spent.get("iowait", 0.0), spent.get("steal", 0.0)
    return {"busy": round((total - idle - iowait - steal) / total, 3), "idle": round(idle / total, 3),
            "iowait": round(iowait / total, 3), "steal": round(steal / total, 3)}


async def _checkpoints(url: str) -> int:
    """Checkpoints PostgreSQL has started so far (timed and requested)."""
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"))
    finally:
        await conn.close()


def _backend_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a PostgreSQL backend on this host, None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def liveness_cpu(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import text

    from pulse.alerting.evaluator import liveness_pass
    from pulse.db import create_engine

    url = await new_database("bench_liveness")
    engine = create_engine(url, pool_size=1)
    result: dict[str, Any] = {"mode": "liveness", "devices": args.liveness_devices}
    try:
        conn = await asyncpg.connect(url)
        per_tenant = args.liveness_devices // 10
        for t in range(10):
            tenant = f"bench-{t}"
            await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ($1, $1)", tenant)
            sub = await conn.fetchval("INSERT INTO subscriptions (tenant_id, kind, device_limit) "
                                      "VALUES ($1, 'MAIN', $2) RETURNING subscription_id", tenant, per_tenant)
            await conn.execute("INSERT INTO devices (tenant_id, device_id, subscription_id) "
                               "SELECT $1, 'd' || i, $2 FROM generate_series(0, $3 - 1) i", tenant, sub, per_tenant)
            await conn.execute(
                "INSERT INTO device_state (tenant_id, device_id, status, last_seen_at, last_state_change_at) "
                "SELECT $1, 'd' || i, 'ONLINE', now() - make_interval(secs => i % 20), now() - interval '1 hour' "
                "FROM generate_series(0, $2 - 1) i", tenant, per_tenant)
        await conn.execute("VACUUM ANALYZE device_state")
        await conn.close()

        async with engine.connect() as c:
            pid = (await c.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await c.commit()

            async def one_pass(partitions: frozenset[int] | None) -> tuple[float, float | None, float, int]:
                cpu0, db0, t0 = time.process_time(), _backend_cpu_s(pid), time.perf_counter()
                async with c.begin():
                    await c.execute(text("SELECT set_config('role', 'pulse_worker', true)"))
                    changed = (await liveness_pass(c, datetime.now(UTC), partitions=partitions)).transitions
                db1 = _backend_cpu_s(pid)
                return (time.process_time() - cpu0, None if db0 is None or db1 is None else db1 - db0,
                        time.perf_counter() - t0, len(changed))

            for name, parts in (("all_partitions", None), ("half_partitions", frozenset(range(32)))):
                runs = [await one_pass(parts) for _ in range(args.passes)]
                assert all(r[3] == 0 for r in runs), "a steady pass changed devices"
                result[f"{name}_process_cpu_s_median"] = round(statistics.median(r[0] for r in runs), 3)
                result[f"{name}_process_cpu_s_max"] = round(max(r[0] for r in runs), 3)
                if all(r[1] is not None for r in runs):
                    result[f"{name}_postgres_cpu_s_median"] = round(statistics.median(r[1] or 0 for r in runs), 3)
                    result[f"{name}_postgres_cpu_s_max"] = round(max(r[1] or 0 for r in runs), 3)
                result[f"{name}_wall_s_median"] = round(statistics.median(r[2] for r in runs), 3)
            async with c.begin():
                await c.execute(text("UPDATE device_state SET last_seen_at = now() - interval '40 seconds' "
                                     "WHERE hashtext(device_id) % 100 = 0"))
            cpu, db, wall, changed = await one_pass(None)
            result.update({"transition_pass_changed": changed, "transition_pass_process_cpu_s": round(cpu, 3),
                           "transition_pass_postgres_cpu_s": None if db is None else round(db, 3),
                           "transition_pass_wall_s": round(wall, 3)})
    finally:
        await engine.dispose()
        await drop_database(url)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--devices", type=int, default=1000, help="devices per tenant")
    parser.add_argument("--rules", type=int, default=20, help="rules per tenant (16 thresholds, then others)")
    parser.add_argument("--rate", type=float, default=10000, help="steady messages per second, all devices")
    parser.add_argument("--duration", type=float, default=60, help="seconds of publishing")
    parser.add_argument("--warmup", type=float, default=5, help="seconds before the first breach")
    parser.add_argument("--breach-rate", type=float, default=10, help="breaches per second")
    parser.add_argument("--silent", type=int, default=50, help="devices that stop sending halfway")
    parser.add_argument("--silent-interval", type=int, default=5, help="heartbeat interval of those devices, s")
    parser.add_argument("--evaluators", type=int, default=1, help="`pulse evaluate` processes")
    parser.add_argument("--rebalance", type=float, default=2, help="PULSE_EVALUATE_REBALANCE_S of the evaluators")
    parser.add_argument("--chunk", type=int, default=0, help="PULSE_EVALUATE_CHUNK of the evaluators (0: default)")
    parser.add_argument("--workers", type=int, default=2, help="`pulse ingest` worker processes")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--publisher", choices=["raw", "gmqtt", "c"], default="raw",
                        help="raw: MQTT over a plain socket (little CPU); gmqtt: the gmqtt client; c: steady "
                             "telemetry from bench/pub.c (least CPU; needs cc), one process per tenant, breaches from "
                             "one raw publisher")
    parser.add_argument("--liveness-devices", type=int, default=0,
                        help="instead: CPU of one liveness pass over this many ONLINE devices")
    parser.add_argument("--passes", type=int, default=5, help="liveness: passes measured per variant")
    args = parser.parse_args()
    result = await (liveness_cpu(args) if args.liveness_devices else live(args))
    result["machine"] = f"{os.cpu_count()} cores"
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
