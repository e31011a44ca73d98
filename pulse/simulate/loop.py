"""The simulator's MQTT side: one connection per device, telemetry and heartbeats on schedule, reconnects."""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from pulse.clock import Clock, SystemClock
from pulse.db import create_engine, system_tx
from pulse.errors import NotFound
from pulse.runtime import wait_or_stop
from pulse.settings import Settings
from pulse.simulate.devices import prepare_devices
from pulse.simulate.profiles import (
    DEFAULT_BREACH_PER_MINUTE,
    DEFAULT_OUTAGE_PER_MINUTE,
    HEARTBEAT_INTERVAL_S,
    SimDevice,
)

log = logging.getLogger("pulse.simulate")
_mqtt_log = logging.getLogger("pulse.simulate.gmqtt")

KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 10.0
STATUS_EVERY_S = 60.0



@dataclass(frozen=True)
class _Broker:
    host: str
    port: int
    ssl: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> _Broker:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(host=parts.hostname or "127.0.0.1", port=parts.port or (8883 if tls else 1883), ssl=tls,
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None)


class _Link:
    """One device's own MQTT connection."""

    def __init__(self, client_id: str, broker: _Broker, reconnect_delay_s: float) -> None:
        self.client_id = client_id
        self.broker = broker
        self.reconnect_delay_s = reconnect_delay_s
        self.client: Any = None
        self.connected = False
        self._was_connected = False
        self._closing = False

    async def keep_connected(self, stop: asyncio.Event) -> None:
        """Connect, retrying with backoff until the first success; gmqtt handles reconnects after that."""
        from gmqtt import Client
        from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv311

        delay, warned = self.reconnect_delay_s, False
        while not stop.is_set():
            client = Client(self.client_id, logger=_mqtt_log)
            client.set_config({"reconnect_delay": self.reconnect_delay_s, "reconnect_retries": UNLIMITED_RECONNECTS})
            if self.broker.username:
                client.set_auth_credentials(self.broker.username, self.broker.password)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            try:
                await asyncio.wait_for(client.connect(self.broker.host, self.broker.port, ssl=self.broker.ssl,
                                                      keepalive=KEEPALIVE_S, version=MQTTv311), CONNECT_TIMEOUT_S)
            except Exception as exc:  # OSError, TimeoutError, or gmqtt's MQTTConnectError (a refused CONNECT)
                if not warned:
                    log.warning("%s cannot connect to mqtt://%s:%s (%s); retrying", self.client_id,
                                self.broker.host, self.broker.port, exc or type(exc).__name__)
                    warned = True
                await self._discard(client)
                await wait_or_stop(stop, None, delay)
                delay = min(delay * 2, 30.0)
                continue
            self.client = client
            return

    def publish(self, topic: str, payload: bytes) -> bool:
        if not self.connected or self.client is None:
            return False
        try:
            self.client.publish(topic, payload, qos=1)
        except (OSError, RuntimeError):
            return False
        return True

    async def close(self) -> None:
        self._closing = True
        if self.client is not None:
            await self._discard(self.client)

    def _on_connect(self, _client: Any, *_args: Any) -> None:
        if self._was_connected:
            log.info("%s reconnected", self.client_id)
        self.connected = self._was_connected = True

    def _on_disconnect(self, _client: Any, *_args: Any) -> None:
        if self.connected and not self._closing:
            log.info("%s lost its broker connection; reconnecting every %g s", self.client_id,
                     self.reconnect_delay_s)
        self.connected = False

    @staticmethod
    async def _discard(client: Any) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), 5.0)
        except Exception:  # already gone; disconnect() also stops gmqtt's own reconnects
            log.debug("disconnect failed", exc_info=True)


