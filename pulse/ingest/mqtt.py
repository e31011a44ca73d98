"""MQTT adapter: a persistent-session gmqtt consumer that acknowledges each message only after its batch committed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import gmqtt
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
        self._receive_maximum = max(1, min(65535, pipeline.writer.max_pending))
        self._client: gmqtt.Client | None = None
        self._subscribed = False
        self._disconnected = False
        self._handlers: set[asyncio.Task[Any]] = set()
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
        client.set_config({"reconnect_delay": 2})
        if self._address.username:
            client.set_auth_credentials(self._address.username, self._address.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
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
        if _protocol_of(client) == MQTTv50:
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

    async def _on_message(self, _client: gmqtt.Client, topic: str | bytes, payload: bytes, _qos: int,
                          _properties: dict[str, Any]) -> int:
        """Return the PUBACK code once the message is durable; gmqtt sends the PUBACK when this returns."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            return await self._handle(InboundMessage("MQTT", topic, payload or b"", self._pipeline.clock.now()))
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _handle(self, message: InboundMessage) -> int:
        delay = 0.1
        while True:
            try:
                _verdict, committed = await self._pipeline.process(message)
                break
            except IngestUnavailable:
                # The registry is unreachable: hold the message (no PUBACK) and try again.
                if not self._pipeline.closing:
                    await self._pipeline.pause(delay)
                if self._pipeline.closing:
                    return self._unacknowledged()
                delay = min(delay * 2, 5.0)
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
