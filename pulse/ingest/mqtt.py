"""MQTT adapter: a persistent-session gmqtt consumer that acknowledges each message only after its batch committed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import gmqtt
import prometheus_client
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from pulse.errors import SettingsError
from pulse.ingest.envelope import TOPIC_FILTER
from pulse.ingest.service import IngestPipeline
from pulse.ingest.validate import InboundMessage
from pulse.ingest.writer import IngestUnavailable
from pulse.runtime import wait_or_stop

log = logging.getLogger("pulse.ingest.mqtt")

PROTOCOLS = ("auto", "5", "3.1.1")
PUBACK_SUCCESS = 0
DEFAULT_SESSION_EXPIRY_S = 86400
WAITED = prometheus_client.Counter(
    "pulse_ingest_mqtt_waited", "MQTT messages that waited (registry record not cached, or the writer full)")
_U16 = struct.Struct("!H")
_PUBACK = struct.Struct("!BBH")  # PUBACK, remaining length 2, packet id: success in MQTT 3.1.1 and 5 alike

RECONNECT_DELAY_S = 0.5
"""Pause before each reconnect attempt. Short, because the broker does not restore ingest's shared subscription
after a restart: until ingest subscribes again, the broker's ingest gate holds devices off (docs/broker.md)."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to connect, from PULSE_MQTT_URL (`mqtt[s]://user[:password]@host[:port][?protocol=…]`)."""

    host: str
    port: int
    ssl: bool
    username: str | None
    password: str | None
    protocol: str  # auto (MQTT 5, else 3.1.1), 5 or 3.1.1


def broker_address(mqtt_url: str, ingest_password: str) -> BrokerAddress:
    """Parse the broker URL; a username without a password uses PULSE_MQTT_INGEST_PASSWORD."""
    parts = urlsplit(mqtt_url)
    protocol = parse_qs(parts.query).get("protocol", ["auto"])[-1]
    if protocol not in PROTOCOLS:
        raise SettingsError(f"PULSE_MQTT_URL: protocol={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    username = unquote(parts.username) if parts.username else None
    if parts.password is not None:
        password: str | None = unquote(parts.password)
    else:
        password = ingest_password if username else None
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls, username,
                         password, protocol)


def _protocol_of(client: gmqtt.Client) -> int:
    # gmqtt keeps the negotiated version (after its own MQTT 5 -> 3.1.1 downgrade) only in this private field.
    state = getattr(client, "_connection_state", None)
    return int(getattr(state, "protocol_version", MQTTv50))


