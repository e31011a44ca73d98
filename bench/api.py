"""Web API read benchmark: a real `pulse web` process over 10 tenants x 10,000 devices and 50 million telemetry rows.

    .venv/bin/python -m bench.api                                  # generate once (minutes), then measure
    .venv/bin/python -m bench.api --requests 500 --concurrency 4   # later runs reuse the dataset
    .venv/bin/python -m bench.api --regenerate                     # build the dataset again

The dataset (bench/api_data.py) lives in its own database (`pulse_bench_api`) and is reused while its parameters
match; migrations are applied to it before each run, so new indexes are measured too. `pulse web` runs as its own
process on a loopback port. The client sends a fixed number of requests per scenario over `--concurrency`
keep-alive connections, each with a valid access token of a random tenant, and measures the time from writing
the request to reading the whole response. It speaks minimal HTTP/1.1 over asyncio streams (no HTTP library) so
that it takes little of the CPU the server needs; its CPU time and `pulse web`'s are reported with the figures
(PostgreSQL's is not).
A request that does not answer 200 counts as an error. Loopback only; everything stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import psutil

from bench.api_data import (
    CITIES,
    KINDS,
    METRIC,
    SITES_PER_TENANT,
    TAGS,
    Dataset,
    Spec,
    device_id,
    generate,
    load_dataset,
    site_id,
    tenant_id,
)
from bench.ingest import free_port, percentile, stop_process
from bench.live import access_token, start_web, web_env

DATABASE = "pulse_bench_api"
BENCH_DATABASE = re.compile(r"^(pulse_)?bench_[a-z0-9_]{1,40}$")
"""--regenerate drops the database, so only names that are plainly a benchmark's are accepted."""
MAX_REQUESTS = 20_000


