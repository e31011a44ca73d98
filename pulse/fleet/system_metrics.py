"""The platform's own health as a time series: `system_metrics` samples that `pulse schedule` writes every 5 s, and
each tenant's hourly message count. Operators read them back through /operator/system (pulse.fleet.operator.noc).

Every sample is cheap at any fleet size: counts over partial indexes (due notification jobs, due escalations, open
alerts), PostgreSQL's own statistics (connections, database size, rows inserted into telemetry and quarantine), and
one pass over `device_state` for devices online. Message rates come from PostgreSQL's insert counters of the telemetry
partitions (or TimescaleDB chunks) and of `quarantine_events`, as the change since the sample about a minute ago:
the statistics reach PostgreSQL's counters within a second or so of a commit, so a rate over a minute is smooth.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

RATE_WINDOW = timedelta(seconds=60)
ALIVE_WITHIN = timedelta(seconds=15)

# name → what it is (the catalogue the operator API lists; docs/api-operator.md).
METRICS: dict[str, str] = {
    "ingest.messages_per_s": "telemetry and heartbeat rows committed per second (over the last minute)",
    "ingest.quarantined_per_s": "messages quarantined per second (over the last minute)",
    "ingest.telemetry_rows_total": "rows inserted into telemetry since PostgreSQL's statistics were reset",
    "ingest.quarantine_rows_total": "rows inserted into quarantine_events since the statistics were reset",
    "alerts.open": "alerts OPEN or ACKNOWLEDGED",
    "devices.active": "registered devices in status ACTIVE",
    "devices.online": "devices whose liveness is ONLINE",
    "notifications.queue_due": "notification jobs due and waiting to be sent",
    "notifications.in_progress": "notification jobs being sent (leased)",
    "escalations.due": "escalation steps due and not yet fired",
    "db.connections": "connections to Pulse's database",
    "db.size_bytes": "size of Pulse's database",
    "processes.alive": "process instances that beat within 15 s, by process_type (label)",
    "tenant.messages": "messages a tenant's devices sent in the hour starting at `time`, by tenant_id (label)",
}

_SAMPLE = text(
    "SELECT (SELECT count(*) FROM alerts WHERE status IN ('OPEN', 'ACKNOWLEDGED')) AS alerts_open, "
    "  (SELECT count(*) FROM devices WHERE status = 'ACTIVE') AS devices_active, "
    "  (SELECT count(*) FROM device_state WHERE status = 'ONLINE') AS devices_online, "
    "  (SELECT count(*) FROM notification_jobs WHERE status = 'PENDING' AND next_attempt_at <= :now) AS queue_due, "
    "  (SELECT count(*) FROM notification_jobs WHERE status = 'IN_PROGRESS') AS in_progress, "
    "  (SELECT count(*) FROM alerts WHERE next_escalation_at <= :now) AS escalations_due, "
    "  (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) AS db_connections, "
    "  pg_database_size(current_database()) AS db_size_bytes, "
    "  (SELECT coalesce(sum(s.n_tup_ins), 0) FROM pg_stat_user_tables s JOIN pg_inherits i ON i.inhrelid = s.relid "
    "     WHERE i.inhparent = 'telemetry'::regclass) AS telemetry_rows, "
    "  (SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE relid = 'quarantine_events'::regclass) "
    "     AS quarantine_rows")

_ALIVE = text(
    "SELECT process_type, count(*) AS n FROM service_heartbeats WHERE beat_at > :since GROUP BY process_type")

_EARLIER = text(
    "SELECT time, value FROM system_metrics WHERE metric = :m AND time <= :before ORDER BY time DESC LIMIT 1")
_LATEST = text("SELECT time, value FROM system_metrics WHERE metric = :m AND time < :now ORDER BY time DESC LIMIT 1")

_INSERT = text(
    "INSERT INTO system_metrics (time, metric, value, labels) "
    "SELECT :now, m, v, CAST(l AS jsonb) FROM unnest(CAST(:names AS text[]), CAST(:values AS float8[]), "
    "  CAST(:labels AS text[])) AS x(m, v, l)")


async def _rate(conn: AsyncConnection, metric: str, total: float, now: datetime) -> float | None:
    """Per-second change of a running total since the sample about RATE_WINDOW ago (else the latest earlier one);
    None without an earlier sample, or when the total went down (statistics reset, a partition dropped)."""
    row = (await conn.execute(_EARLIER, {"m": metric, "before": now - RATE_WINDOW})).first()
    if row is None:
        row = (await conn.execute(_LATEST, {"m": metric, "now": now})).first()
    if row is None or row.time >= now or total < row.value:
        return None
    return (total - row.value) / (now - row.time).total_seconds()


async def sample_system_metrics(conn: AsyncConnection, *, now: datetime) -> dict[str, float]:
    """Write one sample of every platform metric at `now`; returns the unlabelled values written."""
    r = (await conn.execute(_SAMPLE, {"now": now})).one()
    values: dict[str, float] = {
        "alerts.open": r.alerts_open, "devices.active": r.devices_active, "devices.online": r.devices_online,
        "notifications.queue_due": r.queue_due, "notifications.in_progress": r.in_progress,
        "escalations.due": r.escalations_due, "db.connections": r.db_connections, "db.size_bytes": r.db_size_bytes,
        "ingest.telemetry_rows_total": float(r.telemetry_rows),
        "ingest.quarantine_rows_total": float(r.quarantine_rows),
    }
    for rate_name, total_name in (("ingest.messages_per_s", "ingest.telemetry_rows_total"),
                                  ("ingest.quarantined_per_s", "ingest.quarantine_rows_total")):
        rate = await _rate(conn, total_name, values[total_name], now)
        if rate is not None:
            values[rate_name] = round(rate, 3)
    rows: list[tuple[str, float, dict[str, Any]]] = [(k, float(v), {}) for k, v in values.items()]
    for process_type, n in (await conn.execute(_ALIVE, {"since": now - ALIVE_WITHIN})).all():
        rows.append(("processes.alive", float(n), {"process_type": process_type}))
    await _write(conn, now, rows)
    return {k: float(v) for k, v in values.items()}


async def _write(conn: AsyncConnection, at: datetime, rows: list[tuple[str, float, dict[str, Any]]]) -> None:
    if rows:
        await conn.execute(_INSERT, {"now": at, "names": [r[0] for r in rows], "values": [r[1] for r in rows],
                                     "labels": [msgspec.json.encode(r[2]).decode() for r in rows]})


# One index range scan per device over the hour (the telemetry index leads with tenant and device), so the cost is
# the hour's rows, never the day partition's.
_TENANT_MESSAGES = (
    "SELECT d.tenant_id, sum(c.n) AS n FROM devices d "
    "CROSS JOIN LATERAL (SELECT count(*) AS n FROM telemetry t WHERE t.tenant_id = d.tenant_id "
    "  AND t.device_id = d.device_id AND t.time >= :start AND t.time < :end) c "
    "WHERE d.status <> 'DECOMMISSIONED'{only} GROUP BY d.tenant_id HAVING sum(c.n) > 0")


async def record_tenant_activity(conn: AsyncConnection, *, hour_start: datetime,
                                 tenant_ids: list[str] | None = None) -> int:
    """Write `tenant.messages` for the hour starting at `hour_start` (replacing an earlier count of that hour);
    tenants without messages get no row. Returns how many tenants had messages."""
    only = "" if tenant_ids is None else " AND d.tenant_id = ANY(CAST(:ids AS text[]))"
    end = hour_start + timedelta(hours=1)
    rows = (await conn.execute(text(_TENANT_MESSAGES.format(only=only)),
                               {"start": hour_start, "end": end, "ids": tenant_ids})).all()
    delete_only = "" if tenant_ids is None else " AND labels ->> 'tenant_id' = ANY(CAST(:ids AS text[]))"
    await conn.execute(text(f"DELETE FROM system_metrics WHERE metric = 'tenant.messages' AND time = :at{delete_only}"),
                       {"at": hour_start, "ids": tenant_ids})
    await _write(conn, hour_start, [("tenant.messages", float(r.n), {"tenant_id": r.tenant_id}) for r in rows])
    return len(rows)
