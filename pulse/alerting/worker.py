"""`pulse evaluate`: wakes on ingest's per-batch NOTIFY, evaluates those devices, runs liveness each second."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import asyncpg
from sqlalchemy import text

from pulse.alerting.evaluator import DeviceKey, Evaluator, liveness_pass
from pulse.clock import Clock, SystemClock
from pulse.db import connect_raw, system_tx
from pulse.runtime import wait_or_stop, worker_context
from pulse.settings import Settings

log = logging.getLogger("pulse.evaluate")

TELEMETRY_CHANNEL = "pulse_telemetry"
RULES_CHANNEL = "pulse_rules_changed"
RULES_REFRESH = timedelta(seconds=30)
LIVENESS_EVERY = timedelta(seconds=1)
CATCH_UP = timedelta(minutes=10)


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


async def run(settings: Settings, stop: asyncio.Event, *, clock: Clock | None = None) -> int:
    clock = clock or SystemClock()
    async with worker_context("evaluate", settings, stop) as ctx:
        evaluator = Evaluator(ctx.engine, base_url=settings.base_url)
        pending: set[DeviceKey] = set()
        wake = asyncio.Event()
        rules_dirty = asyncio.Event()

        def on_telemetry(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            pending.update(parse_wakeup(payload))
            wake.set()

        def on_rules(_conn: object, _pid: int, _channel: str, _payload: str) -> None:
            rules_dirty.set()
            wake.set()

        listener: asyncpg.Connection = await connect_raw(settings.require_database_url(), "pulse-evaluate-listen")
        await listener.add_listener(TELEMETRY_CHANNEL, on_telemetry)
        await listener.add_listener(RULES_CHANNEL, on_rules)
        try:
            await evaluator.load_rules()
            rules_loaded_at = clock.now()
            async with system_tx(ctx.engine) as conn:  # devices that spoke while no evaluator ran
                rows = await conn.execute(
                    text("SELECT tenant_id, device_id FROM device_state WHERE updated_at > :since"),
                    {"since": clock.now() - CATCH_UP})
                pending.update((r[0], r[1]) for r in rows)
            last_liveness = clock.now() - LIVENESS_EVERY
            log.info("evaluator started", extra={"tenants_with_rules": len(evaluator.rules_by_tenant)})
            while not stop.is_set():
                now = clock.now()
                if rules_dirty.is_set() or now - rules_loaded_at >= RULES_REFRESH:
                    rules_dirty.clear()
                    await evaluator.load_rules()
                    rules_loaded_at = now
                batch = pending | evaluator.due_pending(now)
                pending.clear()
                if batch:
                    await evaluator.evaluate_devices(batch, now)
                if now - last_liveness >= LIVENESS_EVERY:
                    async with system_tx(ctx.engine) as conn:
                        await liveness_pass(conn, now, base_url=settings.base_url)
                    last_liveness = now
                if not pending:
                    await wait_or_stop(stop, wake, min(settings.evaluate_poll_ms / 1000, 1.0))
        finally:
            await listener.close()
    return 0