class MqttConsumer:
    """Consumes `tenant/+/device/+/+` for one ingest worker.

    MQTT 5 brokers: shared subscription `$share/{group}/tenant/+/device/+/+`, so N workers split the stream.
    MQTT 3.1.1 brokers (the embedded dev broker): the plain filter, so run one worker. The session is
    persistent (clean start off, a stable client id, `session_expiry_s`), so messages that arrive while the
    worker is away wait in the broker. PUBACK goes out when the message's batch committed (or its quarantine
    event did); the Receive Maximum we announce equals the writer's pending cap, so the broker stops sending
    when that many messages are unacknowledged.

    Hot path: QoS 1 PUBLISH packets without properties are taken straight from gmqtt's packet handler
    (`_fast_publish`), checked without waiting when the device's registry record is cached, and acknowledged
    together when their batch commits — one socket write for all the PUBACKs of a batch, and only on the
    connection that delivered them (after a reconnect the broker sends them again and those copies are
    acknowledged instead). Everything else (QoS 0 and 2, properties, cache misses, a full writer) takes gmqtt's
    general path or a task of its own and is acknowledged the same way.
    """

    def __init__(self, pipeline: IngestPipeline, address: BrokerAddress, *, client_id: str, shared_group: str,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S, connect_timeout_s: float = 5.0,
                 retry_max_s: float = 30.0) -> None:
        self._pipeline = pipeline
        self._address = address
        self.client_id = client_id
        self.shared_group = shared_group
        self._session_expiry_s = session_expiry_s
        self._connect_timeout_s = connect_timeout_s
        self._retry_max_s = retry_max_s
        # The broker keeps at most this many messages unacknowledged with us: half the writer's room, so the
        # writer is never the limit and messages take the hot path.
        self._receive_maximum = max(1, min(65535, pipeline.writer.max_pending // 2))
        self._client: gmqtt.Client | None = None
        self._subscribed = False
        self._disconnected = False
        self._handlers: set[asyncio.Task[Any]] = set()
        self._acks: dict[asyncio.Future[None], list[tuple[Any, int]]] = {}
        self._mqtt5 = True
        # Messages that found the writer full wait here, in order, without a task each; they are queued as soon as
        # a batch commits. The broker's Receive Maximum bounds how many there can be.
        self._parked: deque[tuple[Any, int, InboundMessage]] = deque()
        self._waited = 0
        self.topic_filter = ""

    async def ready_check(self) -> tuple[bool, str]:
        client = self._client
        if client is None or not client.is_connected:
            return False, "not connected to the broker"
        if not self._subscribed:
            return False, f"not subscribed to {self.topic_filter or TOPIC_FILTER}"
        return True, self.topic_filter

    async def run(self, stop: asyncio.Event, *, grace_s: float = 10.0) -> bool:
        """Consume until `stop`; then commit what is queued (within `grace_s`) and disconnect.

        Returns True when every received message was committed and acknowledged; otherwise the rest stays
        unacknowledged and the broker delivers it again.
        """
        client = await self._connect(stop)
        if client is None:
            return True
        self._client = client
        await stop.wait()
        log.info("stopping: committing queued messages", extra={"pending": self._pipeline.writer.pending})
        clean = True
        try:
            await asyncio.wait_for(self._pipeline.flush(), timeout=grace_s)
        except (TimeoutError, IngestUnavailable):
            clean = False
        settled = [t for t in self._handlers if not t.done()]
        if settled:  # let handlers whose batch committed return, so their PUBACK precedes DISCONNECT
            await asyncio.wait(settled, timeout=1.0 if clean else 0.1)
        for _ in range(3):  # batch callbacks write their PUBACKs on the next turns of the loop
            await asyncio.sleep(0)
        clean = clean and not any(not t.done() for t in self._handlers)
        self._disconnected = True
        with contextlib.suppress(Exception):
            await client.disconnect()
        return clean

    async def wait_handlers(self, timeout: float = 5.0) -> None:
        """After the pipeline closed: let every message handler finish, so none outlives the worker."""
        pending = [t for t in self._handlers if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def _new_client(self) -> gmqtt.Client:
        client = gmqtt.Client(self.client_id, clean_session=False, optimistic_acknowledgement=False,
                              session_expiry_interval=self._session_expiry_s, receive_maximum=self._receive_maximum,
                              logger=logging.getLogger("gmqtt"))
        client.set_config({"reconnect_delay": RECONNECT_DELAY_S})
        if self._address.username:
            client.set_auth_credentials(self._address.username, self._address.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        handler = client._package_handler
        general = handler._handle_publish_packet
        handler._handle_publish_packet = lambda cmd, raw: self._fast_publish(client, general, cmd, raw)
        handler._handler_cache.clear()
        return client

    async def _connect(self, stop: asyncio.Event) -> gmqtt.Client | None:
        """Connect, retrying with backoff until `stop`; `auto` tries MQTT 5 and falls back to 3.1.1."""
        versions = {"auto": [MQTTv50, MQTTv311], "5": [MQTTv50], "3.1.1": [MQTTv311]}[self._address.protocol]
        address = self._address
        delay = 0.5
        while not stop.is_set():
            for version in versions:
                client = self._new_client()
                try:
                    await asyncio.wait_for(client.connect(address.host, address.port, ssl=address.ssl,
                                                          keepalive=30, version=version),
                                           timeout=self._connect_timeout_s)
                except TimeoutError:
                    # amqtt never answers an MQTT 5 CONNECT that carries properties; try the next version.
                    log.info("no CONNACK within %.0fs for MQTT %s", self._connect_timeout_s,
                             "5" if version == MQTTv50 else "3.1.1")
                    await _discard(client)
                    continue
                except (OSError, gmqtt.MQTTConnectError) as exc:
                    log.warning("cannot connect to the MQTT broker %s:%s: %s", address.host, address.port, exc)
                    await _discard(client)
                    break
                log.info("connected to the MQTT broker", extra={
                    "broker": f"{address.host}:{address.port}", "client_id": self.client_id,
                    "mqtt": "5" if _protocol_of(client) == MQTTv50 else "3.1.1"})
                return client
            await wait_or_stop(stop, None, delay)
            delay = min(delay * 2, self._retry_max_s)
        return None

    def _on_connect(self, client: gmqtt.Client, _flags: int, _rc: int, _properties: dict[str, Any]) -> None:
        self._mqtt5 = _protocol_of(client) == MQTTv50
        if self._mqtt5:
            self.topic_filter = f"$share/{self.shared_group}/{TOPIC_FILTER}"
        else:
            self.topic_filter = TOPIC_FILTER
        # Subscribe on every connect: the broker may have lost the session (restart without persistence).
        client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(self, _client: gmqtt.Client, _mid: int, granted: tuple[int, ...], _props: Any) -> None:
        if granted and all(code < 0x80 for code in granted):
            self._subscribed = True
            log.info("subscribed", extra={"filter": self.topic_filter})
        else:
            self._subscribed = False
            log.error("the broker refused the subscription", extra={"filter": self.topic_filter,
                                                                    "codes": str(granted)})

    def _on_disconnect(self, _client: gmqtt.Client, _packet: Any, _exc: Any = None) -> None:
        self._subscribed = False
        if not self._disconnected:
            log.warning("disconnected from the MQTT broker; gmqtt reconnects")

    def _fast_publish(self, client: gmqtt.Client, general: Any, cmd: int, raw: bytes) -> None:
        """A PUBLISH from the broker: QoS 1 without properties here, anything else through gmqtt's handler."""
        if (cmd & 0x06) != 0x02:
            return general(cmd, raw)  # type: ignore[no-any-return]
        try:
            (length,) = _U16.unpack_from(raw, 0)
            at = 2 + length
            (mid,) = _U16.unpack_from(raw, at)
            at += 2
            if self._mqtt5:
                if raw[at] != 0:  # properties (a topic alias, user properties): the general path handles them
                    return general(cmd, raw)  # type: ignore[no-any-return]
                at += 1
        except (struct.error, IndexError):
            return general(cmd, raw)  # type: ignore[no-any-return]
        name = raw[2:2 + length]
        if not name:
            return general(cmd, raw)  # type: ignore[no-any-return]
        topic: str | bytes
        try:
            topic = name.decode()
        except UnicodeDecodeError:
            topic = name  # quarantined as BAD_TOPIC
        self._receive(client, mid, topic, raw[at:])
        return None

    def _receive(self, client: gmqtt.Client, mid: int, topic: str | bytes, payload: bytes) -> None:
        message = InboundMessage("MQTT", topic, payload, self._pipeline.clock.now())
        connection = client._connection
        # Behind messages already waiting, to keep arrival order.
        if self._parked or not self._try_queue(connection, mid, message):
            self._waited += 1
            self._parked.append((connection, mid, message))

    def _try_queue(self, connection: Any, mid: int, message: InboundMessage) -> bool:
        """Queue on the hot path; False (nothing done) when the writer is full."""
        writer = self._pipeline.writer
        if not writer.has_room and not writer.closing:
            return False
        try:
            committed = self._pipeline.try_process(message)
        except IngestUnavailable:
            return True  # shutting down: unacknowledged, the broker delivers it again
        if committed is None:  # the device's registry record is not cached: a task waits for the read
            self._waited += 1
            task = asyncio.create_task(self._slow(connection, mid, message))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        else:
            self._ack_after(committed, connection, mid)
        return True

    def _unpark(self) -> None:
        parked = self._parked
        while parked and self._try_queue(*parked[0]):
            parked.popleft()

    async def _slow(self, connection: Any, mid: int, message: InboundMessage) -> None:
        """A message that has to wait (registry lookup, a full writer, the registry unreachable)."""
        committed = await self._queue_waiting(message)
        if committed is not None:
            self._ack_after(committed, connection, mid)

    async def _queue_waiting(self, message: InboundMessage) -> asyncio.Future[None] | None:
        """Queue the message, holding it (no PUBACK) while the registry is unreachable; None at shutdown."""
        delay = 0.1
        while True:
            try:
                return (await self._pipeline.process(message))[1]
            except IngestUnavailable:
                if not self._pipeline.closing:
                    await self._pipeline.pause(delay)
                if self._pipeline.closing:
                    return None
                delay = min(delay * 2, 5.0)

    def _ack_after(self, committed: asyncio.Future[None], connection: Any, mid: int) -> None:
        acks = self._acks.get(committed)
        if acks is None:
            acks = self._acks[committed] = []
            committed.add_done_callback(self._batch_done)
        acks.append((connection, mid))

    def _batch_done(self, committed: asyncio.Future[None]) -> None:
        """The batch committed: one write with the PUBACKs of its messages that came on the current connection."""
        acks = self._acks.pop(committed, [])
        if self._waited:
            WAITED.inc(self._waited)
            self._waited = 0
        if self._parked:
            self._unpark()
        if committed.cancelled() or committed.exception() is not None:
            return  # not durable: unacknowledged, so the broker delivers them again after a reconnect
        client = self._client
        connection = client._connection if client is not None else None
        if connection is None or connection.is_closing():
            return
        data = b"".join([_PUBACK.pack(0x40, 2, mid) for conn, mid in acks if conn is connection])
        if data:
            connection.send_package(data)

    async def _on_message(self, _client: gmqtt.Client, topic: str | bytes, payload: bytes, _qos: int,
                          _properties: dict[str, Any]) -> int:
        """gmqtt's general path (QoS 0 and 2, packets with properties): gmqtt sends the PUBACK/PUBREC with the
        code this returns, once the message is durable."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            return await self._handle(InboundMessage("MQTT", topic, payload or b"", self._pipeline.clock.now()))
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _handle(self, message: InboundMessage) -> int:
        committed = await self._queue_waiting(message)
        if committed is None:
            return self._unacknowledged()
        try:
            await committed
        except IngestUnavailable:
            return self._unacknowledged()
        return PUBACK_SUCCESS

    def _unacknowledged(self) -> int:
        """The writer gave up at shutdown. By then we have disconnected, so the code we return goes nowhere and
        the broker redelivers the message; while still connected, refusing to return is the only safe answer."""
        if not self._disconnected:
            raise IngestUnavailable("message not committed while still connected; not acknowledging it")
        return PUBACK_SUCCESS


async def _discard(client: gmqtt.Client) -> None:
    with contextlib.suppress(Exception):
        await client.disconnect()
