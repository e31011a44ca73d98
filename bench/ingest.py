"""Ingest load benchmark: real Mosquitto, real `pulse ingest --workers K`, real PostgreSQL, QoS 1 publishers.

    .venv/bin/python -m bench.ingest --devices 10000 --rate 20000 --duration 60 --workers 2     # live
    .venv/bin/python -m bench.ingest --devices 10000 --backlog 300000 --workers 2               # drain

Live: publisher processes send at a fixed total rate for the duration, each message a valid envelope whose `ts` is
its publish time. Backlog: the workers' persistent sessions are created, ingest is stopped, the backlog is published
(every message acknowledged by the broker), ingest is started again and the drain to committed rows is timed.

Commit times come from a commit clock (bench._common.CommitClock): `pg_current_snapshot()` polled every 20 ms says
when each transaction id became visible; a row's `xmin` names its batch's transaction, so every committed row has a
commit-visible time, and latency = that time - the row's `time` (the envelope's `ts`). Loss is messages the broker
acknowledged to a publisher minus distinct (device, seq) rows committed. Loopback only; the run stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import pstats
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench._common import (
    Broker,
    CommitClock,
    PublisherSpec,
    cpu_seconds,
    create_database,
    device_ids,
    drop_database,
    free_ports,
    machine_cpu,
    proc_status_kb,
    publisher_main,
    seed_fleet,
    split_round_robin,
    stop_process,
    sum_of,
)

TENANT = "bench"
ISSUE_TARGET = {"rate_msg_s": 20_000, "lost": 0, "p99_s": 1.0, "worker_peak_rss_mb": 300}


# --- the system under test -----------------------------------------------------------------------------------------

@dataclass
class Ingest:
    """`pulse ingest --workers K` as a real subprocess; with `profile_dir`, K workers under cProfile instead (the
    same children the supervisor would start: same environment, INGEST_WORKER_INDEX and health port)."""

    url: str
    mqtt_port: int
    workers: int
    group: str
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    profile_dir: Path | None = None
    health_base: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started_at: float = 0.0

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update({"PULSE_ENV": "production", "PULSE_ADMIN_KEY": secrets.token_hex(16),
                    "PULSE_SECRET_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
                    "PULSE_MQTT_INGEST_PASSWORD": secrets.token_hex(8), "PULSE_DATABASE_URL": self.url,
                    "PULSE_MQTT_URL": f"mqtt://127.0.0.1:{self.mqtt_port}", "PULSE_INGEST_SHARED_GROUP": self.group,
                    "PULSE_LOG_FORMAT": "text", "PULSE_LOG_LEVEL": "info", "INGEST_WORKER_INDEX": "0"})
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        self.health_base = free_ports(self.workers)
        env = self._env()
        log = self.log_path.open("ab")
        self.started_at = time.time()
        if self.profile_dir is None:
            env["PULSE_HEALTH_PORT"] = str(self.health_base)
            self.procs = [subprocess.Popen([sys.executable, "-m", "pulse", "ingest", "--workers", str(self.workers)],
                                           env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)]
        else:
            self.procs = []
            for i in range(self.workers):
                env_i = dict(env, PULSE_HEALTH_PORT=str(self.health_base + i), INGEST_WORKER_INDEX=str(i))
                out = self.profile_dir / f"worker-{i}.prof"
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "pulse", "ingest"], env=env_i,
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True))
        log.close()

    @property
    def ports(self) -> list[int]:
        return [self.health_base + i for i in range(self.workers)]

    def worker_pids(self) -> list[int]:
        """The processes doing the work: the supervisor's children (or the single process when K = 1)."""
        if self.profile_dir is not None or self.workers == 1:
            return [p.pid for p in self.procs if p.poll() is None]
        try:
            return [c.pid for c in psutil.Process(self.procs[0].pid).children()]
        except psutil.Error:
            return []

    def supervisor_pid(self) -> int | None:
        return self.procs[0].pid if self.profile_dir is None and self.workers > 1 else None

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait until every worker answers /readyz 200 (database reachable, subscribed); returns the time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"ingest exited during start-up:\n{self.log_tail()}")
            statuses = [await http_status(port, "/readyz") for port in self.ports]
            if all(s == 200 for s in statuses):
                return time.time()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"ingest not ready within {timeout:.0f}s:\n{self.log_tail()}")

    async def metrics(self) -> dict[str, float]:
        """Prometheus counters summed over the workers (a restarted worker starts again from zero)."""
        total: Counter[str] = Counter()
        for port in self.ports:
            body = await http_get(port, "/metrics")
            for line in body.splitlines():
                if line.startswith("#") or " " not in line:
                    continue
                name, value = line.rsplit(" ", 1)
                with contextlib.suppress(ValueError):
                    total[name] += float(value)
        return dict(total)

    def stop(self) -> list[int]:
        return [stop_process(p, 60) for p in self.procs]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


