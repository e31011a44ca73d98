"""Ingest benchmark: real Mosquitto, real `pulse ingest --workers K`, real PostgreSQL, QoS 1 publishers.

    .venv/bin/python -m bench.ingest --devices 10000 --rate 20000 --duration 60 --workers 2   # live
    .venv/bin/python -m bench.ingest --devices 10000 --backlog 300000 --workers 2             # drain

Live: publisher processes send at a fixed total rate for the duration; latency is publish time (the
envelope's `ts`) to the moment a poller first sees the row committed, sampled every 50 ms on probe
devices. Backlog: the workers' persistent sessions are created, ingest is stopped, the backlog is
published (QoS 1, acknowledged by the broker), ingest is started and the drain to committed rows timed.
Both report lost and duplicated rows and each worker's peak RSS. Loopback only; everything stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

ADMIN_URL = os.environ.get("PULSE_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TENANT = "bench"
PROBES = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    # Benchmark broker: loopback only, anonymous (no per-device accounts to create for 10k devices),
    # no persistence (memory only), and the queue/in-flight limits of deploy/mosquitto/mosquitto.conf.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_inflight_messages 1000\nmax_queued_messages 2000000\nmax_queued_bytes 0\n"
                    f"user {os.environ.get('USER') or 'root'}\nlog_dest none\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)])
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


async def new_database(prefix: str) -> str:
    """A throwaway database with Pulse's schema; its URL (drop it with drop_database)."""
    name = f"{prefix}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(ADMIN_URL)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    from pulse.migrate import upgrade

    await asyncio.to_thread(upgrade, url)
    return url


async def prepare_database(devices: int) -> str:
    url = await new_database("bench_ingest")
    conn = await asyncpg.connect(url)
    await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ($1, 'Benchmark')", TENANT)
    sub = await conn.fetchval("INSERT INTO subscriptions (tenant_id, kind, device_limit) VALUES ($1, 'MAIN', $2) "
                              "RETURNING subscription_id", TENANT, devices)
    await conn.execute("INSERT INTO devices (tenant_id, device_id, subscription_id) "
                       "SELECT $1, 'd' || i, $2 FROM generate_series(0, $3 - 1) i", TENANT, sub, devices)
    await conn.execute("INSERT INTO device_state (tenant_id, device_id) SELECT $1, 'd' || i "
                       "FROM generate_series(0, $2 - 1) i", TENANT, devices)
    await conn.close()
    return url


