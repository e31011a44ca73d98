"""Capacity and service health for operators: database size and connections, table and telemetry partition sizes,
process health with the database's round-trip latency, and the scheduled jobs' last runs."""

from __future__ import annotations

import re
import time
from datetime import date, datetime

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.fleet.operator import SystemHealth
from pulse.fleet.operator.health import get_system_health

TOP_TABLES = 15
_PARTITION_DAY = re.compile(r"^telemetry_p(\d{4})(\d{2})(\d{2})$")


class Connections(msgspec.Struct, kw_only=True):
    """Connections to Pulse's database; `by_application` uses each process's application_name (pulse-web, …)."""

    total: int
    max_connections: int
    by_state: dict[str, int]
    by_application: dict[str, int]


class TableSize(msgspec.Struct, kw_only=True):
    """`total_bytes` includes indexes and TOAST; `rows_estimate` is the planner's (-1: never analysed)."""

    name: str
    total_bytes: int
    rows_estimate: int


class TelemetryPartition(TableSize, kw_only=True):
    """A telemetry partition (a TimescaleDB chunk on TimescaleDB); `day` is null when its name does not say."""

    day: date | None


class Capacity(msgspec.Struct, kw_only=True):
    checked_at: datetime
    database_bytes: int
    connections: Connections
    largest_tables: list[TableSize]
    telemetry_bytes: int
    telemetry_partitions: list[TelemetryPartition]


class JobRun(msgspec.Struct, kw_only=True):
    """A `pulse schedule` job's last execution (`last_status` ok or failed, with its error)."""

    job_name: str
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_status: str | None
    last_error: str | None
    run_count: int


class ServiceHealth(msgspec.Struct, kw_only=True):
    """Process heartbeats, queues and volumes (as GET /operator/health) plus the database's round-trip latency and
    the scheduled jobs."""

    checked_at: datetime
    database_latency_ms: float
    system: SystemHealth
    jobs: list[JobRun]


async def get_capacity(conn: AsyncConnection, *, now: datetime) -> Capacity:
    """Database size, connections, the largest tables and every telemetry partition's size."""
    size = (await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar_one()
    max_conn = (await conn.execute(text("SELECT current_setting('max_connections')::int"))).scalar_one()
    activity = (await conn.execute(text(
        "SELECT coalesce(state, 'unknown') AS state, coalesce(nullif(application_name, ''), 'unnamed') AS app, "
        "  count(*) AS n FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1, 2"))).all()
    by_state: dict[str, int] = {}
    by_app: dict[str, int] = {}
    for r in activity:
        by_state[r.state] = by_state.get(r.state, 0) + r.n
        by_app[r.app] = by_app.get(r.app, 0) + r.n
    tables = (await conn.execute(text(
        "SELECT c.relname AS name, pg_total_relation_size(c.oid) AS total_bytes, c.reltuples::bigint AS rows "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' AND NOT c.relispartition "
        "ORDER BY pg_total_relation_size(c.oid) DESC, c.relname LIMIT :n"), {"n": TOP_TABLES})).all()
    parts = (await conn.execute(text(
        "SELECT c.relname AS name, pg_total_relation_size(c.oid) AS total_bytes, c.reltuples::bigint AS rows "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'telemetry'::regclass "
        "ORDER BY c.relname"))).all()
    partitions = []
    for p in parts:
        m = _PARTITION_DAY.match(p.name)
        partitions.append(TelemetryPartition(name=p.name, total_bytes=p.total_bytes, rows_estimate=p.rows,
                                             day=date(int(m[1]), int(m[2]), int(m[3])) if m else None))
    return Capacity(checked_at=now, database_bytes=size,
                    connections=Connections(total=sum(by_state.values()), max_connections=max_conn,
                                            by_state=by_state, by_application=by_app),
                    largest_tables=[TableSize(name=t.name, total_bytes=t.total_bytes, rows_estimate=t.rows)
                                    for t in tables],
                    telemetry_bytes=sum(p.total_bytes for p in partitions), telemetry_partitions=partitions)


async def list_job_runs(conn: AsyncConnection) -> list[JobRun]:
    rows = (await conn.execute(text(
        "SELECT job_name, last_started_at, last_finished_at, last_status, last_error, run_count "
        "FROM scheduled_job_runs ORDER BY job_name"))).all()
    return [JobRun(**r._mapping) for r in rows]


async def get_service_health(conn: AsyncConnection, *, now: datetime) -> ServiceHealth:
    """Everything GET /operator/health reports, the time a `SELECT 1` round trip took, and the job table."""
    started = time.perf_counter()
    await conn.execute(text("SELECT 1"))
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    return ServiceHealth(checked_at=now, database_latency_ms=latency_ms, system=await get_system_health(conn, now=now),
                         jobs=await list_job_runs(conn))
