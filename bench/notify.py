"""Delivery benchmark: real PostgreSQL, a real `pulse deliver` process, a local HTTP receiver in its own process.

    .venv/bin/python -m bench.notify --drain 10000          # queue 10,000 jobs, then time `pulse deliver`
    .venv/bin/python -m bench.notify --rate 1000 --duration 60   # alerts/min raised live: open → received

Drain: 10,000 alerts are opened (one webhook job each) with `pulse deliver` stopped, then it is started and
the time until the receiver has every delivery is measured. Live: alerts are opened at the given rate per
minute while `pulse deliver` runs; latency is the receiver's arrival time minus the alert event's
`occurred_at` (the commit of the alert). The receiver answers 200 at once and records each
X-Pulse-Delivery with its arrival time. Loopback only; everything stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from bench.ingest import drop_database, free_port, new_database, percentile, start_pulse, stop_process

TENANT = "bench-notify"
SECRET = secrets.token_hex(16)


def _receiver(port: int, ready: Any, results: Any, stop: Any, out: str) -> None:
    """A minimal HTTP/1.1 keep-alive responder: 200 to every request, (delivery id, event time, arrival)."""
    arrivals: list[tuple[str, str, float]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                arrivals.append((headers.get("x-pulse-delivery", ""), json.loads(body).get("occurred_at", ""),
                                 time.time()))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
            results.value = len(arrivals)
        server.close()
        with open(out, "w") as f:
            json.dump(arrivals, f)

    asyncio.run(main())


async def prepare(receiver_url: str) -> str:
    url = await new_database("bench_notify")
    from pulse.db import create_engine, system_tx
    from pulse.notify.routing import create_route
    from pulse.notify.service import create_channel
    from pulse.settings import Settings

    settings = Settings.from_env({"PULSE_DATABASE_URL": url, "PULSE_ALLOW_PRIVATE_URLS": "loopback"})
    engine = create_engine(url)
    async with system_tx(engine) as sa:
        from sqlalchemy import text

        await sa.execute(text("INSERT INTO tenants (tenant_id, name) VALUES (:t, 'Bench')"), {"t": TENANT})
        sub = (await sa.execute(text("INSERT INTO subscriptions (tenant_id, kind, device_limit) VALUES "
                                     "(:t, 'MAIN', 100000) RETURNING subscription_id"), {"t": TENANT})).scalar()
        await sa.execute(text("INSERT INTO devices (tenant_id, device_id, subscription_id) "
                              "SELECT :t, 'd' || i, :s FROM generate_series(0, 99) i"), {"t": TENANT, "s": sub})
        channel = await create_channel(sa, TENANT, "receiver", "WEBHOOK", {"url": receiver_url}, {"secret": SECRET},
                                       settings=settings)
        await create_route(sa, TENANT, name="all", channel_id=channel)
    await engine.dispose()
    return url


async def open_alerts(url: str, n: int, *, per_tx: int = 200, start: int = 0) -> None:
    from pulse.alerting.service import AlertSignal, raise_alert
    from pulse.db import create_engine, system_tx

    engine = create_engine(url)
    try:
        for i in range(start, start + n, per_tx):
            async with system_tx(engine) as conn:
                for k in range(i, min(i + per_tx, start + n)):
                    await raise_alert(conn, AlertSignal(
                        tenant_id=TENANT, fingerprint=f"BENCH:{k}", alert_type="THRESHOLD", severity=4,
                        title=f"bench alert {k}", summary="temp_c 31 > 30", device_id=f"d{k % 100}",
                        metric="temp_c", value=31), now=datetime.now(UTC))
    finally:
        await engine.dispose()


async def wait_count(counter: Any, expected: int, timeout: float) -> float:
    start = time.monotonic()
    while counter.value < expected and time.monotonic() - start < timeout:
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drain", type=int, default=0, help="jobs to queue, then drain")
    parser.add_argument("--rate", type=float, default=1000, help="live: alerts per minute")
    parser.add_argument("--duration", type=float, default=60, help="live: seconds")
    args = parser.parse_args()
    port = free_port()
    ctx = mp.get_context("spawn")
    ready, stop, count = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
    out = os.path.join(tempfile.mkdtemp(prefix="pulse-bench-notify-"), "arrivals.json")
    receiver = ctx.Process(target=_receiver, args=(port, ready, count, stop, out))
    receiver.start()
    ready.wait(10)
    url = await prepare(f"http://127.0.0.1:{port}/hook")
    result: dict[str, Any] = {}
    try:
        if args.drain:
            t0 = time.monotonic()
            await open_alerts(url, args.drain)
            queued_s = time.monotonic() - t0
            proc = start_pulse("deliver", url, PULSE_ALLOW_PRIVATE_URLS="loopback")
            drain_s = await wait_count(count, args.drain, 600)
            stop_process(proc)
            result = {"mode": "drain", "jobs": args.drain, "queue_s": round(queued_s, 1),
                      "drain_s_incl_start": round(drain_s, 2), "received": count.value,
                      "deliveries_per_s": round(count.value / drain_s)}
        else:
            proc = start_pulse("deliver", url, PULSE_ALLOW_PRIVATE_URLS="loopback")
            await asyncio.sleep(2)
            total = int(args.rate * args.duration / 60)
            interval = 60 / args.rate
            t0 = time.monotonic()
            for k in range(total):
                await open_alerts(url, 1, start=k)
                delay = t0 + (k + 1) * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await wait_count(count, total, 60)
            stop_process(proc)
            result = {"mode": "live", "alerts_per_min": args.rate, "opened": total, "received": count.value}
    finally:
        stop.set()
        receiver.join(10)
        with open(out) as f:
            arrivals = json.load(f)
        os.unlink(out)
        await drop_database(url)
    ids = [a[0] for a in arrivals]
    result["duplicates"] = len(ids) - len(set(ids))
    if result.get("mode") == "live":
        lat = [a[2] - datetime.fromisoformat(a[1]).timestamp() for a in arrivals if a[1]]
        result.update({"latency_p50_s": round(percentile(lat, 50), 3), "latency_p99_s": round(percentile(lat, 99), 3),
                       "latency_max_s": round(max(lat), 3) if lat else None})
    result["machine"] = f"{os.cpu_count()} cores"
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