async def drop_database(url: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await conn.close()


def free_ports(count: int) -> int:
    """A loopback port p with p … p+count-1 all free now (the workers' health ports are consecutive)."""
    for _ in range(100):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            for p in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


def start_ingest(url: str, port: int, workers: int, group: str, health_port: int, batch_size: int | None = None
                 ) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    if batch_size:
        env["PULSE_INGEST_BATCH_SIZE"] = str(batch_size)
    env.update({"PULSE_ENV": "production", "PULSE_ADMIN_KEY": secrets.token_hex(16),
                "PULSE_SECRET_KEY": "QmVuY2htYXJrLWtleS1vZi0zMi1ieXRlcy1sZW5ndGg=",
                "PULSE_MQTT_INGEST_PASSWORD": "bench", "PULSE_DATABASE_URL": url,
                "PULSE_MQTT_URL": f"mqtt://127.0.0.1:{port}", "PULSE_HEALTH_PORT": str(health_port),
                "PULSE_INGEST_SHARED_GROUP": group, "PULSE_LOG_FORMAT": "text", "PULSE_LOG_LEVEL": "info",
                "INGEST_WORKER_INDEX": "0"})
    proc = subprocess.Popen([sys.executable, "-m", "pulse", "ingest", "--workers", str(workers)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []

    def read() -> None:
        for line in iter(proc.stdout.readline, ""):  # type: ignore[union-attr]
            log.append(line)

    import threading

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while sum("subscribed" in line for line in log) < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("ingest did not start:\n" + "".join(log[-30:]))
        time.sleep(0.1)
    return proc, log


def start_pulse(command: str, url: str, **settings: str) -> subprocess.Popen[bytes]:
    """`pulse <command>` against `url`, quiet, on a free health port; `settings` are extra PULSE_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_DATABASE_URL": url, "PULSE_HEALTH_PORT": "0", "PULSE_LOG_LEVEL": "warning", **settings})
    return subprocess.Popen([sys.executable, "-m", "pulse", command], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen[Any]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def worker_rss_mb(proc: subprocess.Popen[Any]) -> list[float]:
    """Peak RSS (VmHWM) of each worker process under the supervisor."""
    out = []
    for child in psutil.Process(proc.pid).children():
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
        except FileNotFoundError:
            continue
        m = re.search(r"VmHWM:\s+(\d+) kB", status)
        if m:
            out.append(int(m.group(1)) / 1024)
    return out


def _publisher(index: int, port: int, devices: list[int], rate: float, duration: float, seq_base: int,
               result: Any) -> None:
    """One publisher process: its own connection, QoS 1, paced to `rate` msg/s, payloads pre-built per tick."""
    import gmqtt

    async def main() -> None:
        client = gmqtt.Client(f"bench-pub-{index}-{secrets.token_hex(3)}")
        await client.connect("127.0.0.1", port)
        storage = client._persistent_storage
        sent = 0
        start = time.monotonic()
        n = len(devices)
        cpu0 = time.process_time()
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= duration:
                break
            due = int(elapsed * rate) - sent
            if due <= 0:
                await asyncio.sleep(0.002)
                continue
            room = 900 - len(storage._messages)  # stay under the broker's Receive Maximum (1,000 in flight)
            if room <= 0:
                await asyncio.sleep(0.001)
                continue
            ts = datetime.now(UTC).isoformat()
            for _ in range(min(due, room, 500)):
                dev = devices[sent % n]
                seq = seq_base + sent // n
                client.publish(f"tenant/{TENANT}/device/d{dev}/telemetry",
                               f'{{"ts":"{ts}","seq":{seq},"metrics":{{"v":{sent}}}}}', qos=1)
                sent += 1
            await asyncio.sleep(0)
        for _ in range(600):
            if storage.is_empty:
                break
            await asyncio.sleep(0.05)
        result.put({"sent": sent, "cpu_s": time.process_time() - cpu0, "wall_s": time.monotonic() - start,
                    "unacked": len(storage._messages)})
        await client.disconnect()

    asyncio.run(main())


def c_publisher() -> Path:
    """Compile bench/pub.c once into a cache directory; the path of the binary."""
    source = Path(__file__).with_name("pub.c")
    binary = Path(tempfile.gettempdir()) / f"pulse-bench-pub-{int(source.stat().st_mtime)}"
    if not binary.exists():
        subprocess.run(["cc", "-O2", "-o", str(binary), str(source), ], check=True)
    return binary


def publish_c(port: int, devices: int, rate: float, duration: float, processes: int, seq_base: int = 0
              ) -> dict[str, Any]:
    """Like `publish`, with the C publisher: far less CPU per message than gmqtt, so more is left for ingest."""
    binary = c_publisher()
    procs = [subprocess.Popen([str(binary), "127.0.0.1", str(port), f"bench-cpub-{i}-{secrets.token_hex(3)}",
                               TENANT, str(i), str(processes), str(len(range(i, devices, processes))),
                               str(rate / processes), str(duration), str(seq_base), "900"],
                              stdout=subprocess.PIPE, text=True) for i in range(processes)]
    reports = [json.loads(p.communicate(timeout=duration + 120)[0]) for p in procs]
    return {"sent": sum(r["sent"] for r in reports), "publisher_cpu_s": sum(r["cpu_s"] for r in reports),
            "unacked": sum(r["unacked"] for r in reports), "wall_s": max(r["wall_s"] for r in reports)}


def publish(port: int, devices: int, rate: float, duration: float, processes: int, seq_base: int = 0,
            publisher: str = "python") -> dict[str, Any]:
    if publisher == "c":
        return publish_c(port, devices, rate, duration, processes, seq_base)
    ctx = mp.get_context("spawn")
    result: Any = ctx.Queue()
    share = [list(range(i, devices, processes)) for i in range(processes)]
    procs = [ctx.Process(target=_publisher, args=(i, port, share[i], rate / processes, duration, seq_base, result))
             for i in range(processes)]
    for p in procs:
        p.start()
    reports = [result.get(timeout=duration + 120) for _ in procs]
    for p in procs:
        p.join(30)
    return {"sent": sum(r["sent"] for r in reports), "publisher_cpu_s": sum(r["cpu_s"] for r in reports),
            "unacked": sum(r["unacked"] for r in reports), "wall_s": max(r["wall_s"] for r in reports)}


async def count_rows(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT (device_id, seq)) AS d FROM telemetry "
                                  "WHERE tenant_id = $1", TENANT)
        return int(row["n"]), int(row["d"])
    finally:
        await conn.close()


async def sample_latency(url: str, stop: asyncio.Event, samples: list[float]) -> None:
    """Every 50 ms, find probe-device rows that became visible and record now - ts."""
    conn = await asyncpg.connect(url)
    seen: dict[str, datetime] = {}
    probes = [f"d{i}" for i in range(PROBES)]
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            rows = await conn.fetch(
                "SELECT device_id, time FROM telemetry WHERE tenant_id = $1 AND device_id = ANY($2) "
                "AND time > $3 ORDER BY time", TENANT, probes,
                min(seen.values(), default=datetime(2000, 1, 1, tzinfo=UTC)))
            for r in rows:
                if r["time"] > seen.get(r["device_id"], datetime(2000, 1, 1, tzinfo=UTC)):
                    samples.append((now - r["time"]).total_seconds())
                    seen[r["device_id"]] = r["time"]
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def worker_metric(health_port: int, workers: int, name: str) -> int:
    """The sum of one counter over the workers' /metrics."""
    import httpx

    total = 0
    async with httpx.AsyncClient(timeout=2) as http:
        for i in range(workers):
            try:
                text = (await http.get(f"http://127.0.0.1:{health_port + i}/metrics")).text
            except httpx.HTTPError:
                continue
            m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
            total += int(float(m.group(1))) if m else 0
    return total


async def rows_written(health_port: int, workers: int) -> int:
    """Rows the workers have committed, from their own counters (cheap; counting the table would compete with
    ingest for the same cores)."""
    return await worker_metric(health_port, workers, "pulse_ingest_rows_written_total")


async def wait_for_rows(url: str, expected: int, timeout: float, health_port: int, workers: int
                        ) -> tuple[float, int, int]:
    """Wait until the workers report `expected` rows committed (polled every 50 ms), then count the table once."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await rows_written(health_port, workers) >= expected:
            break
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - start
    n, d = await count_rows(url)
    return elapsed, n, d


async def live(args: argparse.Namespace, url: str, port: int) -> dict[str, Any]:
    group = f"bench-{secrets.token_hex(3)}"
    health = free_ports(args.workers)
    proc, _ = start_ingest(url, port, args.workers, group, health, args.batch_size)
    stop = asyncio.Event()
    samples: list[float] = []
    sampler = asyncio.create_task(sample_latency(url, stop, samples))
    t0 = time.monotonic()
    pub = await asyncio.to_thread(publish, port, args.devices, args.rate, args.duration, args.publishers, 0,
                                  args.publisher)
    drain_s, n, d = await wait_for_rows(url, pub["sent"], 120, health, args.workers)
    total_s = time.monotonic() - t0
    stop.set()
    await sampler
    rss = worker_rss_mb(proc)
    waited = await worker_metric(health, args.workers, "pulse_ingest_mqtt_waited_total")
    code = stop_process(proc)
    return {"mode": "live", "waited": waited, "devices": args.devices, "target_rate": args.rate,
            "duration_s": args.duration,
            "workers": args.workers, "published": pub["sent"], "publish_wall_s": round(pub["wall_s"], 1),
            "publisher_cpu_s": round(pub["publisher_cpu_s"], 1), "committed_rows": n, "distinct_rows": d,
            "lost": pub["sent"] - d, "duplicated": n - d,
            "sustained_msg_s": round(d / (pub["wall_s"] + drain_s)),
            "with_start_msg_s": round(d / total_s), "offered_msg_s": round(pub["sent"] / pub["wall_s"]),
            "tail_after_publish_s": round(drain_s, 2), "latency_p50_s": round(percentile(samples, 50), 3),
            "latency_p99_s": round(percentile(samples, 99), 3), "latency_samples": len(samples),
            "worker_peak_rss_mb": [round(x) for x in rss], "ingest_exit": code}


async def backlog(args: argparse.Namespace, url: str, port: int) -> dict[str, Any]:
    group = f"bench-{secrets.token_hex(3)}"
    health = free_ports(args.workers)
    proc, _ = start_ingest(url, port, args.workers, group, health, args.batch_size)  # creates the persistent sessions
    stop_process(proc)
    rate = args.backlog / max(args.publish_s, 1)
    pub = await asyncio.to_thread(publish, port, args.devices, rate, args.publish_s, args.publishers, 0,
                                  args.publisher)
    t0 = time.monotonic()
    proc, _ = start_ingest(url, port, args.workers, group, health, args.batch_size)
    start_s = time.monotonic() - t0
    drain_s, n, d = await wait_for_rows(url, pub["sent"], 600, health, args.workers)
    drain_total = time.monotonic() - t0
    rss = worker_rss_mb(proc)
    waited = await worker_metric(health, args.workers, "pulse_ingest_mqtt_waited_total")
    code = stop_process(proc)
    return {"mode": "backlog", "waited": waited, "devices": args.devices, "workers": args.workers,
            "published": pub["sent"],
            "unacked_by_broker": pub["unacked"], "committed_rows": n, "distinct_rows": d,
            "lost": pub["sent"] - d, "duplicated": n - d, "ingest_start_s": round(start_s, 2),
            "drain_s": round(drain_total, 2), "drain_msg_s": round(d / drain_total),
            "drain_msg_s_after_start": round(d / max(drain_s, 0.001)),
            "worker_peak_rss_mb": [round(x) for x in rss], "ingest_exit": code}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=20000, help="live: total messages per second")
    parser.add_argument("--duration", type=float, default=60, help="live: seconds of publishing")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--batch-size", type=int, default=None, help="PULSE_INGEST_BATCH_SIZE (default: Pulse's)")
    parser.add_argument("--publisher", choices=["python", "c"], default="python",
                        help="python: gmqtt processes; c: bench/pub.c, MQTT over a plain socket (needs cc)")
    parser.add_argument("--backlog", type=int, default=0, help="backlog mode: messages to queue, then drain")
    parser.add_argument("--publish-s", type=float, default=30, help="backlog: seconds to spread publishing over")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    broker, port = start_broker(tmp)
    url = await prepare_database(args.devices)
    try:
        result = await (backlog(args, url, port) if args.backlog else live(args, url, port))
        result["machine"] = f"{os.cpu_count()} cores"
        print(json.dumps(result))
    finally:
        await drop_database(url)
        broker.terminate()
        broker.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
