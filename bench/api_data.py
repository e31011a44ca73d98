"""The web API benchmark's dataset: tenants, sites, devices with tags and state, and days of telemetry, generated
server-side into a database of its own and kept for later runs.

Everything is made by `INSERT … SELECT` over `generate_series`, one statement per day of telemetry, by a few
connections at once. Telemetry rows are written in time order (slot by slot across devices, as ingest writes
them), so one device's rows are spread over the heap the way they are in production. The telemetry indexes are
dropped while a day loads and built per partition right after it, then attached to the parent's index again, which
is much faster than keeping a 50-million-row unique index up to date row by row.

The dataset's parameters and the time window it covers are kept in a `bench_dataset` row; a later run with the
same parameters finds it complete and reuses it.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.ingest import ADMIN_URL

CITIES = ("Hamburg", "Berlin", "Munich", "Cologne", "Frankfurt", "Stuttgart", "Leipzig", "Dresden", "Hanover",
          "Nuremberg", "Bremen", "Essen", "Dortmund", "Vienna", "Zurich", "Basel", "Graz", "Linz", "Salzburg",
          "Innsbruck")
KINDS = ("freezer", "fridge", "chiller", "compressor", "sensor", "gateway", "pump", "meter")
# (tag, share of devices that carry it): common, middling and rare tags, so filters of every selectivity exist.
TAGS = (("mains", 0.6), ("indoor", 0.5), ("cold-chain", 0.3), ("lte", 0.2), ("wifi", 0.2), ("eu", 0.4),
        ("fw-1.4", 0.3), ("fw-2.0", 0.1), ("pilot", 0.05), ("vip", 0.02), ("rooftop", 0.03),
        ("maintenance-due", 0.04), ("recall-2026", 0.005), ("battery", 0.15), ("outdoor", 0.1))
SITES_PER_TENANT = len(CITIES)
METRIC = "temp_c"


@dataclass(frozen=True)
class Spec:
    """What the dataset holds; two runs with equal specs share one dataset."""

    tenants: int = 10
    devices_per_tenant: int = 10_000
    rows: int = 50_000_000
    days: int = 30
    hot_per_tenant: int = 10
    hot_interval_s: int = 60

    @property
    def hot_rows(self) -> int:
        return self.tenants * self.hot_per_tenant * (self.days * 86400 // self.hot_interval_s)

    @property
    def regular_interval_s(self) -> float:
        """Interval of the ordinary devices so that, with the hot ones, the dataset holds `rows` rows."""
        regular = self.tenants * (self.devices_per_tenant - self.hot_per_tenant)
        per_device = (self.rows - self.hot_rows) / regular
        if per_device < 1:
            raise ValueError("rows too few for the hot devices' share")
        return self.days * 86400 / per_device


def tenant_id(i: int) -> str:
    return f"tenant-{i:02d}"


def device_id(n: int) -> str:
    return f"dev-{n:05d}"


def site_id(i: int) -> str:
    return f"site-{i:02d}"


def hot_device_ids(spec: Spec) -> list[str]:
    """The hot devices (one row every `hot_interval_s`) are the first devices of every tenant."""
    return [device_id(n) for n in range(spec.hot_per_tenant)]


@dataclass(frozen=True)
class Dataset:
    url: str
    spec: Spec
    window_start: datetime
    window_end: datetime
    telemetry_rows: int


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def load_dataset(name: str, spec: Spec) -> Dataset | None:
    """The complete dataset in database `name` if it matches `spec`, else None."""
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return None
    finally:
        await admin.close()
    url = database_url(name)
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT to_regclass('bench_dataset') IS NOT NULL"):
            return None
        row = await conn.fetchrow("SELECT * FROM bench_dataset WHERE completed_at IS NOT NULL")
    finally:
        await conn.close()
    if row is None or Spec(**{k: row[k] for k in asdict(spec)}) != spec:
        return None
    return Dataset(url, spec, row["window_start"], row["window_end"], row["telemetry_rows"])


async def generate(name: str, spec: Spec, *, loaders: int = 2, log: Any = print) -> Dataset:
    """Drop and re-create database `name` with Pulse's schema and the dataset described by `spec`."""
    started = time.monotonic()
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(name)
    from pulse.migrate import upgrade

    await asyncio.to_thread(upgrade, url)
    window_end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    window_start = window_end - timedelta(days=spec.days)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE bench_dataset (tenants int, devices_per_tenant int, rows bigint, days int, "
                           "hot_per_tenant int, hot_interval_s int, window_start timestamptz, window_end timestamptz, "
                           "telemetry_rows bigint, completed_at timestamptz)")
        await conn.execute("INSERT INTO bench_dataset VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)",
                           spec.tenants, spec.devices_per_tenant, spec.rows, spec.days, spec.hot_per_tenant,
                           spec.hot_interval_s, window_start, window_end)
        await _registry(conn, spec, window_end)
        log(f"registry: {spec.tenants * spec.devices_per_tenant} devices in {time.monotonic() - started:.0f} s")
        await conn.execute("SELECT pulse_ensure_telemetry_partitions($1::date, $2::date)",
                           window_start.date(), window_end.date())
        index_defs = [r["indexdef"] for r in await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'telemetry'")]
        for d in index_defs:
            await conn.execute(f"DROP INDEX {_index_name(d)}")
    finally:
        await conn.close()
    days: asyncio.Queue[datetime] = asyncio.Queue()
    for i in range(spec.days):
        days.put_nowait(window_start + timedelta(days=i))
    await asyncio.gather(*(_load_days(url, spec, window_start, days, index_defs, log) for _ in range(loaders)))
    conn = await asyncpg.connect(url)
    try:
        for d in index_defs:
            await conn.execute(re.sub(r" ON ONLY ", " ON ", d))  # attaches the partitions' matching indexes
        await conn.execute("ANALYZE telemetry")
        total = await conn.fetchval("SELECT sum(reltuples)::bigint FROM pg_class c JOIN pg_inherits i "
                                    "ON i.inhrelid = c.oid WHERE i.inhparent = 'telemetry'::regclass")
        await conn.execute("UPDATE bench_dataset SET telemetry_rows = $1, completed_at = now()", total)
    finally:
        await conn.close()
    log(f"dataset complete: {total} telemetry rows in {time.monotonic() - started:.0f} s")
    return Dataset(url, spec, window_start, window_end, int(total))


def _index_name(indexdef: str) -> str:
    m = re.match(r"CREATE (?:UNIQUE )?INDEX (\S+) ON ", indexdef)
    if m is None:
        raise ValueError(f"unexpected index definition {indexdef!r}")
    return m.group(1)


def _partition_index(indexdef: str, partition: str) -> str:
    """The parent's index definition for one partition (named as PostgreSQL would not clash with)."""
    name = _index_name(indexdef)
    out = indexdef.replace(f"INDEX {name} ON ", f"INDEX {partition}_{name} ON ", 1)
    return re.sub(r" ON (ONLY )?(public\.)?telemetry ", f" ON public.{partition} ", out, count=1)


async def _registry(conn: asyncpg.Connection, spec: Spec, now: datetime) -> None:
    """Tenants, subscriptions, sites, devices (names, types, sites, tags, lifecycle) and device_state."""
    n = spec.devices_per_tenant
    await conn.execute("SELECT setseed(0.42)")
    await conn.execute(
        "INSERT INTO tenants (tenant_id, name) SELECT 'tenant-' || lpad(t::text, 2, '0'), 'Tenant ' || t "
        "FROM generate_series(0, $1 - 1) t", spec.tenants)
    await conn.execute(
        "INSERT INTO subscriptions (tenant_id, kind, device_limit) SELECT tenant_id, 'MAIN', $1 FROM tenants", n)
    await conn.execute(
        "INSERT INTO sites (tenant_id, site_id, name) SELECT t.tenant_id, 'site-' || lpad((c.i - 1)::text, 2, '0'), "
        "c.city || ' depot' FROM tenants t, unnest($1::text[]) WITH ORDINALITY c(city, i)", list(CITIES))
    await conn.execute("CREATE TEMP TABLE tag_vocab (tag text, share float8)")
    await conn.executemany("INSERT INTO tag_vocab VALUES ($1, $2)", TAGS)
    # Device i of a tenant: kind i % 8, city (and site) by a hash, 5% without a site, 3% not ACTIVE.
    await conn.execute(
        "INSERT INTO devices (tenant_id, device_id, site_id, subscription_id, name, device_type, tags, attributes, "
        "  heartbeat_interval_s, status, lat, lng, created_at, updated_at) "
        "SELECT s.tenant_id, 'dev-' || lpad(i::text, 5, '0'), CASE WHEN h % 20 = 19 THEN NULL "
        "    ELSE 'site-' || lpad((h % $3)::text, 2, '0') END, "
        "  s.subscription_id, initcap(($2::text[])[i % 8 + 1]) || ' ' || ($4::text[])[h % $3 + 1] || ' ' || i, "
        "  ($2::text[])[i % 8 + 1], ARRAY(SELECT v.tag FROM tag_vocab v WHERE random() < v.share + 0 * i), "
        "  jsonb_build_object('model', 'M' || (i % 13), 'serial', md5(s.tenant_id || i)), 60, "
        "  CASE WHEN h % 100 = 0 THEN 'DISABLED' WHEN h % 100 = 1 THEN 'DECOMMISSIONED' "
        "    WHEN h % 100 = 2 THEN 'REVOKED' ELSE 'ACTIVE' END, 47 + random() * 7, 6 + random() * 10, "
        "  $5::timestamptz - interval '400 days' * random(), $5::timestamptz - interval '30 days' * random() "
        "FROM subscriptions s, generate_series(0, $1 - 1) i, "
        "  LATERAL (SELECT hashtext(s.tenant_id || i) & 2147483647 AS h) x",
        n, list(KINDS), SITES_PER_TENANT, list(CITIES), now)
    # Connectivity: 85% ONLINE (heard within the last minute), 4% STALE, 8% OFFLINE, 3% never heard.
    await conn.execute(
        "INSERT INTO device_state (tenant_id, device_id, status, last_seen_at, last_telemetry_at, "
        "  last_state_change_at, latest_metrics, latest_metrics_at, updated_at) "
        "SELECT tenant_id, device_id, st, seen, seen, seen - interval '1 hour' * r, "
        "  CASE WHEN seen IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('temp_c', round((2 + r * 6)::numeric, 2), "
        "    'humidity', round((40 + r * 30)::numeric, 1)) END, "
        "  CASE WHEN seen IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('temp_c', seen, 'humidity', seen) END, "
        "  $1::timestamptz "
        "FROM (SELECT tenant_id, device_id, r, CASE WHEN r < 0.85 THEN 'ONLINE' WHEN r < 0.89 THEN 'STALE' "
        "    WHEN r < 0.97 THEN 'OFFLINE' ELSE 'UNKNOWN' END AS st, "
        "  CASE WHEN r < 0.85 THEN $1::timestamptz - interval '60 seconds' * random() "
        "    WHEN r < 0.89 THEN $1::timestamptz - interval '3 minutes' "
        "    WHEN r < 0.97 THEN $1::timestamptz - interval '10 days' * random() - interval '10 minutes' END AS seen "
        "  FROM (SELECT tenant_id, device_id, random() AS r FROM devices) d) x", now)
    await conn.execute("VACUUM (ANALYZE) tenants, subscriptions, sites, devices, device_state")


# Slot k of a device is at window_start + phase + k * interval; one statement writes one day, slot by slot.
_DAY_SQL = """
INSERT INTO {partition} (time, tenant_id, device_id, site_id, msg_type, seq, metrics)
SELECT x.t, x.tenant_id, x.device_id, x.site_id, 'telemetry', k,
       jsonb_build_object('temp_c', round((3 + 2 * sin(k / 9.0) + random())::numeric, 2),
                          'humidity', round((45 + 10 * random())::numeric, 1),
                          'battery', round((100 - k * 0.001)::numeric, 3))
FROM generate_series($1::bigint, $2::bigint) k,
     LATERAL (SELECT $3::timestamptz + make_interval(secs => b.phase + k * $4::float8) AS t,
                     b.tenant_id, b.device_id, b.site_id
              FROM {devices} b) x
WHERE x.t >= $5 AND x.t < $6
"""


async def _load_days(url: str, spec: Spec, window_start: datetime, days: asyncio.Queue[datetime],
                     index_defs: list[str], log: Any) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET synchronous_commit = off; SET maintenance_work_mem = '512MB'")
        regular_iv = spec.regular_interval_s
        for table, iv, hot in (("bench_regular", regular_iv, False), ("bench_hot", float(spec.hot_interval_s), True)):
            await conn.execute(
                f"CREATE TEMP TABLE {table} AS SELECT tenant_id, device_id, site_id, random() * $1 AS phase "
                "FROM devices WHERE (substr(device_id, 5)::int < $2) = $3 ORDER BY device_id, tenant_id",
                iv, spec.hot_per_tenant, hot)
        while not days.empty():
            day = days.get_nowait()
            t0 = time.monotonic()
            partition = "telemetry_p" + day.strftime("%Y%m%d")
            start_s = (day - window_start).total_seconds()
            end = day + timedelta(days=1)
            written = 0
            for table, iv in (("bench_regular", regular_iv), ("bench_hot", float(spec.hot_interval_s))):
                k_lo, k_hi = max(0, int(start_s // iv) - 1), int((start_s + 86400) // iv) + 1
                status = await conn.execute(_DAY_SQL.format(partition=partition, devices=table), k_lo, k_hi,
                                            window_start, iv, day, end)
                written += int(status.split()[-1])
            for d in index_defs:
                await conn.execute(_partition_index(d, partition))
            await conn.execute(f"VACUUM (ANALYZE) {partition}")
            log(f"{partition}: {written} rows in {time.monotonic() - t0:.1f} s")
    finally:
        await conn.close()
