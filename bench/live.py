"""Live-updates benchmark: a real `pulse web` process, N WebSocket clients each following one device.

    .venv/bin/python -m bench.live --clients 500 --rate 20 --batch 50 --duration 20

A fresh database gets one tenant and `--clients` devices. `pulse web` runs as its own process on a loopback
port; every client takes a ticket, opens `WS /api/v2/ws` and subscribes to its own device. Then, `--rate`
times a second, one transaction writes new latest metrics for the next `--batch` devices (round robin) into
device_state and sends `NOTIFY pulse_telemetry` with their [tenant_id, device_id] pairs, exactly as the
ingest writer does per committed batch. Each metric map carries the wall time taken just before that
transaction commits; latency is the client's receive time minus that time, so it covers commit, the LISTEN
delivery, the one read per notification, fan-out and the WebSocket hop. The clients all run in this one
process (one event loop), which is part of what is measured. Loopback only; everything stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import asyncpg
import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.ingest import drop_database, free_port, new_database, percentile, stop_process

TENANT = "bench-live"
MAX_CLIENTS = 5000
MAX_DURATION_S = 300.0
DRAIN_S = 10.0


async def prepare(devices: int) -> str:
    url = await new_database("bench_live")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ($1, 'Benchmark')", TENANT)
        sub = await conn.fetchval("INSERT INTO subscriptions (tenant_id, kind, device_limit) "
                                  "VALUES ($1, 'MAIN', $2) RETURNING subscription_id", TENANT, devices)
        await conn.execute("INSERT INTO devices (tenant_id, device_id, subscription_id) "
                           "SELECT $1, 'd' || i, $2 FROM generate_series(0, $3 - 1) i", TENANT, sub, devices)
        await conn.execute("INSERT INTO device_state (tenant_id, device_id) SELECT $1, 'd' || i "
                           "FROM generate_series(0, $2 - 1) i", TENANT, devices)
    finally:
        await conn.close()
    return url


def web_env(url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_DATABASE_URL": url, "PULSE_HTTP_HOST": "127.0.0.1", "PULSE_HTTP_PORT": str(port),
                "PULSE_LOG_LEVEL": "warning", "PULSE_LOG_FORMAT": "text"})
    return env


async def start_web(env: dict[str, str], base: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "pulse", "web"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"pulse web exited with {proc.returncode}")
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    stop_process(proc)
    raise RuntimeError("pulse web did not answer /healthz")


async def access_token(env: dict[str, str], tenant_id: str = TENANT) -> str:
    """A customer's access token for `tenant_id`, signed with the key `pulse web` publishes."""
    from pulse.db import create_engine, system_tx
    from pulse.fleet.keys import get_active_signing_key, sign_jwt
    from pulse.settings import Settings

    settings = Settings.from_env(env)
    engine = create_engine(settings.require_database_url(), pool_size=1)
    try:
        async with system_tx(engine) as conn:
            kid, key = await get_active_signing_key(conn, settings.secret_key_bytes)
    finally:
        await engine.dispose()
    now = int(time.time())
    return sign_jwt(key, kid, {"iss": settings.issuer, "aud": settings.jwt_audience, "sub": "bench",
                               "iat": now, "nbf": now, "exp": now + 3600, "roles": ["customer"],
                               "tenant_id": tenant_id})