async def http_get(port: int, path: str, timeout: float = 2.0) -> str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), timeout)
        writer.close()
    except (OSError, TimeoutError):
        return ""
    return data.decode(errors="replace")


async def http_status(port: int, path: str) -> int:
    head = (await http_get(port, path)).split("\r\n", 1)[0].split()
    return int(head[1]) if len(head) >= 2 and head[1].isdigit() else 0


def rows_committed(m: dict[str, float]) -> float:
    return m.get("pulse_ingest_rows_written_total", 0.0)


# --- publishers ----------------------------------------------------------------------------------------------------

class Publishers:
    """Publisher processes (spawned, so none shares this process's CPU), started together, stoppable by `halt`."""

    def __init__(self, specs: list[PublisherSpec]) -> None:
        self._ctx = mp.get_context("spawn")
        self.specs = specs
        self.halt = self._ctx.Event()
        self._go = self._ctx.Event()
        self._ready: Any = self._ctx.Queue()
        self._results: Any = self._ctx.Queue()
        self._procs = [self._ctx.Process(target=publisher_main, args=(s, self._ready, self._go, self.halt,
                                                                       self._results), daemon=True) for s in specs]

    async def run(self, limit_s: float) -> list[dict[str, Any]]:
        for p in self._procs:
            p.start()
        try:
            await self._collect(self._ready, len(self._procs), 60)
            self._go.set()
            results = await self._collect(self._results, len(self._procs), limit_s)
        finally:
            self.halt.set()
            for p in self._procs:
                p.join(5)
                if p.is_alive():
                    p.terminate()
                    p.join(5)
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"publisher failed: {errors[0]}")
        return results

    @staticmethod
    async def _collect(queue: Any, count: int, timeout: float) -> list[Any]:
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            try:
                out.append(queue.get_nowait())
            except Exception:  # queue.Empty; multiprocessing has no async get
                if time.monotonic() > deadline:
                    raise RuntimeError(f"publishers: {len(out)} of {count} answered within {timeout:.0f}s") from None
                await asyncio.sleep(0.05)
                continue
            if isinstance(out[-1], dict) and "error" in out[-1]:
                raise RuntimeError(f"publisher failed: {out[-1]['error']}")
        return out


