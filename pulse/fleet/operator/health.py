"""System health for the operator: process heartbeats, the notification queue, telemetry and quarantine volume."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.fleet.operator import NotificationQueue, ProcessHealth, ProcessInstance, QuarantineLastHour, SystemHealth

ALIVE_WITHIN_S = 15
TELEMETRY_COUNT_TIMEOUT_MS = 3000


async def _processes(conn: AsyncConnection, now: datetime) -> list[ProcessHealth]:
    rows = (await conn.execute(text(
        "SELECT instance, process_type, ready, ready_since, beat_at, detail FROM service_heartbeats "
        "ORDER BY process_type, instance"))).all()
    by_type: dict[str, list[ProcessInstance]] = {}
    for r in rows:
        age = (now - r.beat_at).total_seconds()
        by_type.setdefault(r.process_type, []).append(ProcessInstance(
            instance=r.instance, ready=r.ready, ready_since=r.ready_since, beat_at=r.beat_at,
            beat_age_s=round(age, 3), alive=age <= ALIVE_WITHIN_S, detail=r.detail))
    return [ProcessHealth(process_type=kind, alive=sum(i.alive for i in items),
                          ready=sum(i.alive and i.ready for i in items), instances=items)
            for kind, items in by_type.items()]


async def _notification_queue(conn: AsyncConnection, now: datetime) -> NotificationQueue:
    r = (await conn.execute(text(
        "SELECT count(*) FILTER (WHERE status = 'PENDING' AND next_attempt_at <= :now) AS pending_due, "
        "  count(*) FILTER (WHERE status = 'PENDING' AND next_attempt_at > :now) AS pending_later, "
        "  count(*) FILTER (WHERE status = 'IN_PROGRESS') AS in_progress, "
        "  count(*) FILTER (WHERE status = 'IN_PROGRESS' AND lease_expires_at < :now) AS lease_expired, "
        "  count(*) FILTER (WHERE status = 'DEAD') AS dead, "
        "  min(next_attempt_at) FILTER (WHERE status = 'PENDING' AND next_attempt_at <= :now) AS oldest_due_at "
        "FROM notification_jobs WHERE status IN ('PENDING', 'IN_PROGRESS', 'DEAD')"), {"now": now})).one()
    oldest = None if r.oldest_due_at is None else round(max((now - r.oldest_due_at).total_seconds(), 0.0), 3)
    return NotificationQueue(pending_due=r.pending_due, pending_later=r.pending_later, in_progress=r.in_progress,
                             in_progress_lease_expired=r.lease_expired, dead=r.dead, oldest_due_age_s=oldest)


async def _telemetry_last_minute(conn: AsyncConnection, now: datetime) -> int | None:
    """Rows whose time is in the last minute, or None when counting exceeds TELEMETRY_COUNT_TIMEOUT_MS (there is
    no index on time alone, so a busy day partition is scanned); the health answer must not hang on it."""
    previous = (await conn.execute(text("SELECT current_setting('statement_timeout')"))).scalar_one()
    try:
        async with conn.begin_nested():
            await conn.execute(text("SELECT set_config('statement_timeout', :ms, true)"),
                               {"ms": str(TELEMETRY_COUNT_TIMEOUT_MS)})
            count = (await conn.execute(text("SELECT count(*) FROM telemetry WHERE time > :since AND time <= :now"),
                                        {"since": now - timedelta(minutes=1), "now": now})).scalar_one()
            await conn.execute(text("SELECT set_config('statement_timeout', :prev, true)"), {"prev": previous})
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "57014":  # query_canceled
            raise
        return None
    return int(count)


async def get_system_health(conn: AsyncConnection, *, now: datetime) -> SystemHealth:
    """Heartbeats per process type, the notification queue, recent telemetry and quarantine volume."""
    quarantine = (await conn.execute(text(
        "SELECT reason, sum(count) AS n FROM quarantine_counters WHERE minute >= :since GROUP BY reason "
        "ORDER BY reason"), {"since": now - timedelta(hours=1)})).all()
    by_reason = {r.reason: int(r.n) for r in quarantine}
    return SystemHealth(checked_at=now, alive_within_s=ALIVE_WITHIN_S, processes=await _processes(conn, now),
                        notifications=await _notification_queue(conn, now),
                        telemetry_rows_last_minute=await _telemetry_last_minute(conn, now),
                        quarantine_last_hour=QuarantineLastHour(total=sum(by_reason.values()), by_reason=by_reason))
