"""Live updates under ingest load: real `pulse ingest` at a given rate while WebSocket clients follow devices.

    .venv/bin/python -m bench.live_ingest --clients 1000 --devices 10000 --rate 10000 --duration 30 --publisher c

A fresh database with one tenant and `--devices` devices, a private Mosquitto, `pulse ingest --workers K` and
`pulse web` as real processes (bench/ingest.py, bench/live.py). `--clients` WebSocket clients, all in this process,
each follow one device, spread evenly over the fleet (d0, d10, d20, … for 1,000 of 10,000), so their updates
are spread evenly over time. Publisher processes send QoS 1 telemetry for every device at `--rate` messages a
second in total (each device in turn), each message stamped with its publish time as `ts`; the frames the
clients receive carry that time as `time`.

A LISTEN connection in a process of its own records when each `pulse_telemetry` notification arrives: ingest sends one
per committed batch, in the batch's transaction, naming its devices, so its arrival is the batch's commit (plus
the notification's hop). For each telemetry frame:

- committed → received = the frame's arrival minus the arrival of the first notification naming the device at or
  after the frame's `time`. A message committed in a later batch than that first one makes this figure larger,
  never smaller. Both clocks are read by processes the OS schedules, so a frame can be seen a few milliseconds
  before its notification; such frames count as 0 ms and are reported (`frames_before_listener`).
- published → received = the frame's arrival minus its `time` (adds the broker and ingest's batching).

Loopback only; everything stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import multiprocessing as mp
import os
import secrets
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from websockets.asyncio.client import ClientConnection

from bench.ingest import (
    TENANT,
    drop_database,
    free_port,
    free_ports,
    percentile,
    prepare_database,
    publish,
    rows_written,
    start_broker,
    start_ingest,
    stop_process,
)
from bench.live import access_token, open_client, start_web, web_env

MAX_CLIENTS = 5000
MAX_DURATION_S = 300.0
QUIET_S = 3.0


class Follower:
    """One socket following one device: (frame time, arrival) of every telemetry frame, and dropped frames."""

    def __init__(self, device_id: str, ws: ClientConnection) -> None:
        self.device_id = device_id
        self.ws = ws
        self.frames: list[tuple[float, float]] = []
        self.lagged = 0

    async def read(self) -> None:
        async for raw in self.ws:
            arrived = time.time()
            msg = json.loads(raw)
            if msg["type"] == "telemetry":
                self.frames.append((datetime.fromisoformat(msg["time"]).timestamp(), arrived))
            elif msg["type"] == "lagged":
                self.lagged += msg["dropped"]


def _listen(url: str, followed: list[str], ready: Any, stop: Any, result: Any) -> None:
    """A process of its own (so the clients' event loop cannot delay it): LISTEN on `pulse_telemetry` and note when
    each notification naming a followed device arrives; hands {device: [arrival, …]} and the count back."""

    async def main() -> None:
        wanted = set(followed)
        arrivals: dict[str, list[float]] = defaultdict(list)
        count = 0

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            nonlocal count
            arrived = time.time()
            count += 1
            for tenant, device in json.loads(payload):
                if tenant == TENANT and device in wanted:
                    arrivals[device].append(arrived)

        conn = await asyncpg.connect(url)
        try:
            await conn.add_listener("pulse_telemetry", on_notify)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        result.put((dict(arrivals), count))

    asyncio.run(main())


class CommitLog:
    """Arrival times of `pulse_telemetry` notifications per followed device, from the listening process."""

    def __init__(self, arrivals: dict[str, list[float]], notifications: int) -> None:
        self.arrivals = arrivals
        self.notifications = notifications

    def committed_at(self, device: str, published: float) -> float | None:
        """The first commit naming `device` at or after `published` (None if it never came)."""
        times = self.arrivals.get(device, [])
        i = bisect.bisect_left(times, published)
        return times[i] if i < len(times) else None


def _stats(values: list[float]) -> dict[str, float | None]:
    values.sort()
    return {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1),
            "p99": round(percentile(values, 99), 1), "max": round(values[-1], 1) if values else None}


async def _wait_quiet(followers: list[Follower], limit_s: float) -> None:
    """Until no frame has arrived for QUIET_S (or `limit_s` passed)."""
    deadline = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sum(len(f.frames) for f in followers)
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= QUIET_S:
            return
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pulse-bench-live-"))
    broker, mqtt_port = start_broker(tmp)
    url = await prepare_database(args.devices)
    procs: list[Any] = []
    followers: list[Follower] = []
    readers: list[asyncio.Task[None]] = []
    listener: Any = None
    try:
        health = free_ports(args.workers)
        ingest, _ = start_ingest(url, mqtt_port, args.workers, f"bench-{secrets.token_hex(3)}", health)
        procs.append(ingest)
        port = free_port()
        env = web_env(url, port)
        web = await start_web(env, f"http://127.0.0.1:{port}")
        procs.append(web)
        token = await access_token(env, TENANT)
        followed = [f"d{i * (args.devices // args.clients)}" for i in range(args.clients)]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0, trust_env=False,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            for device in followed:
                client = await open_client(http, f"ws://127.0.0.1:{port}/api/v2/ws", device)
                followers.append(Follower(device, client.ws))
        ctx = mp.get_context("spawn")
        ready, stop, result = ctx.Event(), ctx.Event(), ctx.Queue()
        listener = ctx.Process(target=_listen, args=(url, followed, ready, stop, result))
        listener.start()
        if not await asyncio.to_thread(ready.wait, 30):
            raise RuntimeError("the LISTEN process did not start")
        readers = [asyncio.create_task(f.read()) for f in followers]
        await asyncio.sleep(1)
        cpu0 = time.process_time()
        web_cpu0 = sum(psutil.Process(web.pid).cpu_times()[:2])
        pub = await asyncio.to_thread(publish, mqtt_port, args.devices, args.rate, args.duration, args.publishers, 0,
                                      args.publisher)
        await _wait_quiet(followers, 60)
        client_cpu = time.process_time() - cpu0
        web_cpu = sum(psutil.Process(web.pid).cpu_times()[:2]) - web_cpu0
        committed_rows = await rows_written(health, args.workers)
        stop.set()
        commits = CommitLog(*await asyncio.to_thread(result.get, True, 30))
    finally:
        for f in followers:
            await f.ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        if listener is not None:
            stop.set()
            listener.join(10)
        for proc in reversed(procs):
            stop_process(proc)
        await drop_database(url)
        broker.terminate()
        broker.wait(10)
    commit_ms: list[float] = []
    publish_ms: list[float] = []
    unmatched = early = 0
    for f in followers:
        for published, arrived in f.frames:
            publish_ms.append((arrived - published) * 1000)
            committed = commits.committed_at(f.device_id, published)
            if committed is None:
                unmatched += 1
            else:
                early += committed > arrived
                commit_ms.append(max(0.0, arrived - committed) * 1000)
    return {"clients": args.clients, "devices": args.devices, "ingest_workers": args.workers,
            "offered_msg_s": round(pub["sent"] / pub["wall_s"]), "published": pub["sent"],
            "committed_rows": committed_rows, "duration_s": args.duration,
            "followed_messages": round(pub["sent"] * args.clients / args.devices),
            "frames_received": len(publish_ms), "frames_without_commit": unmatched,
            "frames_before_listener": early,
            "lagged_dropped": sum(f.lagged for f in followers), "notifications": commits.notifications,
            "committed_to_received_ms": _stats(commit_ms), "published_to_received_ms": _stats(publish_ms),
            "bench_cpu_s": round(client_cpu, 1), "web_cpu_s": round(web_cpu, 2),
            "publisher_cpu_s": round(pub["publisher_cpu_s"], 1), "machine": f"{os.cpu_count()} cores"}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000, help=f"WebSockets, one device each (≤ {MAX_CLIENTS})")
    parser.add_argument("--devices", type=int, default=10000, help="devices publishing (≥ clients)")
    parser.add_argument("--rate", type=float, default=10000, help="messages per second in total")
    parser.add_argument("--duration", type=float, default=30, help=f"seconds of publishing (≤ {MAX_DURATION_S:.0f})")
    parser.add_argument("--workers", type=int, default=2, help="pulse ingest worker processes")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--publisher", choices=["python", "c"], default="python",
                        help="python: gmqtt processes; c: bench/pub.c, far less CPU per message (needs cc)")
    args = parser.parse_args()
    if not 1 <= args.clients <= min(MAX_CLIENTS, args.devices) or not 0 < args.duration <= MAX_DURATION_S \
            or args.rate <= 0 or not 1 <= args.workers <= 16 or not 1 <= args.publishers <= 16:
        parser.error("--clients, --devices, --duration, --rate, --workers or --publishers out of range")
    print(json.dumps({"bench": "live_ingest", **await run(args)}))


if __name__ == "__main__":
    asyncio.run(main())
