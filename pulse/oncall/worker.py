"""`pulse escalate`: fires due escalation steps of unacknowledged alerts, one transaction per batch.

It sleeps until the earliest pending step is due, and wakes at once on NOTIFY pulse_escalations (an alert
opened with a policy, a silence ended), so a step fires within a second of its due time, not on a coarse tick.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import asyncpg
import prometheus_client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.service import ESCALATIONS_CHANNEL
from pulse.clock import Clock, SystemClock
from pulse.db import connect_raw, system_tx
from pulse.oncall.service import fire_due_escalations, next_due_at
from pulse.runtime import TRANSIENT_DB_ERRORS, Backoff, wait_or_stop, worker_context
from pulse.settings import Settings

log = logging.getLogger("pulse.escalate")

MAX_SLEEP_S = 5.0
"""Longest sleep without a wake-up: bounds a step's lateness if a notification is lost with the LISTEN link."""
BATCH = 100

FIRED = prometheus_client.Counter("pulse_escalate_steps_fired", "Escalation steps fired")
BACKLOG = prometheus_client.Gauge("pulse_escalate_backlog", "Escalation steps due and not yet fired (all escalators)")
OLDEST_DUE = prometheus_client.Gauge("pulse_escalate_oldest_due_seconds",
                                     "How late the most overdue step is (0 when none is due)")
_BACKLOG = text("SELECT count(*) AS n, min(next_escalation_at) AS oldest FROM alerts WHERE next_escalation_at <= :now")


async def _measure_backlog(conn: AsyncConnection, now: datetime) -> None:
    """Set the backlog gauges from what is still due after a round, in its transaction (the partial index on
    next_escalation_at serves it; steps another escalator is firing right now still count)."""
    row = (await conn.execute(_BACKLOG, {"now": now})).one()
    BACKLOG.set(row.n)
    OLDEST_DUE.set(0.0 if row.oldest is None else max((now - row.oldest).total_seconds(), 0.0))


async def run(settings: Settings, stop: asyncio.Event, *, clock: Clock | None = None) -> int:
    clock = clock or SystemClock()
    async with worker_context("escalate", settings, stop) as ctx:
        wake = asyncio.Event()
        listener: asyncpg.Connection | None = None
        log.info("escalation loop started")
        backoff = Backoff(ctx.health)
        try:
            while not stop.is_set():
                try:
                    if listener is None or listener.is_closed():
                        listener = await connect_raw(settings.require_database_url(), "pulse-escalate-listen")
                        await listener.add_listener(ESCALATIONS_CHANNEL, lambda *_: wake.set())
                    async with system_tx(ctx.engine) as conn:
                        fired = await fire_due_escalations(conn, clock.now(), limit=BATCH,
                                                           base_url=settings.base_url)
                        await _measure_backlog(conn, clock.now())
                    if fired:
                        FIRED.inc(fired)
                        log.info("escalation steps fired", extra={"count": fired})
                    if fired >= BATCH:
                        continue  # more may be due right away
                    async with system_tx(ctx.engine) as conn:
                        due = await next_due_at(conn)
                except TRANSIENT_DB_ERRORS as exc:
                    if listener is not None:
                        listener.terminate()
                        listener = None
                    await backoff.failed(exc, stop)
                    continue
                backoff.ok()
                sleep = MAX_SLEEP_S
                if due is not None:
                    sleep = min(MAX_SLEEP_S, max((due - clock.now()).total_seconds(), 0.0))
                if sleep > 0:
                    await wait_or_stop(stop, wake, sleep)
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()
    return 0