class Http1:
    """One keep-alive HTTP/1.1 connection: GET a path, read the status and the whole body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Http1:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def get(self, path: str, token: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {token}\r\n"
                          "Accept: application/json\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            return status, await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
            return status, bytes(body)
        raise RuntimeError(f"response to {path} has neither a length nor chunks")

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@dataclass
class Scenario:
    name: str
    what: str
    path: Callable[[random.Random], tuple[str, str]]
    """A request of this scenario: (tenant_id, path with query)."""


def _q(params: list[tuple[str, Any]]) -> str:
    return urlencode(params, quote_via=quote)


def scenarios(ds: Dataset) -> list[Scenario]:
    spec = ds.spec
    tags = [t for t, _ in TAGS]
    common = [t for t, share in TAGS if share >= 0.2]

    def tenant(r: random.Random) -> str:
        return tenant_id(r.randrange(spec.tenants))

    def site(r: random.Random) -> str:
        return site_id(r.randrange(SITES_PER_TENANT))

    def text(r: random.Random) -> str:
        kind = r.randrange(4)
        if kind == 0:
            return r.choice(CITIES).lower()[:4]  # a city prefix: ~5% of the devices
        if kind == 1:
            return r.choice(KINDS)  # a device type in the name: 12.5%
        if kind == 2:
            return str(r.randrange(100, 1000))  # three digits of a number: ~0.4%
        return device_id(r.randrange(spec.devices_per_tenant))  # one device by its id

    def devices(params: Callable[[random.Random], list[tuple[str, Any]]]) -> Callable[[random.Random], tuple[str, str]]:
        return lambda r: (tenant(r), "/api/v2/devices?" + _q([*params(r), ("limit", 50)]))

    start, end = ds.window_start.isoformat(), ds.window_end.isoformat()

    def history(hot: bool) -> Callable[[random.Random], tuple[str, str]]:
        def make(r: random.Random) -> tuple[str, str]:
            n = r.randrange(spec.hot_per_tenant) if hot else r.randrange(spec.hot_per_tenant, spec.devices_per_tenant)
            query = _q([("metric", METRIC), ("from", start), ("to", end), ("points", 500)])
            return tenant(r), f"/api/v2/devices/{device_id(n)}/telemetry/history?{query}"
        return make

    hot_rows = spec.days * 86400 // spec.hot_interval_s
    regular_rows = round(spec.days * 86400 / spec.regular_interval_s)
    return [
        Scenario("list_default", "first page, default order", devices(lambda r: [])),
        Scenario("list_page_name", "sort=name, one of the first 20 pages",
                 devices(lambda r: [("sort", "name"), ("offset", 50 * r.randrange(20))])),
        Scenario("list_online_recent", "state=ONLINE, sort=-last_seen_at",
                 devices(lambda r: [("state", "ONLINE"), ("sort", "-last_seen_at")])),
        Scenario("list_site_name", "site_id, sort=name", devices(lambda r: [("site_id", site(r)), ("sort", "name")])),
        Scenario("list_tag", "one tag (0.5%-60% of devices)", devices(lambda r: [("tag", r.choice(tags))])),
        Scenario("list_two_tags_name", "two common tags, sort=name",
                 devices(lambda r: [("tag", t) for t in r.sample(common, 2)] + [("sort", "name")])),
        Scenario("list_text", "q = city prefix, device type, 3 digits or a device id",
                 devices(lambda r: [("q", text(r))])),
        Scenario("list_text_tag_online", "q + tag + state=ONLINE, sort=name",
                 devices(lambda r: [("q", text(r)), ("tag", r.choice(common)), ("state", "ONLINE"),
                                    ("sort", "name")])),
        Scenario("list_offline_site_seen", "state=OFFLINE + site_id, sort=-last_seen_at",
                 devices(lambda r: [("state", "OFFLINE"), ("site_id", site(r)), ("sort", "-last_seen_at")])),
        Scenario("list_status_sort", "sort=status", devices(lambda r: [("sort", "status")])),
        Scenario("history_regular", f"{spec.days} days of {METRIC}, 500 points, ordinary device (~{regular_rows} rows)",
                 history(False)),
        Scenario("history_hot", f"{spec.days} days of {METRIC}, 500 points, device sending every "
                                    f"{spec.hot_interval_s} s ({hot_rows} rows)", history(True)),
    ]


async def measure(port: int, tokens: dict[str, str], scenario: Scenario, *, requests: int, warmup: int,
                  concurrency: int, seed: int) -> dict[str, Any]:
    """`warmup` unrecorded requests, then `requests` timed ones over `concurrency` connections."""
    rng = random.Random(f"{seed}:{scenario.name}")
    plan = [scenario.path(rng) for _ in range(warmup + requests)]
    latencies: list[float] = []
    errors: list[str] = []
    sample: dict[str, Any] = {}
    conns = [await Http1.open("127.0.0.1", port) for _ in range(concurrency)]
    todo = iter(enumerate(plan))

    async def worker(conn: Http1) -> None:
        for i, (tenant, path) in todo:
            t0 = time.perf_counter()
            status, body = await conn.get(path, tokens[tenant])
            elapsed = (time.perf_counter() - t0) * 1000
            if status != 200:
                errors.append(f"{status} {path}: {body[:200]!r}")
            elif i >= warmup:
                latencies.append(elapsed)
            if not sample and status == 200:
                sample.update(_summary(json.loads(body)))

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    return {"scenario": scenario.name, "what": scenario.what, "requests": len(latencies), "errors": len(errors),
            "first_error": errors[0] if errors else None, "sample": sample, "ms": _stats(latencies),
            "latencies": latencies}


def _stats(latencies: list[float]) -> dict[str, float | None]:
    latencies = sorted(latencies)
    return {"p50": round(percentile(latencies, 50), 1), "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1), "max": round(latencies[-1], 1) if latencies else None}


def _summary(body: dict[str, Any]) -> dict[str, Any]:
    if "total" in body:
        return {"total": body["total"], "items": len(body["items"])}
    return {"buckets": len(body.get("buckets", [])), "rows": sum(b["count"] for b in body.get("buckets", []))}


async def dataset(args: argparse.Namespace) -> Dataset:
    spec = Spec(tenants=args.tenants, devices_per_tenant=args.devices_per_tenant, rows=args.rows, days=args.days)
    found = None if args.regenerate else await load_dataset(args.database, spec)
    if found is not None:
        print(f"reusing {args.database}: {found.telemetry_rows} telemetry rows, "
              f"{found.window_start:%Y-%m-%d} to {found.window_end:%Y-%m-%d}", flush=True)
        return found
    print(f"generating {args.database} ({spec}); this takes minutes", flush=True)
    return await generate(args.database, spec, loaders=args.loaders, log=lambda m: print(m, flush=True))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = await dataset(args)
    from pulse.migrate import upgrade

    await asyncio.to_thread(upgrade, ds.url)
    port = free_port()
    env = web_env(ds.url, port)
    proc = await start_web(env, f"http://127.0.0.1:{port}")
    results = []
    try:
        tokens = {tenant_id(i): await access_token(env, tenant_id(i)) for i in range(ds.spec.tenants)}
        server = psutil.Process(proc.pid)
        chosen = [s for s in scenarios(ds) if not args.only or any(s.name.startswith(o) for o in args.only)]
        client_cpu0, server_cpu0, wall0 = time.process_time(), sum(server.cpu_times()[:2]), time.monotonic()
        for s in chosen:
            results.append(await measure(port, tokens, s, requests=args.requests, warmup=args.warmup,
                                         concurrency=args.concurrency, seed=args.seed))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "latencies"}), flush=True)
        client_cpu, wall = time.process_time() - client_cpu0, time.monotonic() - wall0
        server_cpu = sum(server.cpu_times()[:2]) - server_cpu0
    finally:
        stop_process(proc)
    sent = len(results) * (args.requests + args.warmup)
    return {"database": args.database, "telemetry_rows": ds.telemetry_rows,
            "window": [ds.window_start.isoformat(), ds.window_end.isoformat()], "concurrency": args.concurrency,
            "requests_per_scenario": args.requests, "warmup_per_scenario": args.warmup,
            "wall_s": round(wall, 1), "client_cpu_s": round(client_cpu, 2),
            "client_cpu_ms_per_request": round(client_cpu * 1000 / max(sent, 1), 3),
            "web_cpu_s": round(server_cpu, 2), "machine": f"{psutil.cpu_count()} cores",
            "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "device_list_all_ms": _stats([x for r in results if r["scenario"].startswith("list_")
                                          for x in r["latencies"]]),
            "results": [{k: r[k] for k in ("scenario", "ms", "errors", "sample")} for r in results]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=DATABASE, help="database holding the dataset (dropped on --regenerate)")
    parser.add_argument("--regenerate", action="store_true", help="build the dataset even if a matching one exists")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--devices-per-tenant", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=50_000_000, help="telemetry rows")
    parser.add_argument("--days", type=int, default=30, help="days the telemetry spans (ending today 00:00 UTC)")
    parser.add_argument("--loaders", type=int, default=2, help="connections generating telemetry at once")
    parser.add_argument("--requests", type=int, default=200, help=f"timed requests per scenario (≤ {MAX_REQUESTS})")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per scenario before the timed ones")
    parser.add_argument("--concurrency", type=int, default=2, help="connections sending at once")
    parser.add_argument("--only", nargs="*", help="scenarios whose names start with these")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= 64 or args.warmup < 0 \
            or not 1 <= args.tenants <= 99 or not 10 < args.devices_per_tenant <= 99_999 or not 1 <= args.days <= 365:
        parser.error("--requests, --concurrency, --warmup, --tenants, --devices-per-tenant or --days out of range")
    if not BENCH_DATABASE.match(args.database):
        parser.error("--database must be a benchmark database: pulse_bench_ or bench_ and [a-z0-9_]")
    print(json.dumps({"bench": "api", **await run(args)}))


if __name__ == "__main__":
    asyncio.run(main())
