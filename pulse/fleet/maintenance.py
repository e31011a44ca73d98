"""Platform housekeeping that `pulse schedule` runs: telemetry partitions, quarantine and system-metric retention, the
quarantine counter rollup."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

PARTITIONS_BEHIND_DAYS = 1
PARTITIONS_AHEAD_DAYS = 7
QUARANTINE_EVENTS_KEEP_DAYS = 30
QUARANTINE_COUNTERS_KEEP_DAYS = 90
SYSTEM_METRICS_KEEP_DAYS = 30

# Dropping a partition takes an ACCESS EXCLUSIVE lock on `telemetry`; waiting for it behind a long
# query would stall every ingest COPY queued behind us. Give up instead and try again next run.
_PARTITION_LOCK_TIMEOUT = "3s"


async def maintain_telemetry_partitions(conn: AsyncConnection, *, today: date, retention_days: int) -> tuple[int, int]:
    """Create daily telemetry partitions for today-1 .. today+7 and drop those past retention: (created, dropped).

    Runs as pulse_worker: the two SQL functions are SECURITY DEFINER because the worker does not own
    `telemetry`. Dropping compares against the database clock (`now()` inside
    pulse_drop_telemetry_partitions), which is the clock ingest writes `time` against as well. On
    TimescaleDB the same functions create nothing and drop expired chunks.
    """
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    await conn.execute(text(f"SET LOCAL lock_timeout = '{_PARTITION_LOCK_TIMEOUT}'"))
    created = (await conn.execute(text("SELECT pulse_ensure_telemetry_partitions(:first, :last)"),
                                  {"first": today - timedelta(days=PARTITIONS_BEHIND_DAYS),
                                   "last": today + timedelta(days=PARTITIONS_AHEAD_DAYS)})).scalar_one()
    dropped = (await conn.execute(text("SELECT pulse_drop_telemetry_partitions(:days)"),
                                  {"days": retention_days})).scalar_one()
    return int(created), int(dropped)


async def cleanup_quarantine(conn: AsyncConnection, *, now: datetime,
                             events_keep_days: int = QUARANTINE_EVENTS_KEEP_DAYS,
                             counters_keep_days: int = QUARANTINE_COUNTERS_KEEP_DAYS) -> tuple[int, int]:
    """Delete quarantined messages older than 30 days and per-minute counters older than 90: (events, counters).

    Counters outlive the raw messages so the rejection-rate charts keep their history after the
    payloads (which may hold whatever a broken device sent) are gone.
    """
    events = await conn.execute(text("DELETE FROM quarantine_events WHERE received_at < :cutoff"),
                                {"cutoff": now - timedelta(days=events_keep_days)})
    counters = await conn.execute(text("DELETE FROM quarantine_counters WHERE minute < :cutoff"),
                                  {"cutoff": now - timedelta(days=counters_keep_days)})
    return int(events.rowcount), int(counters.rowcount)


async def cleanup_system_metrics(conn: AsyncConnection, *, now: datetime,
                                 keep_days: int = SYSTEM_METRICS_KEEP_DAYS) -> int:
    """Delete platform health samples older than 30 days; returns how many rows went."""
    result = await conn.execute(text("DELETE FROM system_metrics WHERE time < :cutoff"),
                                {"cutoff": now - timedelta(days=keep_days)})
    return int(result.rowcount)


QUARANTINE_MINUTES_KEEP = timedelta(days=2)


async def rollup_quarantine_counters(conn: AsyncConnection, *, now: datetime,
                                     keep: timedelta = QUARANTINE_MINUTES_KEEP) -> int:
    """Fold per-minute quarantine counters older than `keep` (2 days) into one row per tenant, hour and reason
    (`minute` = the hour's start, UTC); returns how many minute rows were folded.

    Recent counters stay per minute for the rejection-rate charts; older ones only need hours, and a flood of bad
    messages no longer leaves 1,440 rows a day per tenant and reason for 90 days. Sums over any range of whole
    hours are unchanged. Ingest only writes the current minute, so it never races this.
    """
    result = await conn.execute(text(
        "WITH folded AS (DELETE FROM quarantine_counters WHERE minute < :cutoff "
        "    AND minute <> date_trunc('hour', minute, 'UTC') RETURNING tenant_id, minute, reason, count), "
        "  sums AS (SELECT tenant_id, date_trunc('hour', minute, 'UTC') AS hour, reason, sum(count) AS n, "
        "    count(*) AS rows FROM folded GROUP BY 1, 2, 3), "
        "  merged AS (INSERT INTO quarantine_counters AS q (tenant_id, minute, reason, count) "
        "    SELECT tenant_id, hour, reason, n FROM sums "
        "    ON CONFLICT ON CONSTRAINT quarantine_counters_key DO UPDATE SET count = q.count + EXCLUDED.count) "
        "SELECT coalesce(sum(rows), 0) FROM sums"), {"cutoff": now - keep})
    return int(result.scalar_one())
