"""MQTT peers for fault tests: a gateway that publishes numbered QoS 1 messages and records which ones the broker
acknowledged (PUBACK reason code), and a persistent-session subscriber that records what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import struct
from collections import deque
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50

Key = tuple[str, int]
"""(device_id, seq): what identifies one device message."""
NO_MATCHING_SUBSCRIBERS = 0x10


def envelope(seq: int, metrics: dict[str, Any], ts: datetime | None = None) -> bytes:
    """A device message with its own timestamp, as real devices and `pulse simulate` send them: a resend of it is
    the same row (the unique index covers the message time), not a second one."""
    stamp = (ts or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"version": "1", "ts": stamp, "seq": seq, "metrics": metrics}).encode()


class AckedPublisher:
    """Publishes (key, topic, payload) messages over MQTT 5 at QoS 1 with up to `window` unacknowledged.

    A message counts as acknowledged when the broker's PUBACK carries a success code. When the connection drops,
    the unacknowledged messages are sent again after reconnecting, as a device would (same payload, so a copy that
    did arrive the first time is the same row). PUBACK 0x10 (no matching subscribers: the broker dropped the
    message) is recorded in `no_subscribers`. A connection attempt the broker closes or refuses is counted in
    `held_off` and tried again 0.2 s later."""

    def __init__(self, host: str, port: int, username: str, password: str, *, window: int = 100,
                 rate_per_s: float | None = None) -> None:
        self.host, self.port, self.username, self.password = host, port, username, password
        self.window = window
        self.rate_per_s = rate_per_s
        self.sent = 0
        self.acked: set[Key] = set()
        self.no_subscribers: set[Key] = set()
        self.refused: dict[Key, int] = {}
        self.connections = 0
        self.held_off = 0
        self._pending: dict[int, tuple[Key, str, bytes]] = {}
        self._progress = asyncio.Event()
        self._lost = asyncio.Event()
        self._client: gmqtt.Client | None = None

    def _on_puback(self, original: Any, cmd: int, packet: bytes) -> None:
        (mid,) = struct.unpack_from("!H", packet, 0)
        code = packet[2] if len(packet) > 2 else 0
        entry = self._pending.pop(mid, None)
        if entry is not None:
            key = entry[0]
            if code == NO_MATCHING_SUBSCRIBERS:
                self.no_subscribers.add(key)
            elif code < 0x80:
                self.acked.add(key)
            else:
                self.refused[key] = code
        self._progress.set()
        original(cmd, packet)

    def _on_disconnect(self, *_args: Any) -> None:
        self._lost.set()
        self._progress.set()

    async def _connect(self, deadline: float) -> gmqtt.Client:
        loop = asyncio.get_running_loop()
        while True:
            client = gmqtt.Client(f"fault-gateway-{secrets.token_hex(4)}", clean_session=True)
            client.set_config({"reconnect_retries": 0})
            client.set_auth_credentials(self.username, self.password)
            handler = client._package_handler
            original = handler._handle_puback_packet
            handler._handle_puback_packet = lambda cmd, packet, o=original: self._on_puback(o, cmd, packet)
            if hasattr(handler, "_handler_cache"):
                handler._handler_cache.clear()
            client.on_disconnect = self._on_disconnect
            try:
                await asyncio.wait_for(client.connect(self.host, self.port, version=MQTTv50, keepalive=10), 5)
            except (OSError, TimeoutError, gmqtt.mqtt.handler.MQTTConnectError):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), 2)
                assert loop.time() < deadline, f"could not connect to 127.0.0.1:{self.port}"
                self.held_off += 1
                await asyncio.sleep(0.2)
                continue
            self.connections += 1
            self._lost.clear()
            return client

    async def publish_all(self, messages: Iterable[tuple[Key, str, bytes]], *, timeout: float = 120) -> None:
        """Publish every message until each is acknowledged or refused (reconnecting as often as needed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        queue = deque(messages)
        client = self._client = await self._connect(deadline)
        started = loop.time()
        try:
            while queue or self._pending:
                assert loop.time() < deadline, f"{len(queue) + len(self._pending)} messages still unacknowledged"
                if self._lost.is_set() or not client.is_connected:
                    # Not acknowledged on the lost connection: send them again, in their original order.
                    queue.extendleft(reversed([(k, t, p) for k, t, p in self._pending.values()]))
                    self._pending.clear()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.disconnect(), 2)
                    client = self._client = await self._connect(deadline)
                    continue
                allowed = len(queue) if self.rate_per_s is None else \
                    int((loop.time() - started) * self.rate_per_s) + self.window - self.sent
                while queue and len(self._pending) < self.window and allowed > 0:
                    allowed -= 1
                    self.sent += 1
                    key, topic, payload = queue.popleft()
                    mid, _package = client._connection.publish(gmqtt.Message(topic, payload, qos=1))
                    self._pending[mid] = (key, topic, payload)
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), 1.0 if allowed > 0 else 0.02)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 2)


class SessionSubscriber:
    """A subscriber with a persistent session (clean start off, an hour's expiry) that gmqtt reconnects."""

    def __init__(self, port: int, username: str, password: str, topic_filter: str) -> None:
        self.port, self.topic_filter = port, topic_filter
        self.client = gmqtt.Client(f"fault-consumer-{secrets.token_hex(4)}", clean_session=False,
                                   session_expiry_interval=3600)
        self.client.set_config({"reconnect_delay": 1, "reconnect_retries": 1000})
        self.client.set_auth_credentials(username, password)
        self.received: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.subscribed = asyncio.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self.subscribed.set()

    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int, properties: dict[str, Any]) -> int:
        self.received.append((topic, json.loads(payload), dict(properties.get("user_property", []))))
        return 0

    async def start(self) -> SessionSubscriber:
        await asyncio.wait_for(self.client.connect("127.0.0.1", self.port, version=MQTTv50), 10)
        self.client.subscribe(self.topic_filter, qos=1)
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(session_expiry_interval=0), 5)


@pytest.fixture
async def subscribers() -> AsyncIterator[list[SessionSubscriber]]:
    """SessionSubscribers a test started; closed at the end whatever happened."""
    started: list[SessionSubscriber] = []
    yield started
    for subscriber in started:
        await subscriber.close()
