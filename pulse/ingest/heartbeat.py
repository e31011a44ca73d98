"""Ingest heartbeats: every few seconds each ingest instance records whether it can take device traffic now.

The evaluator reads them before each liveness pass (pulse.alerting.guard): when no ingest instance is ready,
silence means nothing about the devices, so no device is marked STALE or OFFLINE for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import Clock
from pulse.db import ingest_tx
from pulse.runtime import TRANSIENT_DB_ERRORS

log = logging.getLogger("pulse.ingest.heartbeat")

BEAT_EVERY_S = 5.0
"""How often an instance beats; the evaluator treats a beat older than 3 periods as an instance gone."""

_BEAT = text("""
INSERT INTO service_heartbeats AS h (instance, process_type, ready, ready_since, beat_at, detail)
VALUES (:i, :p, :r, CASE WHEN :r THEN CAST(:now AS timestamptz) END, :now, :d)
ON CONFLICT (instance) DO UPDATE SET
  process_type = EXCLUDED.process_type,
  ready = EXCLUDED.ready,
  ready_since = CASE WHEN NOT EXCLUDED.ready THEN NULL
                     WHEN h.ready AND h.beat_at > EXCLUDED.beat_at - make_interval(secs => :gone_s)
                       THEN h.ready_since
                     ELSE EXCLUDED.beat_at END,
  beat_at = EXCLUDED.beat_at,
  detail = EXCLUDED.detail
""")

ReadyCheck = Callable[[], Awaitable[tuple[bool, str]]]


def instance_name(process_type: str, name: str) -> str:
    """`{process_type}:{name}@{host}:{pid}`, e.g. ingest:pulse-ingest-0@node-a:4711."""
    return f"{process_type}:{name}@{socket.gethostname()}:{os.getpid()}"


async def beat(engine: AsyncEngine, instance: str, process_type: str, ready: bool, detail: str,
               now: datetime) -> None:
    """Record one beat; `ready_since` is kept while the instance stays ready without gaps."""
    async with ingest_tx(engine) as conn:
        await conn.execute(_BEAT, {"i": instance, "p": process_type, "r": ready, "now": now, "d": detail[:300],
                                   "gone_s": 3 * BEAT_EVERY_S})


async def run_heartbeat(engine: AsyncEngine, clock: Clock, instance: str, process_type: str,
                        checks: list[ReadyCheck], stop: asyncio.Event, *, every_s: float = BEAT_EVERY_S) -> None:
    """Beat every `every_s` until `stop`, ready when every check passes; then record the instance as not ready."""
    while not stop.is_set():
        ready, detail = True, ""
        for check in checks:
            ok, why = await check()
            if not ok:
                ready, detail = False, why
                break
        try:
            await beat(engine, instance, process_type, ready, detail, clock.now())
        except TRANSIENT_DB_ERRORS as exc:
            log.debug("heartbeat not recorded: %s", exc)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except TimeoutError:
            pass
    try:
        await beat(engine, instance, process_type, False, "stopped", clock.now())
    except TRANSIENT_DB_ERRORS:
        pass