def publisher_specs(args: argparse.Namespace, port: int, devices: list[str], *, rate: float, duration_s: float,
                    count: int, run_id: str) -> list[PublisherSpec]:
    n = args.publishers
    shares = split_round_robin(devices, n)
    counts = [count // n + (1 if i < count % n else 0) for i in range(n)] if count else [0] * n
    return [PublisherSpec(i, port, TENANT, shares[i], rate / n, duration_s, counts[i], args.connections, args.window,
                          run_id) for i in range(n)]


def publisher_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    wall = max(r["last_wall"] for r in results) - min(r["first_wall"] for r in results)
    cpu = sum_of(results, "cpu_s")
    return {"processes": len(results), "connections": int(sum_of(results, "connections")),
            "sent": int(sum_of(results, "sent")), "acked_by_broker": int(sum_of(results, "acked")),
            "first_publish": min(r["first_wall"] for r in results),
            "last_publish": max(r["last_wall"] for r in results), "publish_s": round(wall, 2),
            "offered_msg_s": round(sum_of(results, "sent") / wall) if wall > 0 else None,
            "max_behind_schedule_msgs": max(int(r["behind_max"]) for r in results),
            "cpu_s": round(cpu, 2), "cpu_cores": round(cpu / wall, 3) if wall > 0 else None}


# --- measurement ---------------------------------------------------------------------------------------------------

@dataclass
class CpuAccount:
    """CPU seconds used between `begin()` and `end()` by each part of the system."""

    ingest: Ingest
    broker: Broker
    url: str
    start: dict[str, dict[int, float]] = field(default_factory=dict)
    machine_start: tuple[float, float] = (0.0, 0.0)
    bench_start: float = 0.0
    wall_start: float = 0.0

    async def _pids(self) -> dict[str, list[int]]:
        conn = await asyncpg.connect(self.url, server_settings={"application_name": "bench-cpu"})
        try:
            backends = [r["pid"] for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name NOT LIKE 'bench-%'")]
            background = [r["pid"] for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'")]
        finally:
            await conn.close()
        sup = self.ingest.supervisor_pid()
        return {"ingest_workers": self.ingest.worker_pids(), "ingest_supervisor": [sup] if sup else [],
                "broker": [self.broker.pid], "postgres_backends": backends,
                "postgres_background": background}

    async def _snapshot(self) -> dict[str, dict[int, float]]:
        return {group: {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}
                for group, pids in (await self._pids()).items()}

    async def begin(self) -> None:
        self.start = await self._snapshot()
        self.machine_start = machine_cpu()
        self.bench_start = time.process_time()
        self.wall_start = time.time()

    async def end(self, publisher_cpu_s: float) -> dict[str, Any]:
        snap = await self._snapshot()
        busy, total = machine_cpu()
        wall = time.time() - self.wall_start
        used = {group: sum(cpu - self.start.get(group, {}).get(pid, 0.0) for pid, cpu in pids.items())
                for group, pids in snap.items()}
        used["publishers"] = publisher_cpu_s
        used["bench_process"] = time.process_time() - self.bench_start
        machine_busy = busy - self.machine_start[0]
        cores = (total - self.machine_start[1]) / wall if wall > 0 else 0
        out: dict[str, Any] = {f"{k}_cores": round(v / wall, 2) for k, v in used.items()} if wall > 0 else {}
        out["machine_busy_cores"] = round(machine_busy / wall, 2) if wall > 0 else None
        out["other_cores"] = round((machine_busy - sum(used.values())) / wall, 2) if wall > 0 else None
        out["machine_cores"] = round(cores)
        out["window_s"] = round(wall, 1)
        return out


@dataclass
class Monitor:
    """Once a second: worker RSS (and restarts), rows committed according to the workers' counters."""

    ingest: Ingest
    rss_abort_mb: float
    halt: Any = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    pids_seen: set[int] = field(default_factory=set)
    aborted: str = ""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pids = self.ingest.worker_pids()
            self.pids_seen.update(pids)
            rss = [(proc_status_kb(p, "VmRSS") or 0) / 1024 for p in pids]
            m = await self.ingest.metrics()
            self.samples.append({"t": time.time(), "rows": rows_committed(m), "rss_mb": rss,
                                 "pending": m.get("pulse_ingest_pending", 0.0)})
            if rss and max(rss) > self.rss_abort_mb and not self.aborted:
                self.aborted = f"a worker passed {self.rss_abort_mb:.0f} MB RSS; publishing stopped early"
                if self.halt is not None:
                    self.halt.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    @property
    def restarts(self) -> int:
        return max(0, len(self.pids_seen) - self.ingest.workers)

    def peak_rss_sampled_mb(self) -> float:
        return max((max(s["rss_mb"]) for s in self.samples if s["rss_mb"]), default=0.0)


async def wait_committed(ingest: Ingest, expected: int, timeout: float) -> bool:
    """Wait until the workers' counters say `expected` rows were added (checked in the database afterwards)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rows_committed(await ingest.metrics()) >= expected:
            return True
        if not ingest.alive():
            return False
        await asyncio.sleep(0.25)
    return False


def percentile_keys(values: list[float] | None) -> dict[str, float | None]:
    names = ("p50_s", "p90_s", "p99_s", "p999_s")
    if not values:
        return dict.fromkeys(names)
    return {k: round(v, 3) for k, v in zip(names, values, strict=True)}


async def analyse(url: str, clock: CommitClock, origin: float, *, latency: bool) -> dict[str, Any]:
    """Rows, duplicates, quarantine, each transaction's commit time, and (live) publish-to-commit latency."""
    conn = await asyncpg.connect(url, server_settings={"application_name": "bench-analyse"})
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT (device_id, seq)) AS d FROM telemetry "
                                  "WHERE tenant_id = $1", TENANT)
        quarantined = {r["reason"]: r["n"] for r in await conn.fetch(
            "SELECT reason, count(*) AS n FROM quarantine_events GROUP BY reason")}
        per_tx = await conn.fetch("SELECT xmin::text::bigint AS x, count(*) AS n FROM telemetry GROUP BY 1")
        commits = [(r["x"], clock.visible_at(r["x"]), r["n"]) for r in per_tx]
        known = [(x, at, n) for x, at, n in commits if at is not None]
        out: dict[str, Any] = {
            "rows": row["n"], "distinct_rows": row["d"], "duplicated": row["n"] - row["d"],
            "quarantined": quarantined, "transactions": len(commits),
            "rows_per_transaction": round(row["n"] / len(commits)) if commits else 0,
            "rows_without_commit_time": sum(n for _, at, n in commits if at is None),
            "commit_clock_max_gap_s": round(clock.max_gap_s, 3),
            "commit_clock_gaps_over_100ms": [
                {"at_s": round(b - origin, 2), "gap_s": round(b - a, 3)}
                for a, b in zip(clock.times, clock.times[1:], strict=False) if b - a > 0.1][:20],
        }
        if known:
            out["first_commit"] = min(at for _, at, _ in known)
            out["last_commit"] = max(at for _, at, _ in known)
            per_window: Counter[int] = Counter()
            for _, at, n in known:
                per_window[int((at - origin) // 10)] += n
            out["committed_per_10s"] = [{"from_s": w * 10, "msg_s": round(per_window[w] / 10)}
                                        for w in range(min(per_window), max(per_window) + 1)]
        if latency and known:
            await conn.execute("CREATE TEMP TABLE bench_commits (x bigint PRIMARY KEY, at double precision)")
            await conn.copy_records_to_table("bench_commits", records=[(x, at) for x, at, _ in known])
            lat = "(c.at - extract(epoch FROM t.time))"
            join = "FROM telemetry t JOIN bench_commits c ON c.x = t.xmin::text::bigint WHERE t.tenant_id = $1"
            summary = await conn.fetchrow(
                f"SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY {lat}) AS p, "
                f"min({lat}) AS lo, max({lat}) AS hi, count(*) AS n {join}", TENANT)
            windows = await conn.fetch(
                f"SELECT floor((extract(epoch FROM t.time) - $2) / 10)::int AS w, count(*) AS n, "
                f"percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY {lat}) AS p, max({lat}) AS hi "
                f"{join} GROUP BY 1 ORDER BY 1", TENANT, origin)
            out["latency"] = {**percentile_keys(summary["p"]), "min_s": round(summary["lo"], 3),
                              "max_s": round(summary["hi"], 3), "rows": summary["n"]}
            out["latency_by_publish_10s"] = [
                {"from_s": w["w"] * 10, "rows": w["n"], "p50_s": round(w["p"][0], 3), "p99_s": round(w["p"][1], 3),
                 "max_s": round(w["hi"], 3)} for w in windows]
        return out
    finally:
        await conn.close()


def worker_peaks(ingest: Ingest) -> list[float]:
    """Peak RSS (VmHWM) of each live worker, read before they are stopped."""
    return [round((proc_status_kb(pid, "VmHWM") or 0) / 1024) for pid in ingest.worker_pids()]


def write_profiles(profile_dir: Path) -> list[str]:
    out = []
    for prof in sorted(profile_dir.glob("worker-*.prof")):
        text = prof.with_suffix(".txt")
        with text.open("w") as f:
            stats = pstats.Stats(str(prof), stream=f)
            stats.sort_stats("tottime").print_stats(40)
            stats.sort_stats("cumulative").print_stats(60)
        out.append(str(text))
    return out


# --- modes ---------------------------------------------------------------------------------------------------------

@dataclass
class Setup:
    args: argparse.Namespace
    tmp: Path
    url: str
    broker: Broker
    devices: list[str]
    run_id: str

    def ingest(self, group: str) -> Ingest:
        extra = dict(kv.split("=", 1) for kv in self.args.ingest_env)
        return Ingest(self.url, self.broker.port, self.args.workers, group, self.tmp / "ingest.log", extra,
                      self.args.profile)


async def live(s: Setup) -> dict[str, Any]:
    args = s.args
    ingest = s.ingest(f"bench-{s.run_id}")
    ingest.start()
    clock = CommitClock(s.url)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await ingest.wait_ready()
        tasks.append(asyncio.create_task(clock.run(stop)))
        pubs = Publishers(publisher_specs(args, s.broker.port, s.devices, rate=args.rate, duration_s=args.duration,
                                          count=0, run_id=s.run_id))
        monitor = Monitor(ingest, args.rss_abort_mb, pubs.halt)
        cpu = CpuAccount(ingest, s.broker, s.url)
        await cpu.begin()
        tasks.append(asyncio.create_task(monitor.run(stop)))
        results = await pubs.run(args.duration + 90)
        pub = publisher_summary(results)
        drained = await wait_committed(ingest, pub["acked_by_broker"], args.tail)
        cpu_used = await cpu.end(pub["cpu_s"])
        peaks = worker_peaks(ingest)
    finally:
        exits = await asyncio.to_thread(ingest.stop)
        await asyncio.sleep(0.1)
        stop.set()
        for t in tasks:
            with contextlib.suppress(Exception):
                await t
    found = await analyse(s.url, clock, pub["first_publish"], latency=True)
    last = found.get("last_commit")
    sustained = found["distinct_rows"] / (last - pub["first_publish"]) if last else 0.0
    lost = pub["acked_by_broker"] - found["distinct_rows"]
    result = {
        "mode": "live", "devices": args.devices, "workers": args.workers, "target_rate_msg_s": args.rate,
        "duration_s": args.duration, "publisher": pub, "drained_before_deadline": drained,
        "committed_distinct": found["distinct_rows"], "duplicated": found["duplicated"],
        "lost": lost if drained else None, "not_committed_at_end": lost,
        "sustained_msg_s": round(sustained),
        "tail_after_last_publish_s": round(last - pub["last_publish"], 2) if last else None,
        "latency": found.get("latency"), "latency_by_publish_10s": found.get("latency_by_publish_10s"),
        "committed_per_10s": found.get("committed_per_10s"), "worker_peak_rss_mb": peaks,
        "worker_peak_rss_sampled_mb": round(monitor.peak_rss_sampled_mb()), "worker_restarts": monitor.restarts,
        "cpu": cpu_used, "quarantined": found["quarantined"], "transactions": found["transactions"],
        "rows_per_transaction": found["rows_per_transaction"],
        "rows_without_commit_time": found["rows_without_commit_time"],
        "commit_clock_max_gap_s": found["commit_clock_max_gap_s"],
        "commit_clock_gaps_over_100ms": found["commit_clock_gaps_over_100ms"], "ingest_exit_codes": exits,
        "aborted": monitor.aborted or None,
    }
    p99 = (found.get("latency") or {}).get("p99_s")
    result["issue_targets"] = {
        "rate": result["sustained_msg_s"] >= ISSUE_TARGET["rate_msg_s"],
        "lost": drained and lost == 0,
        "p99": p99 is not None and p99 <= ISSUE_TARGET["p99_s"],
        "rss": bool(peaks) and max(peaks) <= ISSUE_TARGET["worker_peak_rss_mb"],
        "note": "issue targets: 10,000 devices, --workers 2, >= 20,000 msg/s for 60 s, 0 lost, p99 <= 1 s, "
                "<= 300 MB per worker",
    }
    return result


async def backlog(s: Setup) -> dict[str, Any]:
    args = s.args
    group = f"bench-{s.run_id}"
    first = s.ingest(group)
    first.start()
    try:
        await first.wait_ready()  # the persistent sessions (and their shared subscription) now exist
    finally:
        await asyncio.to_thread(first.stop)
    pubs = Publishers(publisher_specs(args, s.broker.port, s.devices, rate=0, duration_s=0, count=args.backlog,
                                      run_id=s.run_id))
    pub = publisher_summary(await pubs.run(args.time_limit))
    clock = CommitClock(s.url)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(clock.run(stop))]
    await asyncio.sleep(0.1)
    ingest = s.ingest(group)
    ingest.start()
    try:
        ready_at = await ingest.wait_ready()
        cpu = CpuAccount(ingest, s.broker, s.url)
        await cpu.begin()
        monitor = Monitor(ingest, args.rss_abort_mb)
        tasks.append(asyncio.create_task(monitor.run(stop)))
        drained = await wait_committed(ingest, pub["acked_by_broker"], args.tail)
        cpu_used = await cpu.end(0.0)
        peaks = worker_peaks(ingest)
    finally:
        exits = await asyncio.to_thread(ingest.stop)
        await asyncio.sleep(0.1)
        stop.set()
        for t in tasks:
            with contextlib.suppress(Exception):
                await t
    found = await analyse(s.url, clock, ingest.started_at, latency=False)
    last, first_commit = found.get("last_commit"), found.get("first_commit")
    lost = pub["acked_by_broker"] - found["distinct_rows"]
    drain_s = (last - ingest.started_at) if last else None
    return {
        "mode": "backlog", "devices": args.devices, "workers": args.workers, "backlog": args.backlog,
        "publisher": pub, "drained_before_deadline": drained, "committed_distinct": found["distinct_rows"],
        "duplicated": found["duplicated"], "lost": lost if drained else None, "not_committed_at_end": lost,
        "ingest_start_to_ready_s": round(ready_at - ingest.started_at, 2),
        "drain_s_from_process_start": round(drain_s, 2) if drain_s else None,
        "drain_msg_s_from_process_start": round(found["distinct_rows"] / drain_s) if drain_s else None,
        "drain_msg_s_first_to_last_commit": round(found["distinct_rows"] / (last - first_commit))
        if last and first_commit and last > first_commit else None,
        "committed_per_10s": found.get("committed_per_10s"), "worker_peak_rss_mb": peaks,
        "worker_peak_rss_sampled_mb": round(monitor.peak_rss_sampled_mb()), "worker_restarts": monitor.restarts,
        "cpu": cpu_used, "quarantined": found["quarantined"], "transactions": found["transactions"],
        "rows_per_transaction": found["rows_per_transaction"], "ingest_exit_codes": exits,
        "aborted": monitor.aborted or None,
    }


def human(r: dict[str, Any]) -> str:
    pub = r["publisher"]
    rss = "/".join(str(x) for x in r["worker_peak_rss_mb"]) or "?"
    loss = f"lost {r['lost']}" if r["lost"] is not None else f"NOT DRAINED ({r['not_committed_at_end']} uncommitted)"
    cpu = r["cpu"]
    if r["mode"] == "live":
        lat = r.get("latency") or {}
        return (f"live: {r['devices']:,} devices, {r['workers']} workers, offered {pub['offered_msg_s']:,} msg/s for "
                f"{pub['publish_s']}s -> sustained {r['sustained_msg_s']:,} msg/s, {r['committed_distinct']:,} of "
                f"{pub['acked_by_broker']:,} committed, {loss}, dup {r['duplicated']}, latency p50 {lat.get('p50_s')}s "
                f"p99 {lat.get('p99_s')}s max {lat.get('max_s')}s, worker peak RSS {rss} MB, publishers "
                f"{pub['cpu_cores']} cores, workers {cpu.get('ingest_workers_cores')} cores, postgres "
                f"{cpu.get('postgres_backends_cores')}, broker {cpu.get('broker_cores')}, machine busy "
                f"{cpu.get('machine_busy_cores')} of {cpu.get('machine_cores')}")
    return (f"backlog: {r['backlog']:,} messages, {r['devices']:,} devices, {r['workers']} workers -> drained in "
            f"{r['drain_s_from_process_start']}s from process start ({r['drain_msg_s_from_process_start']} msg/s; "
            f"{r['drain_msg_s_first_to_last_commit']} msg/s first to last commit), {loss}, dup {r['duplicated']}, "
            f"worker peak RSS {rss} MB, workers {cpu.get('ingest_workers_cores')} cores, postgres "
            f"{cpu.get('postgres_backends_cores')}, broker {cpu.get('broker_cores')}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=10000)
    p.add_argument("--workers", type=int, default=2, help="pulse ingest --workers")
    p.add_argument("--rate", type=float, default=20000, help="live: total messages per second offered")
    p.add_argument("--duration", type=float, default=60, help="live: seconds of publishing")
    p.add_argument("--backlog", type=int, default=0, help="backlog mode: messages to queue while ingest is stopped")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--connections", type=int, default=1, help="MQTT connections per publisher process (devices are "
                   "spread over them; 1 = a gateway-like connection carrying many devices)")
    p.add_argument("--window", type=int, default=1000, help="unacknowledged QoS 1 messages per connection")
    p.add_argument("--tail", type=float, default=90, help="seconds to wait for the last rows after publishing")
    p.add_argument("--time-limit", type=float, default=290, help="the whole run stops after this many seconds")
    p.add_argument("--rss-abort-mb", type=float, default=3000, help="stop publishing if a worker grows past this")
    p.add_argument("--ingest-env", action="append", default=[], metavar="PULSE_X=V",
                   help="extra environment for ingest, e.g. PULSE_INGEST_BATCH_SIZE=5000 (repeatable)")
    p.add_argument("--broker-persistence", action="store_true", help="broker persistence on (autosave 60 s)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="run the K workers under cProfile and write DIR/worker-<i>.prof and .txt")
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON result here")
    p.add_argument("--keep-tmp", action="store_true", help="keep the broker/ingest logs directory")
    args = p.parse_args(argv)
    for kv in args.ingest_env:
        if "=" not in kv or not kv.startswith("PULSE_"):
            p.error(f"--ingest-env {kv!r}: expected PULSE_NAME=value")
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pulse-bench-ingest-"))
    broker = Broker(tmp, persistence=args.broker_persistence)
    url = ""
    try:
        broker.start()
        url = await create_database("bench_ingest")
        devices = device_ids(args.devices)
        await seed_fleet(url, TENANT, devices)
        setup = Setup(args, tmp, url, broker, devices, secrets.token_hex(3))
        result = await asyncio.wait_for(backlog(setup) if args.backlog else live(setup), args.time_limit)
        result["machine"] = {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30),
                             "broker": "mosquitto (private, loopback, persistence "
                                       f"{'on' if args.broker_persistence else 'off'})"}
        result["command"] = " ".join(["python -m bench.ingest", *sys.argv[1:]])
        if args.profile is not None:
            result["profiles"] = write_profiles(args.profile)
        return result
    except BaseException:
        print(f"benchmark failed; logs in {tmp}", file=sys.stderr)
        args.keep_tmp = True
        raise
    finally:
        broker.stop()
        if url:
            await drop_database(url)
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    print(human(result))


if __name__ == "__main__":
    main()
