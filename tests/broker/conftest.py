"""Broker test helpers: each module gets its own Mosquitto from deploy/mosquitto; clients that record reason codes."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50

from pulse.fleet.broker_accounts import BrokerAdmin
from tests.fleet.conftest import ADMIN, INGEST, admin_url, broker  # noqa: F401 - `broker` is a fixture

NOT_AUTHORISED = 0x87  # MQTT 5 reason code in CONNACK, PUBACK and SUBACK

requires_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None or shutil.which("mosquitto_ctrl") is None,
    reason="mosquitto and mosquitto_ctrl are installed by `make test`")


class Peer:
    """A real MQTT 5 client that records what it receives and the broker's PUBACK/SUBACK reason codes."""

    def __init__(self, name: str) -> None:
        self.client = gmqtt.Client(f"{name}-{secrets.token_hex(4)}")
        self.client.set_config({"reconnect_retries": 0})
        self.received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self._subacks: asyncio.Queue[list[int]] = asyncio.Queue()
        self._pubacks: asyncio.Queue[int] = asyncio.Queue()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda _c, _mid, codes, _p: self._subacks.put_nowait(list(codes))
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        handler = self.client._package_handler
        record_ack = handler._handle_puback_packet

        def on_puback(cmd: int, packet: bytes) -> None:
            # gmqtt drops the MQTT 5 PUBACK reason code; it is the byte after the packet id (absent = success).
            self._pubacks.put_nowait(packet[2] if len(packet) > 2 else 0)
            record_ack(cmd, packet)

        handler._handle_puback_packet = on_puback

    def _on_message(self, _c: Any, topic: str, payload: bytes, _qos: int, _p: Any) -> int:
        self.received.put_nowait((topic, payload))
        return 0

    async def connect(self, port: int, username: str, password: str) -> Peer:
        if "/" in username:  # a device account ({tenant}/{device}) connects with its username as client id
            self.client._client_id = username
        self.client.set_auth_credentials(username, password)
        await asyncio.wait_for(self.client.connect("127.0.0.1", port, version=MQTTv50), 5)
        return self

    async def subscribe(self, topic: str) -> int:
        """The SUBACK reason code (granted QoS, or a failure code >= 0x80)."""
        self.client.subscribe(topic, qos=1)
        return (await asyncio.wait_for(self._subacks.get(), 5))[0]

    async def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the broker's PUBACK reason code."""
        self.client.publish(topic, payload, qos=1)
        return await asyncio.wait_for(self._pubacks.get(), 5)

    async def next_message(self, timeout: float = 5) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.disconnect()


async def connect_error(port: int, username: str | None, password: str | None, *, client_id: str | None = None
                        ) -> int | None:
    """The CONNACK refusal code, or None when the broker accepted the connection. A device account connects with
    its username as client id unless `client_id` says otherwise."""
    peer = Peer("probe")
    if client_id is not None or (username is not None and "/" in username):
        peer.client._client_id = client_id or username
    if username is not None:
        peer.client.set_auth_credentials(username, password)
    try:
        await asyncio.wait_for(peer.client.connect("127.0.0.1", port, version=MQTTv50), 5)
    except gmqtt.mqtt.handler.MQTTConnectError as exc:
        return int(exc._code)
    finally:
        await peer.close()
    return None


@pytest.fixture
async def admin(broker: int) -> AsyncIterator[BrokerAdmin]:  # noqa: F811 - the imported fixture
    async with BrokerAdmin(admin_url(broker), client_id=f"test-admin-{secrets.token_hex(4)}") as a:
        yield a


@pytest.fixture
async def ingest(broker: int, admin: BrokerAdmin) -> AsyncIterator[Peer]:  # noqa: F811
    """The ingest account, subscribed to every device topic the way `pulse ingest` is on MQTT 5."""
    await admin.ensure_ingest_account(*INGEST)
    peer = await Peer("ingest").connect(broker, *INGEST)
    assert await peer.subscribe("$share/pulse-ingest/tenant/+/device/+/+") == 1
    yield peer
    await peer.close()


__all__ = ["ADMIN", "INGEST", "NOT_AUTHORISED", "Peer", "admin_url", "connect_error", "requires_mosquitto"]
