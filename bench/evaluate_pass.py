"""The evaluator's cost per device: evaluation passes over the benchmark fleet, with nothing else running.

    .venv/bin/python -m bench.evaluate_pass --tenants 10 --devices 1000 --rules 20 --rounds 40

A fresh database with the fleet and rules of bench/evaluate.py (bench/evaluate_load.py). Each round writes one
telemetry message per device through ingest's own batch statements (two of `m0`…`m19` per message in turn,
values 40-59, as the live benchmark's steady traffic; `--breaches` devices a round get a value of 150 for one
threshold metric instead), then one `Evaluator.evaluate_devices` pass judges every device, as `pulse evaluate`
does when ingest wakes it. Reported for the rounds after the first 20 (by then every device has reported every
metric, as in the live benchmark's steady state): median and p90 of the pass's wall time, this process's CPU and
PostgreSQL's CPU (every `postgres` process on this host, from /proc) per pass, and the alerts opened and closed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psutil

from bench.evaluate_load import THRESHOLD_RULES, make_plan, prepare_fleet
from bench.ingest import drop_database, new_database, percentile
from pulse.alerting.evaluator import Evaluator
from pulse.db import create_engine
from pulse.ingest.validate import Accepted
from pulse.ingest.writer import distinct_devices, stage_rows, update_device_state, write_telemetry

WARM_ROUNDS = 20  # every device has reported each of the 20 metrics by then


def _postgres_cpu_s() -> float:
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            try:
                total += sum(proc.cpu_times()[:2])
            except psutil.Error:
                pass
    return total


def _round_rows(devices: list[tuple[str, str]], round_no: int, start: datetime, breached: set[int],
                rng: random.Random) -> list[Accepted]:
    a, b = round_no % 20, (round_no + 1) % 20
    rows = []
    for i, (tenant, device) in enumerate(devices):
        ts = start + timedelta(seconds=round_no, microseconds=i)
        metrics: dict[str, bool | int | float | str] = {f"m{a}": 40 + (round_no * 7 + i) % 20,
                                                        f"m{b}": 40 + (round_no * 3 + i) % 20}
        if i in breached:
            metrics[f"m{rng.randrange(THRESHOLD_RULES)}"] = 150
        rows.append(Accepted(tenant_id=tenant, device_id=device, site_id=None, msg_type="telemetry", ts=ts,
                             seq=round_no, metrics=metrics, lat=None, lng=None, received_at=ts, transport="MQTT"))
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = make_plan(args.tenants, args.devices, 60, 0, 0, 0)
    url = await new_database("bench_evaluate_pass")
    engine = create_engine(url, pool_size=2)
    rng = random.Random(1)
    try:
        await prepare_fleet(url, args.tenants, args.devices, args.rules, 5, plan)
        conn = await asyncpg.connect(url)
        evaluator = Evaluator(engine)
        await evaluator.load_rules()
        start = datetime.now(UTC) - timedelta(seconds=args.rounds + 5)
        passes: list[dict[str, float]] = []
        for round_no in range(args.rounds):
            breached = set(rng.sample(range(len(plan.devices)), args.breaches))
            rows = _round_rows(plan.devices, round_no, start, breached, rng)
            for i in range(0, len(rows), 2000):
                part = rows[i:i + 2000]
                async with conn.transaction():
                    await stage_rows(conn, part)
                    await write_telemetry(conn)
                    await update_device_state(conn, len(distinct_devices(part)), part[-1].received_at)
            if round_no == 1:
                await conn.execute("ANALYZE")
            opened, closed = evaluator.alerts_opened, evaluator.alerts_closed
            pg0, cpu0, wall0 = _postgres_cpu_s(), time.process_time(), time.perf_counter()
            await evaluator.evaluate_devices(plan.devices, start + timedelta(seconds=round_no + 0.5))
            passes.append({"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
                           "pg_cpu_s": _postgres_cpu_s() - pg0, "opened": evaluator.alerts_opened - opened,
                           "closed": evaluator.alerts_closed - closed})
        await conn.close()
    finally:
        await engine.dispose()
        await drop_database(url)
    steady = passes[WARM_ROUNDS:]
    out: dict[str, Any] = {"tenants": args.tenants, "devices": len(plan.devices), "rules": args.rules,
                           "rounds": args.rounds, "steady_rounds": len(steady), "breaches_per_round": args.breaches}
    for key in ("wall_s", "cpu_s", "pg_cpu_s"):
        values = [p[key] for p in steady]
        out[f"{key}_p50"] = round(statistics.median(values), 3)
        out[f"{key}_p90"] = round(percentile(values, 90), 3)
    out["us_per_device_cpu_p50"] = round(out["cpu_s_p50"] / len(plan.devices) * 1e6, 1)
    out["us_per_device_pg_p50"] = round(out["pg_cpu_s_p50"] / len(plan.devices) * 1e6, 1)
    out["alerts_opened"] = sum(p["opened"] for p in steady)
    out["alerts_closed"] = sum(p["closed"] for p in steady)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--devices", type=int, default=1000, help="per tenant")
    parser.add_argument("--rules", type=int, default=20, help="per tenant")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--breaches", type=int, default=10, help="devices a round sent a breaching value")
    args = parser.parse_args()
    if args.rounds <= WARM_ROUNDS:
        parser.error(f"--rounds must be more than {WARM_ROUNDS} (the warm-up rounds)")
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
