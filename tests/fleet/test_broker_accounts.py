"""Broker-level security with a real Mosquitto running deploy/mosquitto/mosquitto.conf and dynamic security."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50

from pulse.fleet.broker_accounts import BrokerAdmin
from tests.fleet.conftest import INGEST, admin_url

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None or shutil.which("mosquitto_ctrl") is None,
                                reason="mosquitto and mosquitto_ctrl are installed by `make test`")


@pytest.fixture
async def admin(broker: int) -> AsyncIterator[BrokerAdmin]:
    async with BrokerAdmin(admin_url(broker), client_id=f"admin-{time.monotonic_ns()}") as a:
        await a.ensure_ingest_account(*INGEST)
        yield a


class Peer:
    """An MQTT client that records what it receives, its SUBACK codes and its disconnects."""

    def __init__(self, name: str) -> None:
        self.client = gmqtt.Client(f"{name}-{time.monotonic_ns()}")
        self.client.set_config({"reconnect_retries": 0})
        self.received: list[tuple[str, bytes]] = []
        self.suback: asyncio.Queue[list[int]] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda _c, _mid, qos, _p: self.suback.put_nowait(list(qos))
        self.client.on_disconnect = lambda *_: self.disconnected.set()

    def _on_message(self, _c: Any, topic: str, payload: bytes, _qos: int, _p: Any) -> int:
        self.received.append((topic, payload))
        return 0

    async def connect(self, port: int, user: str | None, password: str | None) -> None:
        if user is not None and "/" in user:  # a device account connects with its username as client id
            self.client._client_id = user
        if user is not None:
            self.client.set_auth_credentials(user, password)
        await self.client.connect("127.0.0.1", port, version=MQTTv50)

    async def subscribe(self, topic: str) -> list[int]:
        self.client.subscribe(topic, qos=1)
        return await asyncio.wait_for(self.suback.get(), 5)


async def _refused(port: int, user: str | None, password: str | None) -> bool:
    peer = Peer("refused")
    try:
        await asyncio.wait_for(peer.connect(port, user, password), 5)
    except (gmqtt.mqtt.handler.MQTTConnectError, ConnectionError, TimeoutError):
        return True
    await peer.client.disconnect()
    return False


async def test_anonymous_and_wrong_passwords_are_refused(broker: int, admin: BrokerAdmin) -> None:
    await admin.ensure_device("acme", "d1", "acme/d1", "device-password-1")
    assert await _refused(broker, None, None)
    assert await _refused(broker, "acme/d1", "not-the-password")
    assert not await _refused(broker, "acme/d1", "device-password-1")


async def test_a_device_publishes_and_subscribes_only_under_its_own_topics(broker: int, admin: BrokerAdmin) -> None:
    await admin.ensure_device("acme", "d1", "acme/d1", "pw-d1-xxxxxxxx")
    await admin.ensure_device("acme", "d2", "acme/d2", "pw-d2-xxxxxxxx")
    ingest, device = Peer("ingest"), Peer("device")
    await ingest.connect(broker, *INGEST)
    assert (await ingest.subscribe("$share/pulse-ingest/tenant/+/device/+/+"))[0] < 128
    await device.connect(broker, "acme/d1", "pw-d1-xxxxxxxx")
    try:
        for topic in ("tenant/acme/device/d1/telemetry", "tenant/acme/device/d2/telemetry",
                      "tenant/globex/device/d1/telemetry", "tenant/acme/device/d1"):
            device.client.publish(topic, topic.encode(), qos=1)
        await asyncio.sleep(1.0)
        assert [t for t, _ in ingest.received] == ["tenant/acme/device/d1/telemetry"]
        assert (await device.subscribe("tenant/acme/device/d1/command/reboot"))[0] < 128
        for forbidden in ("tenant/acme/device/d2/command/#", "tenant/globex/#", "tenant/+/device/+/+", "#"):
            assert (await device.subscribe(forbidden))[0] >= 128, forbidden
        assert (await ingest.subscribe("tenant/acme/device/d1/telemetry"))[0] < 128
        ingest.client.publish("tenant/acme/device/d1/command/reboot", b"x", qos=1)  # ingest publishes nowhere
        await asyncio.sleep(0.5)
        assert [t for t, _ in device.received] == []
    finally:
        await device.client.disconnect()
        await ingest.client.disconnect()


async def test_revocation_cuts_off_a_connected_device_within_two_seconds(broker: int, admin: BrokerAdmin) -> None:
    await admin.ensure_device("acme", "d3", "acme/d3", "pw-d3-xxxxxxxx")
    device = Peer("device")
    await device.connect(broker, "acme/d3", "pw-d3-xxxxxxxx")
    started = time.monotonic()
    await admin.revoke_device("acme/d3")
    await asyncio.wait_for(device.disconnected.wait(), 2.0)
    cut_after = time.monotonic() - started
    assert cut_after < 2.0
    assert await _refused(broker, "acme/d3", "pw-d3-xxxxxxxx")


async def test_rotation_retires_the_old_password_and_its_session(broker: int, admin: BrokerAdmin) -> None:
    await admin.ensure_device("acme", "d4", "acme/d4", "old-password-xxxx")
    device = Peer("device")
    await device.connect(broker, "acme/d4", "old-password-xxxx")
    await admin.ensure_device("acme", "d4", "acme/d4", "new-password-yyyy")
    await asyncio.wait_for(device.disconnected.wait(), 2.0)
    assert await _refused(broker, "acme/d4", "old-password-xxxx")
    assert not await _refused(broker, "acme/d4", "new-password-yyyy")


async def test_deleted_device_cannot_connect(broker: int, admin: BrokerAdmin) -> None:
    await admin.ensure_device("acme", "d5", "acme/d5", "pw-d5-xxxxxxxx")
    await admin.delete_device("acme", "d5", "acme/d5")
    assert await _refused(broker, "acme/d5", "pw-d5-xxxxxxxx")
    await admin.delete_device("acme", "d5", "acme/d5")  # idempotent
