"""`pulse escalate`: fires due escalation steps of unacknowledged alerts, one transaction per batch."""

from __future__ import annotations

import asyncio
import logging

from pulse.clock import Clock, SystemClock
from pulse.db import system_tx
from pulse.oncall.service import fire_due_escalations
from pulse.runtime import TRANSIENT_DB_ERRORS, Backoff, wait_or_stop, worker_context
from pulse.settings import Settings

log = logging.getLogger("pulse.escalate")

POLL_S = 1.0


async def run(settings: Settings, stop: asyncio.Event, *, clock: Clock | None = None) -> int:
    clock = clock or SystemClock()
    async with worker_context("escalate", settings, stop) as ctx:
        log.info("escalation loop started")
        backoff = Backoff(ctx.health)
        while not stop.is_set():
            try:
                async with system_tx(ctx.engine) as conn:
                    fired = await fire_due_escalations(conn, clock.now(), base_url=settings.base_url)
            except TRANSIENT_DB_ERRORS as exc:
                await backoff.failed(exc, stop)
                continue
            backoff.ok()
            if fired:
                log.info("escalation steps fired", extra={"count": fired})
                continue
            await wait_or_stop(stop, None, POLL_S)
    return 0
