"""Malformed and oversized input on MQTT ingest, sent with a device's own credentials to a broker from
deploy/mosquitto/mosquitto.conf (dynamic security, the production packet limit) and consumed by `pulse ingest`:

- every topic form a device may publish to under its own prefix is either quarantined with its reason or never
  reaches ingest (deeper or shallower topics than `tenant/+/device/+/+`), and nothing is stored for it;
- payloads at, just over and far over the 64 KiB limit, empty and non-UTF-8 payloads, QoS 0, 1 and 2, MQTT 3.1.1
  and 5 with properties: stored when valid, quarantined with the reason otherwise;
- a publish to a wildcard topic is a protocol error: the broker closes the device's connection.

Every quarantine reason over MQTT is covered by tests/ingest/test_mqtt_worker.py; which topics a device may use at
all by tests/broker/test_device_acl.py and tests/security/test_mqtt_acl_matrix.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.fleet.broker_accounts import BrokerAdmin
from pulse.ingest.envelope import MAX_PAYLOAD_BYTES
from pulse.settings import Settings
from tests.broker.conftest import Peer, requires_mosquitto
from tests.conftest import make_device, make_tenant
from tests.fleet.conftest import INGEST, admin_url, broker
from tests.ingest.conftest import eventually, running_worker, worker_settings
from tests.security.ingest_fixtures import quarantine_of, telemetry_of

pytestmark = requires_mosquitto
__all__ = ["broker"]  # fixture

PASSWORD = "device-password-for-input-tests"


def envelope(seq: int, **extra: Any) -> bytes:
    return json.dumps({"version": "1", "seq": seq, "metrics": {"temp_c": 20.5}, **extra}).encode()


def padded(seq: int, size: int) -> bytes:
    """A valid envelope padded with whitespace to exactly `size` bytes."""
    body = json.dumps({"version": "1", "seq": seq, "metrics": {f"m{i}": "v" * 1000 for i in range(60)}}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


@pytest.fixture
async def ingest_worker(broker: int, settings: Settings) -> AsyncIterator[Any]:
    async with BrokerAdmin(admin_url(broker)) as admin:
        await admin.ensure_ingest_account(*INGEST)
    worker_conf = worker_settings(settings, mqtt_url=f"mqtt://{INGEST[0]}:{INGEST[1]}@127.0.0.1:{broker}",
                                  ingest_flush_ms=20)
    async with running_worker(worker_conf) as worker:
        yield worker


async def test_topic_forms_and_payloads_a_device_can_send_are_stored_or_quarantined(
        engine: AsyncEngine, broker: int, ingest_worker: Any) -> None:
    tenant = await make_tenant(engine, prefix="sec")
    t = tenant.tenant_id
    d = await make_device(engine, tenant)
    username = f"{t}/{d}"
    d311 = await make_device(engine, tenant)
    username_311 = f"{t}/{d311}"
    async with BrokerAdmin(admin_url(broker)) as admin:
        await admin.ensure_device(t, d, username, PASSWORD)
        await admin.ensure_device(t, d311, username_311, PASSWORD)
    prefix = f"tenant/{t}/device/{d}"
    device = await Peer("device").connect(broker, username, PASSWORD)
    try:
        never_reach_ingest = [f"{prefix}/telemetry/extra", f"{prefix}/command/reboot", prefix, f"{prefix}/a/b/c"]
        for topic in never_reach_ingest:
            assert await device.publish(topic, envelope(900)) in (0, 0x10), topic  # allowed, but nobody listens
        quarantined = [
            (f"{prefix}/status", envelope(901), "UNSUPPORTED_MSG_TYPE"),
            (f"{prefix}/TELEMETRY", envelope(902), "UNSUPPORTED_MSG_TYPE"),
            (f"{prefix}/", envelope(903), "BAD_TOPIC"),
            (f"{prefix}/telemetry", b"", "INVALID_JSON"),
            (f"{prefix}/telemetry", b"\xff\xfe\x00 not json", "INVALID_JSON"),
            (f"{prefix}/telemetry", b"[" * 65_000, "INVALID_ENVELOPE"),
            (f"{prefix}/telemetry", padded(904, MAX_PAYLOAD_BYTES + 1), "PAYLOAD_TOO_LARGE"),
            (f"{prefix}/telemetry", padded(905, 69_000), "PAYLOAD_TOO_LARGE"),
            (f"{prefix}/telemetry", envelope(906, tenant_id="someone-else"), "TENANT_MISMATCH"),
            (f"{prefix}/heartbeat", envelope(907, device_id="another-device"), "INVALID_ENVELOPE"),
        ]
        for topic, payload, _reason in quarantined:
            assert await device.publish(topic, payload) == 0, topic
        assert await device.publish(f"{prefix}/telemetry", padded(1, MAX_PAYLOAD_BYTES)) == 0
        device.client.publish(f"{prefix}/telemetry", envelope(2), qos=0)
        device.client.publish(f"{prefix}/telemetry", envelope(3), qos=2)
        device.client.publish(f"{prefix}/heartbeat", json.dumps({"version": "1", "seq": 4}).encode(), qos=1,
                              content_type="application/json", user_property=[("firmware", "1.2.3")])
        old = gmqtt.Client(username_311)  # a second device of the tenant, speaking MQTT 3.1.1
        old.set_auth_credentials(username_311, PASSWORD)
        await old.connect("127.0.0.1", broker, version=MQTTv311)
        old.publish(f"tenant/{t}/device/{d311}/telemetry", envelope(5), qos=1)

        async def stored() -> list[Any]:
            rows = await telemetry_of(engine, t)
            return rows if len(rows) >= 5 else []
        rows = await eventually(stored, timeout=30, what="the five valid messages")
        await old.disconnect()

        async def filed() -> list[Any]:
            rows = await quarantine_of(engine, "tenant_id = :t OR topic = :bad", t=t, bad=f"{prefix}/")
            return rows if len(rows) >= len(quarantined) else []
        quarantine = await eventually(filed, timeout=30, what="every quarantine event")
        await asyncio.sleep(1.0)  # anything else that reached ingest is committed by now
        assert sorted(r["reason"] for r in quarantine) == sorted(r for _t, _p, r in quarantined)
        assert {r["tenant_id"] for r in quarantine if r["reason"] == "BAD_TOPIC"} == {None}
        assert sorted((r["msg_type"], r["seq"]) for r in await telemetry_of(engine, t)) == sorted(\
            [("telemetry", 1), ("telemetry", 2), ("telemetry", 3), ("heartbeat", 4), ("telemetry", 5)])
        assert len(await quarantine_of(engine, "tenant_id = :t OR topic = :bad", t=t, bad=f"{prefix}/")) == \
            len(quarantined)
        assert [r for r in rows if r["seq"] >= 900] == []

        device.client.publish(f"{prefix}/+", envelope(908), qos=1)  # a wildcard in a PUBLISH: protocol error
        await asyncio.wait_for(device.disconnected.wait(), 10)
    finally:
        await device.close()
    assert ingest_worker.task is not None and not ingest_worker.task.done()
