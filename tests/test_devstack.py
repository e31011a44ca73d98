"""The embedded pieces behind `pulse dev`: PostgreSQL from the wheel and the in-process MQTT broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311

from pulse.devstack import free_port, start_embedded_broker, start_embedded_postgres


async def test_embedded_postgres_serves_pulse_over_loopback_and_keeps_data(tmp_path: Path) -> None:
    server = await start_embedded_postgres(tmp_path / "postgres")
    try:
        parts = urlsplit(server.url)
        assert (parts.hostname, parts.path) == ("127.0.0.1", "/pulse")
        conn = await asyncpg.connect(server.url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        finally:
            await conn.close()
        # Loopback TCP is not trusted: without the generated password the superuser is refused.
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(server.url.replace(parts.password or "", "wrong-password"))
    finally:
        server.stop()
    with pytest.raises(OSError):
        await asyncpg.connect(server.url, timeout=5)

    again = await start_embedded_postgres(tmp_path / "postgres")  # a later run: same data, same password
    try:
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT n FROM kept") == 42
        finally:
            await conn.close()
    finally:
        again.stop()


async def _connected_client(client_id: str, url: str) -> gmqtt.Client:
    parts = urlsplit(url)
    client = gmqtt.Client(client_id)
    # amqtt speaks MQTT 3.1.1 only. gmqtt's default, MQTT 5, is refused with CONNACK 0x01; gmqtt then
    # downgrades and reconnects, but only after its reconnect delay (seconds). Ask for 3.1.1 directly.
    await asyncio.wait_for(client.connect(parts.hostname, parts.port, version=MQTTv311, keepalive=10), 10)
    return client


async def test_embedded_broker_relays_a_message_between_two_clients() -> None:
    broker = await start_embedded_broker("127.0.0.1", free_port())
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    subscribed = asyncio.Event()
    subscriber = publisher = None
    try:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}?protocol=3.1.1"
        subscriber = await _connected_client("test-subscriber", broker.url)

        def on_message(_client: object, topic: str, payload: bytes, _qos: int, _props: object) -> int:
            received.put_nowait((topic, payload))
            return 0

        subscriber.on_message = on_message
        subscriber.on_subscribe = lambda *_: subscribed.set()
        subscriber.subscribe("devices/+/telemetry", qos=1)
        await asyncio.wait_for(subscribed.wait(), 10)

        publisher = await _connected_client("test-publisher", broker.url)
        payload = b'{"temperature": 21.5}'
        publisher.publish("devices/dev-1/telemetry", payload, qos=1)
        assert await asyncio.wait_for(received.get(), 10) == ("devices/dev-1/telemetry", payload)
    finally:
        for client in (subscriber, publisher):
            if client is not None:
                await client.disconnect()
        await broker.stop()


async def test_embedded_broker_falls_back_to_a_free_port_when_its_port_is_taken() -> None:
    first = await start_embedded_broker("127.0.0.1", free_port())
    try:
        second = await start_embedded_broker("127.0.0.1", first.port)
        try:
            assert second.port != first.port
        finally:
            await second.stop()
    finally:
        await first.stop()


async def test_embedded_broker_refuses_a_non_loopback_address() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await start_embedded_broker("0.0.0.0", free_port())