class Client:
    """One socket following one device; records the latency of every telemetry frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.latencies_ms: list[float] = []
        self.lagged = 0

    async def read(self) -> None:
        async for raw in self.ws:
            arrived = time.time()
            msg = json.loads(raw)
            if msg["type"] == "telemetry":
                self.latencies_ms.append((arrived - msg["metrics"]["sent"]) * 1000)
            elif msg["type"] == "lagged":
                self.lagged += msg["dropped"]


async def open_client(http: httpx.AsyncClient, ws_url: str, device_id: str) -> Client:
    r = await http.post("/api/v2/ws/ticket")
    r.raise_for_status()
    ws = await connect(f"{ws_url}?ticket={r.json()['ticket']}", max_queue=None)
    await ws.send(json.dumps({"op": "subscribe", "topic": "device", "device_id": device_id}))
    ack = json.loads(await ws.recv())
    if ack["type"] != "subscribed":
        raise RuntimeError(f"subscribe failed: {ack}")
    await ws.recv()  # the device_state snapshot (no metrics yet, so no telemetry snapshot)
    return Client(ws)


async def notify_loop(url: str, devices: int, rate: float, batch: int, duration: float) -> int:
    """Write and notify `batch` devices `rate` times a second; returns how many device updates were sent."""
    conn = await asyncpg.connect(url)
    sent = 0
    cursor = 0
    interval = 1 / rate
    start = time.monotonic()
    try:
        k = 0
        while time.monotonic() - start < duration:
            ids = [f"d{(cursor + i) % devices}" for i in range(min(batch, devices))]
            cursor = (cursor + len(ids)) % devices
            async with conn.transaction():
                stamp = time.time()
                await conn.execute(
                    "UPDATE device_state SET latest_metrics = latest_metrics || jsonb_build_object('k', $3::int, "
                    "  'sent', $4::float8), latest_metrics_at = latest_metrics_at || jsonb_build_object("
                    "  'k', now(), 'sent', now()), last_message_ts = now(), updated_at = now() "
                    "WHERE tenant_id = $1 AND device_id = ANY($2::text[])", TENANT, ids, k, stamp)
                await conn.execute("SELECT pg_notify('pulse_telemetry', $1)",
                                   json.dumps([[TENANT, d] for d in ids]))
            sent += len(ids)
            k += 1
            delay = start + k * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await conn.close()
    return sent


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = await prepare(args.clients)
    port = free_port()
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/api/v2/ws"
    env = web_env(url, port)
    proc = await start_web(env, base)
    clients: list[Client] = []
    readers: list[asyncio.Task[None]] = []
    try:
        token = await access_token(env)
        async with httpx.AsyncClient(base_url=base, timeout=10.0, trust_env=False,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            for i in range(args.clients):
                clients.append(await open_client(http, ws_url, f"d{i}"))
        readers = [asyncio.create_task(c.read()) for c in clients]
        await asyncio.sleep(1)
        sent = await notify_loop(url, args.clients, args.rate, args.batch, args.duration)
        deadline = time.monotonic() + DRAIN_S
        while sum(len(c.latencies_ms) for c in clients) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        for c in clients:
            await c.ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        stop_process(proc)
        await drop_database(url)
    latencies = sorted(x for c in clients for x in c.latencies_ms)
    return {"clients": args.clients, "notifications_per_s": args.rate, "devices_per_notification": args.batch,
            "duration_s": args.duration, "updates_sent": sent, "frames_received": len(latencies),
            "lagged_dropped": sum(c.lagged for c in clients),
            "latency_ms": {"p50": round(percentile(latencies, 50), 1), "p95": round(percentile(latencies, 95), 1),
                           "p99": round(percentile(latencies, 99), 1),
                           "max": round(latencies[-1], 1) if latencies else None}}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200, help=f"WebSockets, one device each (≤ {MAX_CLIENTS})")
    parser.add_argument("--rate", type=float, default=20, help="notifications (committed batches) per second")
    parser.add_argument("--batch", type=int, default=50, help="devices named per notification")
    parser.add_argument("--duration", type=float, default=20, help=f"seconds of notifying (≤ {MAX_DURATION_S:.0f})")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.duration <= MAX_DURATION_S or args.rate <= 0 \
            or args.batch < 1:
        parser.error("--clients, --duration, --rate or --batch out of range")
    print(json.dumps({"bench": "live", **await run(args)}))


if __name__ == "__main__":
    asyncio.run(main())
