"""`pulse ingest`: one MQTT consumer feeding the ingest pipeline until SIGTERM, then flush and exit."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from pulse.clock import Clock, SystemClock
from pulse.errors import SettingsError
from pulse.ingest.heartbeat import instance_name, run_heartbeat
from pulse.ingest.mqtt import DEFAULT_SESSION_EXPIRY_S, MqttConsumer, broker_address
from pulse.ingest.service import IngestPipeline
from pulse.runtime import Health, worker_context
from pulse.settings import Settings

log = logging.getLogger("pulse.ingest")

WORKER_INDEX_ENV = "INGEST_WORKER_INDEX"
"""Set by `pulse ingest --workers N` for each child (not a PULSE_* setting: Settings refuses unknown ones)."""


def worker_index(environ: dict[str, str] | None = None) -> int:
    """This process's index among ingest workers (0 when run alone); it names the MQTT session."""
    raw = (environ if environ is not None else os.environ).get(WORKER_INDEX_ENV, "0").strip() or "0"
    if not raw.isdigit():
        raise SettingsError(f"{WORKER_INDEX_ENV}={raw!r} is invalid: expected a number >= 0")
    return int(raw)


async def _starting() -> tuple[bool, str]:
    return False, "starting: warming the device cache, not yet consuming MQTT"


async def run(settings: Settings, stop: asyncio.Event, *, clock: Clock | None = None, client_id: str | None = None,
              rate_per_s: float | None = None, burst: float | None = None, grace_s: float = 10.0,
              session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
              on_started: Callable[[Health], None] | None = None) -> int:
    """Consume MQTT until `stop`; returns 0 after committing what was received (or leaving it unacknowledged
    for redelivery when the database stayed down through `grace_s`)."""
    address = broker_address(settings.require_mqtt_url(), settings.mqtt_ingest_password)
    # The group is part of the id: a session resumed under another group would keep the old subscription too.
    client_id = client_id or f"{settings.ingest_shared_group}-{worker_index()}"
    async with worker_context("ingest", settings, stop) as ctx:
        # Room for four batches: the broker may keep two unacknowledged with us (see MqttConsumer), so one batch
        # fills while another commits.
        ctx.health.ready_checks["ingest"] = _starting  # not ready until the consumer below is set up
        pipeline = IngestPipeline(ctx.engine, settings, clock or SystemClock(), rate_per_s=rate_per_s, burst=burst,
                                  max_pending=4 * settings.ingest_batch_size)
        await pipeline.start()
        await pipeline.prepare()
        consumer = MqttConsumer(pipeline, address, client_id=client_id, shared_group=settings.ingest_shared_group,
                                session_expiry_s=session_expiry_s)
        ctx.health.ready_checks["ingest"] = pipeline.ready_check
        ctx.health.ready_checks["mqtt"] = consumer.ready_check
        beating = asyncio.Event()
        heartbeat = asyncio.create_task(run_heartbeat(
            ctx.engine, pipeline.clock, instance_name("ingest", client_id), "ingest",
            [pipeline.ready_check, consumer.ready_check], beating), name="ingest-heartbeat")
        log.info("ingest worker starting", extra={"client_id": client_id, "group": settings.ingest_shared_group})
        if on_started is not None:
            on_started(ctx.health)
        acknowledged_all = False
        try:
            acknowledged_all = await consumer.run(stop, grace_s=grace_s)
        finally:
            beating.set()
            committed_all = await pipeline.close(grace_s=0.5)
            await consumer.wait_handlers()
            await asyncio.wait({heartbeat}, timeout=2.0)
        if not (acknowledged_all and committed_all):
            log.warning("stopped with messages left unacknowledged; the broker will deliver them again")
    return 0
