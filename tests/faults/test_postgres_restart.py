"""PostgreSQL restarted (`pg_ctl restart -m fast`, and `-m immediate`) while a real `pulse ingest` takes a steady
QoS 1 stream: every message the broker acknowledged to the device is stored exactly once.

Why that holds: the broker's PUBACK to the device means the message sits in ingest's persistent session; ingest
acknowledges it to the broker only after the batch holding it committed, and retries a batch whose commit failed
(the connection died with the server) until it commits. A commit whose answer was lost is retried too, and the
unique index on (tenant, device, time, seq, msg_type) turns the second write into nothing.
"""

from __future__ import annotations

import asyncio

import pytest

from pulse.db import create_engine
from tests.conftest import make_tenant
from tests.faults.data import add_devices, fetchval, stored_keys
from tests.faults.mqtt_tools import AckedPublisher, Key, envelope
from tests.faults.private_broker import PrivateBroker, private_broker, publisher_acls
from tests.faults.private_postgres import PrivatePostgres, private_postgres
from tests.faults.processes import PulseProcesses, eventually, processes

__all__ = ["private_broker", "private_postgres", "processes"]  # fixtures

DEVICES = 40
PER_DEVICE = 250  # 10,000 messages
RATE_PER_S = 800  # so the stream goes on through the restart


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_no_acknowledged_message_is_lost_or_doubled_across_a_postgres_restart(
        mode: str, private_postgres: PrivatePostgres, private_broker: PrivateBroker, processes: PulseProcesses) -> None:
    """`fast`: sessions terminated, clean shutdown. `immediate`: the server stops without a checkpoint, like a
    crash, and recovers from its WAL when it starts."""
    url = private_postgres.url()
    engine = create_engine(url, pool_size=1)
    try:
        tenant = await make_tenant(engine, heartbeat_interval_s=3600)
        device_ids = [f"meter-{i:03d}" for i in range(DEVICES)]
        await add_devices(engine, tenant, device_ids)
    finally:
        await engine.dispose()
    ingest_account = await private_broker.ingest_account()
    gateway = await private_broker.account(f"gateway-{tenant.tenant_id}", publisher_acls(tenant.tenant_id))

    processes.start("ingest", "ingest", PULSE_DATABASE_URL=url, PULSE_MQTT_URL=private_broker.url(*ingest_account),
                    PULSE_INGEST_SHARED_GROUP="faults-pg", PULSE_INGEST_RATE_PER_S="100000",
                    PULSE_INGEST_BURST="100000")
    await processes.ready("ingest", "mqtt")

    messages: list[tuple[Key, str, bytes]] = [
        ((d, seq), f"tenant/{tenant.tenant_id}/device/{d}/telemetry", envelope(seq, {"energy_kwh": seq}))
        for seq in range(1, PER_DEVICE + 1) for d in device_ids]
    total = len(messages)
    publisher = AckedPublisher("127.0.0.1", private_broker.port, *gateway, rate_per_s=RATE_PER_S)
    publishing = asyncio.create_task(publisher.publish_all(messages, timeout=180))
    try:
        async def stored_some() -> bool:
            assert not publishing.done() or publishing.exception() is None
            return sum((await stored_keys(url, tenant.tenant_id)).values()) >= total // 4
        await eventually(stored_some, timeout=90, what="a quarter of the stream to be stored",
                         details=processes.outputs)
        await asyncio.to_thread(private_postgres.restart, mode)
        still_publishing = not publishing.done()
        await asyncio.wait_for(publishing, 180)
    finally:
        if not publishing.done():
            publishing.cancel()
    assert still_publishing, "the stream ended before the database came back"
    assert not publisher.refused and not publisher.no_subscribers
    assert publisher.acked == {key for key, _, _ in messages}

    async def all_stored() -> bool:
        return set(await stored_keys(url, tenant.tenant_id)) >= publisher.acked
    await eventually(all_stored, timeout=120, what="every acknowledged message to be stored",
                     details=lambda: processes.output("ingest") + private_postgres.log_tail())
    assert processes.stop("ingest") == 0, processes.output("ingest")

    stored = await stored_keys(url, tenant.tenant_id)
    assert set(stored) == publisher.acked
    assert [key for key, n in stored.items() if n > 1] == []
    assert await fetchval(url, "SELECT count(*) FROM quarantine_events WHERE tenant_id = $1", tenant.tenant_id) == 0
    log = processes.output("ingest", 200_000)
    assert "batch write failed" in log, "ingest never saw the database go away"
