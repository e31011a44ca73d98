"""Ingest's per-batch device_state update at different fillfactors: time per batch, HOT share, table size.

    .venv/bin/python -m bench.device_state --devices 10000 --batch 2000 --batches 100 --fillfactor 100 50 70 100 50

Each run is a fresh database with Pulse's schema (the fillfactor set on device_state, then `VACUUM FULL`) and
`--devices` devices of one tenant. It stages `--batches` batches of `--batch` distinct devices in turn, each
message carrying 2 of 20 metrics, one transaction per batch as the writer does, times ingest's own
`update_device_state` on each, and reports the median and p90 time per batch, how many of the row updates were
HOT and the table's size afterwards. Nothing else runs; autovacuum may or may not visit the table during a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.ingest import drop_database, new_database, percentile
from pulse.ingest.validate import Accepted
from pulse.ingest.writer import distinct_devices, stage_rows, update_device_state

TENANT = "bench-device-state"


async def run(devices: int, batch: int, batches: int, fillfactor: int) -> dict[str, Any]:
    url = await new_database("bench_device_state")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ($1, $1)", TENANT)
        sub = await conn.fetchval("INSERT INTO subscriptions (tenant_id, kind, device_limit) VALUES ($1, 'MAIN', $2) "
                                  "RETURNING subscription_id", TENANT, devices)
        await conn.execute("INSERT INTO devices (tenant_id, device_id, subscription_id) "
                           "SELECT $1, 'd' || i, $2 FROM generate_series(0, $3 - 1) i", TENANT, sub, devices)
        await conn.execute("INSERT INTO device_state (tenant_id, device_id) "
                           "SELECT $1, 'd' || i FROM generate_series(0, $2 - 1) i", TENANT, devices)
        await conn.execute(f"ALTER TABLE device_state SET (fillfactor = {int(fillfactor)})")
        await conn.execute("VACUUM FULL device_state")
        await conn.execute("ANALYZE device_state")
        start = datetime.now(UTC)
        times: list[float] = []
        n = 0
        for b in range(batches):
            rows = []
            for j in range(batch):
                n += 1
                ts = start + timedelta(milliseconds=n)
                rows.append(Accepted(
                    tenant_id=TENANT, device_id=f"d{(b * batch + j) % devices}", site_id=None, msg_type="telemetry",
                    ts=ts, seq=n, metrics={f"m{(n * 7 + k) % 20}": 40 + n % 20 for k in range(2)}, lat=None,
                    lng=None, received_at=ts, transport="MQTT"))
            async with conn.transaction():
                await stage_rows(conn, rows)
                began = time.perf_counter()
                await update_device_state(conn, len(distinct_devices(rows)), ts)
                times.append(time.perf_counter() - began)
        await asyncio.sleep(1)  # table statistics reach pg_stat_user_tables after a moment
        stats = await conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size('device_state') AS size "
            "FROM pg_stat_user_tables WHERE relname = 'device_state'")
    finally:
        await conn.close()
        await drop_database(url)
    return {"fillfactor": fillfactor, "batch_median_ms": round(statistics.median(times) * 1000, 1),
            "batch_p90_ms": round(percentile(times, 90) * 1000, 1), "updates": stats["n_tup_upd"],
            "hot_updates": stats["n_tup_hot_upd"],
            "hot_share": round(stats["n_tup_hot_upd"] / max(1, stats["n_tup_upd"]), 3),
            "table_kb": stats["size"] // 1024}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--fillfactor", type=int, nargs="+", default=[100, 50, 100, 50])
    args = parser.parse_args()
    for fillfactor in args.fillfactor:
        print(json.dumps(await run(args.devices, args.batch, args.batches, fillfactor)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
