"""Ingest test helpers: a started pipeline, an in-process worker, an MQTT publisher and a cuttable TCP link."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import gmqtt
import msgspec
import pytest
from gmqtt.mqtt.constants import MQTTv50
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.crypto import hash_token, new_token
from pulse.db import system_tx
from pulse.ingest.service import IngestPipeline
from pulse.ingest.worker import run
from pulse.runtime import Health
from pulse.settings import Settings
from tests.conftest import TenantRef

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy (the test's wait for an asynchronous effect)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def body(**fields: Any) -> bytes:
    return msgspec.json.encode(fields)


@pytest.fixture
async def pipeline(engine: AsyncEngine, settings: Settings) -> AsyncIterator[IngestPipeline]:
    p = IngestPipeline(engine, settings.replace(ingest_flush_ms=20))
    await p.start()
    yield p
    await p.close()


async def issue_token(engine: AsyncEngine, tenant_id: str, device_id: str) -> str:
    """A live provision token for the device, stored the way fleet stores it (sha256 hash)."""
    token = new_token("pt")
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "INSERT INTO device_credentials (tenant_id, device_id, kind, secret_hash, hint) "
            "VALUES (:t, :d, 'PROVISION_TOKEN', :h, :hint)"),
            {"t": tenant_id, "d": device_id, "h": hash_token(token), "hint": token[:7]})
    return token


async def sql(engine: AsyncEngine, statement: str, **params: Any) -> list[Any]:
    async with system_tx(engine) as conn:
        result = await conn.execute(text(statement), params)
        return list(result.mappings()) if result.returns_rows else []


async def quarantine_rows(engine: AsyncEngine, where: str, **params: Any) -> list[Any]:
    return await sql(engine, f"SELECT * FROM quarantine_events WHERE {where} ORDER BY quarantine_id", **params)


async def set_subscription_status(engine: AsyncEngine, tenant: TenantRef, status: str) -> None:
    await sql(engine, "UPDATE subscriptions SET status = :s WHERE subscription_id = :id",
              s=status, id=tenant.subscription_id)


def mqtt_host_port(mqtt_url: str) -> tuple[str, int]:
    parts = urlsplit(mqtt_url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


async def publish(mqtt_url: str, messages: list[tuple[str, bytes]], *, version: int = MQTTv50) -> None:
    """Publish at QoS 1 and return once the broker acknowledged every message."""
    host, port = mqtt_host_port(mqtt_url)
    client = gmqtt.Client(f"test-pub-{secrets.token_hex(4)}")
    await client.connect(host, port, version=version)
    storage = client._persistent_storage  # gmqtt keeps unacknowledged QoS 1 messages here
    try:
        for i in range(0, len(messages), 10):  # the broker lets a client have ~20 messages in flight
            for topic, payload in messages[i:i + 10]:
                client.publish(topic, payload, qos=1)
            await eventually(lambda: _true(storage.is_empty), timeout=20, what="PUBACKs from the broker")
    finally:
        await client.disconnect()


async def _true(value: bool) -> bool:
    return value


async def forget_session(mqtt_url: str, client_id: str) -> None:
    """Connect once with clean start and no expiry, so the broker drops a test's persistent session."""
    host, port = mqtt_host_port(mqtt_url)
    client = gmqtt.Client(client_id, clean_session=True, session_expiry_interval=0)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.connect(host, port, version=MQTTv50), 5)
        await client.disconnect()


@dataclass
class RunningWorker:
    """`pulse ingest` running in this event loop, stopped through its stop event like SIGTERM would."""

    settings: Settings
    client_id: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[int] | None = None
    health: Health | None = None

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        assert self.health is not None
        return await self.health.readiness()

    async def wait_subscribed(self) -> None:
        async def subscribed() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()  # surface a crash instead of waiting for the timeout
            return self.health is not None and (await self.readiness())[1].get("mqtt", "").startswith("ok")
        await eventually(subscribed, what="the worker's MQTT subscription")

    async def stopped(self, timeout: float = 60) -> int:
        assert self.task is not None
        self.stop.set()
        return await asyncio.wait_for(self.task, timeout)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, *, client_id: str | None = None, **options: Any
                         ) -> AsyncIterator[RunningWorker]:
    worker = RunningWorker(settings, client_id or f"test-ingest-{secrets.token_hex(4)}")

    def started(health: Health) -> None:
        worker.health = health

    worker.task = asyncio.create_task(run(settings, worker.stop, client_id=worker.client_id, on_started=started,
                                          session_expiry_s=options.pop("session_expiry_s", 300), **options))
    try:
        await worker.wait_subscribed()
        yield worker
    finally:
        if not worker.task.done():
            worker.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.task, 60)


def worker_settings(settings: Settings, **changes: Any) -> Settings:
    """Settings of a test worker: a shared-subscription group of its own, so parallel runs never share messages."""
    return settings.replace(ingest_shared_group=f"test-{secrets.token_hex(4)}", **changes)


class TcpLink:
    """A TCP relay to a real server that a test can cut (closing every connection, refusing new ones) and restore.

    It lets tests take PostgreSQL away from a worker the way a network failure would, without touching the server.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.up = True
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url_for(self, database_url: str) -> str:
        parts = urlsplit(database_url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    def cut(self) -> None:
        self.up = False
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
