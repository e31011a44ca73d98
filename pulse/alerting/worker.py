"""`pulse evaluate`: wakes on ingest's per-batch NOTIFY, evaluates those devices, runs liveness each second."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.evaluator import DeviceKey, Evaluator
from pulse.alerting.guard import guarded_liveness
from pulse.clock import Clock, SystemClock
from pulse.db import connect_raw, system_tx
from pulse.runtime import TRANSIENT_DB_ERRORS, Backoff, wait_or_stop, worker_context
from pulse.settings import Settings

log = logging.getLogger("pulse.evaluate")

TELEMETRY_CHANNEL = "pulse_telemetry"
RULES_CHANNEL = "pulse_rules_changed"
RULES_REFRESH = timedelta(seconds=30)
LIVENESS_EVERY = timedelta(seconds=1)
CATCH_UP = timedelta(minutes=10)
RECONNECT_MARGIN = timedelta(seconds=5)


def parse_wakeup(payload: str) -> list[DeviceKey]:
    """Ingest's NOTIFY payload: a JSON list of [tenant_id, device_id] pairs (or {"devices": [...]})."""
    try:
        data = json.loads(payload)
    except ValueError:
        log.warning("ignoring malformed wake-up payload", extra={"payload": payload[:200]})
        return []
    if isinstance(data, dict):
        data = data.get("devices", [])
    out: list[DeviceKey] = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
            out.append((item[0], item[1]))
    return out


class Wakeups:
    """The LISTEN connection (ingest's per-batch device lists, rule changes); reconnects after a lost connection."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.conn: asyncpg.Connection | None = None
        self.pending: set[DeviceKey] = set()
        self.wake = asyncio.Event()
        self.rules_dirty = asyncio.Event()

    def _on_telemetry(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.pending.update(parse_wakeup(payload))
        self.wake.set()

    def _on_rules(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self.rules_dirty.set()
        self.wake.set()

    async def ensure(self) -> bool:
        """Connect if not connected; True when this call (re)connected, so notifications may have been missed."""
        if self.conn is not None and not self.conn.is_closed():
            return False
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None
        conn = await connect_raw(self.database_url, "pulse-evaluate-listen")
        await conn.add_listener(TELEMETRY_CHANNEL, self._on_telemetry)
        await conn.add_listener(RULES_CHANNEL, self._on_rules)
        self.conn = conn
        return True

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()


async def _changed_since(engine: AsyncEngine, since: datetime) -> set[DeviceKey]:
    async with system_tx(engine) as conn:
        rows = await conn.execute(text("SELECT tenant_id, device_id FROM device_state WHERE updated_at > :since"),
                                  {"since": since})
        return {(r[0], r[1]) for r in rows}


async def run(settings: Settings, stop: asyncio.Event, *, clock: Clock | None = None) -> int:
    clock = clock or SystemClock()
    async with worker_context("evaluate", settings, stop) as ctx:
        evaluator = Evaluator(ctx.engine, base_url=settings.base_url)
        wakeups = Wakeups(settings.require_database_url())
        backoff = Backoff(ctx.health)
        heard_until = clock.now() - CATCH_UP  # devices that spoke while no evaluator listened are evaluated
        rules_loaded_at = clock.now() - RULES_REFRESH
        last_liveness = clock.now() - LIVENESS_EVERY
        paused = False
        log.info("evaluator starting")
        try:
            while not stop.is_set():
                batch: set[DeviceKey] = set()
                try:
                    now = clock.now()
                    if await wakeups.ensure():
                        wakeups.pending |= await _changed_since(ctx.engine, heard_until - RECONNECT_MARGIN)
                        wakeups.rules_dirty.set()
                    if wakeups.rules_dirty.is_set() or now - rules_loaded_at >= RULES_REFRESH:
                        wakeups.rules_dirty.clear()
                        await evaluator.load_rules()
                        rules_loaded_at = now
                    batch = wakeups.pending | evaluator.due_pending(now)
                    wakeups.pending.clear()
                    if batch:
                        await evaluator.evaluate_devices(batch, now)
                    if now - last_liveness >= LIVENESS_EVERY:
                        async with system_tx(ctx.engine) as conn:
                            state, _ = await guarded_liveness(conn, now, base_url=settings.base_url)
                        await evaluator.check_gaps(now, paused=state.paused,
                                                   grace_from=state.ready_since if state.known else None)
                        if state.paused != paused:
                            paused = state.paused
                            if paused:
                                log.error("ingest is down: device liveness paused, no device is marked STALE or "
                                          "OFFLINE until it is back", extra={"ingest": state.detail[:500]})
                            else:
                                log.warning("ingest is back: device liveness resumed, silence counted from %s",
                                            state.ready_since)
                        last_liveness = now
                    heard_until = now
                except TRANSIENT_DB_ERRORS as exc:
                    wakeups.pending |= batch  # evaluate these again once the database answers
                    await backoff.failed(exc, stop)
                    continue
                backoff.ok()
                if not wakeups.pending:
                    await wait_or_stop(stop, wakeups.wake, min(settings.evaluate_poll_ms / 1000, 1.0))
        finally:
            await wakeups.close()
    return 0