async def run(settings: Settings, stop: asyncio.Event, *, devices: int, tenant_id: str, rate: float,
              seed: int | str | None = None, outage_probability: float = DEFAULT_OUTAGE_PER_MINUTE,
              breach_probability: float = DEFAULT_BREACH_PER_MINUTE,
              heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S, reconnect_delay_s: float = 2.0,
              clock: Clock | None = None) -> int:
    """Simulate `devices` devices of `tenant_id` until `stop`; 0 on a clean stop, 2 when there is nothing to run."""
    from pulse.fleet.service import topic_prefix

    if devices < 1 or rate <= 0 or heartbeat_interval_s <= 0:
        log.error("pulse simulate needs --devices >= 1 and --rate > 0 (got %s devices, rate %s)", devices, rate)
        return 2
    clock = clock or SystemClock()
    broker = _Broker.from_url(settings.require_mqtt_url())
    engine = create_engine(settings.require_database_url(), pool_size=1, application_name="pulse-simulate")
    try:
        async with system_tx(engine) as conn:
            specs = await prepare_devices(conn, tenant_id, devices, now=clock.now())
    except NotFound:
        log.error("tenant %r does not exist; create it first (`pulse migrate --seed-demo` creates 'demo')", tenant_id)
        return 2
    finally:
        await engine.dispose()
    if not specs:
        log.error("tenant %r has no room for simulated devices", tenant_id)
        return 2
    if _mqtt_log.level == logging.NOTSET:
        _mqtt_log.setLevel(logging.ERROR)  # gmqtt logs every failed reconnect attempt of every device

    sims = [SimDevice(s.device_id, s.profile, seed=seed, first_seq=s.last_seq + 1,
                      outage_probability=outage_probability, breach_probability=breach_probability) for s in specs]
    links = [_Link(f"pulse-sim-{tenant_id}-{s.device_id}", broker, reconnect_delay_s) for s in specs]
    prefixes = [topic_prefix(tenant_id, s.device_id) for s in specs]
    connecting = [asyncio.create_task(link.keep_connected(stop)) for link in links]
    log.info("simulating %d device(s) of tenant %s at %s msg/s each via mqtt://%s:%s", len(sims), tenant_id,
             rate, broker.host, broker.port)
    all_connected: asyncio.Future[Any] = asyncio.gather(*connecting)
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        # give every device a moment to connect so the first messages are not dropped; then go regardless
        await asyncio.wait([all_connected, stopped], timeout=CONNECT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        await _publish_loop(sims, links, prefixes, stop, rate=rate, heartbeat_interval_s=heartbeat_interval_s,
                            clock=clock, jitter=random.Random(None if seed is None else f"{seed}:schedule"))
    finally:
        stopped.cancel()
        all_connected.cancel()
        await asyncio.gather(all_connected, stopped, return_exceptions=True)
        await asyncio.gather(*(link.close() for link in links))
    log.info("simulator stopped")
    return 0


async def _publish_loop(sims: list[SimDevice], links: list[_Link], prefixes: list[str], stop: asyncio.Event, *,
                        rate: float, heartbeat_interval_s: float, clock: Clock, jitter: random.Random) -> None:
    """Publish each device's telemetry every ~1/rate s (jittered) and heartbeat every heartbeat_interval_s."""
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    start = loop.time()
    due: list[tuple[float, int, str, int]] = []
    order = 0

    def push(at: float, kind: str, i: int) -> None:
        nonlocal order
        order += 1
        heapq.heappush(due, (at, order, kind, i))

    for i in range(len(sims)):
        push(start + jitter.uniform(0.0, period), "telemetry", i)
        push(start + jitter.uniform(0.0, min(period, 1.0)), "heartbeat", i)
    published = dropped = 0
    status_at = start + STATUS_EVERY_S
    encode: Callable[[Any], bytes] = msgspec.json.encode
    while not stop.is_set():
        at, _, kind, i = due[0]
        wait = at - loop.time()
        if wait > 0:
            await wait_or_stop(stop, None, min(wait, STATUS_EVERY_S))
            continue
        heapq.heappop(due)
        now, sim = clock.now(), sims[i]
        if kind == "telemetry":
            following = at + period * jitter.uniform(0.8, 1.2)
        else:
            following = at + heartbeat_interval_s
        if not sim.is_silent(now):
            message = sim.next_telemetry(now) if kind == "telemetry" else sim.next_heartbeat(now)
            if links[i].publish(prefixes[i] + kind, encode(message)):
                published += 1
            else:
                dropped += 1
        push(max(following, loop.time() - period), kind, i)  # after a stall, resume without a burst
        if loop.time() >= status_at:
            status_at += STATUS_EVERY_S
            log.info("simulator: %d published, %d dropped while disconnected, %d/%d connected, %d silent, "
                     "%d in excursion", published, dropped, sum(link.connected for link in links), len(links),
                     sum(s.outage_until is not None for s in sims), sum(s.breaching for s in sims))
