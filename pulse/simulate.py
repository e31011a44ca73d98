"""`pulse simulate`: simulated devices — seeded value profiles (pure) and the MQTT loop that publishes them.

Each simulated device holds its own MQTT connection (client id `pulse-sim-<tenant>-<device>`) and
speaks MQTT 3.1.1: it is a device, and 3.1.1 is what most device firmware speaks. It also keeps the
simulator working against the embedded dev broker (amqtt refuses MQTT 5 CONNECTs) without gmqtt's
6-second downgrade-and-retry. Credentials, if any, come from PULSE_MQTT_URL's user info; against a
broker with per-device accounts, give the simulator an account allowed to publish under
`tenant/<tenant>/device/+/…`. After the first connection gmqtt reconnects by itself (no retry limit)
when the broker restarts; messages due while a device is disconnected are dropped, not queued.

Messages (QoS 1) on `tenant/{tenant_id}/device/{device_id}/telemetry`:
    {"version": "1", "ts": "2026-11-23T09:00:00.000Z", "seq": 17, "metrics": {...}}
(GPS trackers add "lat"/"lng" to the envelope) and every 30 s on `.../heartbeat`:
    {"version": "1", "ts": "...", "seq": 18}
`seq` counts per device across both kinds and continues from device_state.last_seq on restart.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.clock import Clock, SystemClock
from pulse.db import create_engine, system_tx
from pulse.errors import NotFound
from pulse.runtime import wait_or_stop
from pulse.settings import Settings

log = logging.getLogger("pulse.simulate")
_mqtt_log = logging.getLogger("pulse.simulate.gmqtt")

PROFILES = ("temperature", "humidity", "power_meter", "vibration", "door", "gps_tracker", "air_quality")
DEFAULT_OUTAGE_PER_MINUTE = 0.002  # chance per device per minute of going silent for 1-5 minutes
DEFAULT_BREACH_PER_MINUTE = 0.002  # chance per device per minute of an excursion lasting 3-10 minutes
HEARTBEAT_INTERVAL_S = 30.0
OUTAGE_S = (60.0, 300.0)
BREACH_S = (180.0, 600.0)
KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 10.0
STATUS_EVERY_S = 60.0


# --- value profiles -------------------------------------------------------------------------------

def _toward(value: float, target: float, dt: float, tau: float) -> float:
    """First-order approach of `value` to `target` with time constant `tau` seconds."""
    return value + (target - value) * (1.0 - math.exp(-dt / tau))


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class _Profile:
    """What one kind of device measures; keeps its own state between samples."""

    name: ClassVar[str]

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def sample(self, now: datetime, dt: float, breach: bool) -> dict[str, Any]:
        raise NotImplementedError

    def position(self) -> tuple[float, float] | None:
        return None

    def _walk(self, value: float, dt: float, sigma: float, limit: float) -> float:
        """Bounded random walk (drift): `sigma` per sqrt(second)."""
        return _clamp(value + self.rng.gauss(0.0, sigma * math.sqrt(dt)), -limit, limit)


class Temperature(_Profile):
    """A fridge (about 4 °C) or a room (about 21 °C); an excursion heats it past 30 °C."""

    name = "temperature"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.setpoint = rng.choice((4.0, 21.0))
        self.drift = 0.0
        self.value = self.setpoint + rng.gauss(0.0, 0.3)
        self.hot: float | None = None

    def sample(self, now: datetime, dt: float, breach: bool) -> dict[str, Any]:
        self.drift = self._walk(self.drift, dt, 0.01, 1.5)
        if breach:
            self.hot = self.hot or self.rng.uniform(32.0, 38.0)
            self.value = _toward(self.value, self.hot, dt, 30.0)
        else:
            self.hot = None
            self.value = _toward(self.value, self.setpoint + self.drift, dt, 120.0)
        return {"temp_c": round(self.value + self.rng.gauss(0.0, 0.08), 2)}


class Humidity(_Profile):
    name = "humidity"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.setpoint = rng.uniform(35.0, 55.0)
        self.drift = 0.0
        self.value = self.setpoint
        self.wet: float | None = None

    def sample(self, now: datetime, dt: float, breach: bool) -> dict[str, Any]:
        self.drift = self._walk(self.drift, dt, 0.02, 5.0)
        self.wet = (self.wet or self.rng.uniform(88.0, 96.0)) if breach else None
        self.value = _toward(self.value, self.wet or self.setpoint + self.drift, dt, 60.0 if breach else 180.0)
        return {"humidity_pct": round(_clamp(self.value + self.rng.gauss(0.0, 0.3), 0.0, 100.0), 1)}


class PowerMeter(_Profile):
    """A load that follows a daily and a 15-minute cycle; an excursion is an overload with a voltage sag."""

    name = "power_meter"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.base_w = rng.uniform(300.0, 2500.0)
        self.energy_kwh = rng.uniform(100.0, 5000.0)
        self.phase = rng.uniform(0.0, 2 * math.pi)

    def sample(self, now: datetime, dt: float, breach: bool) -> dict[str, Any]:
        t = now.timestamp()
        load = self.base_w * (1 + 0.3 * math.sin(2 * math.pi * t / 86400 + self.phase)
                              + 0.1 * math.sin(2 * math.pi * t / 900 + self.phase))
        power = max(0.0, load * (2.5 if breach else 1.0) * (1 + self.rng.gauss(0.0, 0.03)))
        self.energy_kwh += power * dt / 3.6e6
        voltage = (205.0 if breach else 230.0) + self.rng.gauss(0.0, 1.2)
        return {"power_w": round(power, 1), "energy_kwh": round(self.energy_kwh, 4), "voltage_v": round(voltage, 1)}


class Vibration(_Profile):
    """A machine's RMS vibration velocity (ISO 10816 style), slowly rising with wear; an excursion is a fault."""

    name = "vibration"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.baseline = rng.uniform(0.8, 2.8)
        self.wear = 0.0
        self.value = self.baseline
        self.fault: float | None = None

    def sample(self, now: datetime, dt: float, breach: bool) -> dict[str, Any]:
        self.wear = min(3.0, self.wear + abs(self.rng.gauss(0.0, 0.0005 * math.sqrt(dt))))
        self.fault = (self.fault or self.rng.uniform(11.0, 18.0)) if breach else None
        self.value = _toward(self.value, self.fault or self.baseline + self.wear, dt, 20.0)
        rms = max(0.05, self.value + self.rng.gauss(0.0, 0.1))
        return {"vibration_mm_s": round(rms, 2), "peak_mm_s": round(rms * self.rng.uniform(1.35, 1.7), 2)}


class Door(_Profile):
    """Openings arrive at random (a few per hour) and last seconds; an excursion holds the door open."""

    name = "door"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.mean_gap_s = rng.uniform(240.0, 900.0)
        self.is_open = False
        self.open_count = rng.randint(0, 500)
        self.next_open_at: datetime | None = None
        self.close_at: datetime | None = None

    def sample(self, now: datetime, dt: float, breach: bool) -> dict[str, Any]:
        if self.next_open_at is None:
            self.next_open_at = now + timedelta(seconds=self.rng.expovariate(1 / self.mean_gap_s))
        if breach:
            if not self.is_open:
                self.is_open = True
                self.open_count += 1
            self.close_at = None
        else:
            if self.is_open and self.close_at is None:  # the held-open excursion is over
                self.close_at = now
            while True:
                if self.is_open and self.close_at is not None and self.close_at <= now:
                    self.is_open = False
                    self.next_open_at = self.close_at + timedelta(seconds=self.rng.expovariate(1 / self.mean_gap_s))
                elif not self.is_open and self.next_open_at <= now:
                    self.is_open = True
                    self.open_count += 1
                    self.close_at = self.next_open_at + timedelta(seconds=self.rng.uniform(5.0, 60.0))
                else:
                    break
        return {"door_open": self.is_open, "open_count": self.open_count}


class GpsTracker(_Profile):
    """A vehicle around a city: drives and stops, heading wanders; an excursion is speeding."""

    name = "gps_tracker"
    CITIES: ClassVar[tuple[tuple[float, float], ...]] = (
        (52.520, 13.405), (48.857, 2.352), (51.507, -0.128), (40.713, -74.006), (35.690, 139.692),
        (-33.869, 151.209))

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        lat, lng = rng.choice(self.CITIES)
        self.lat, self.lng = lat + rng.uniform(-0.05, 0.05), lng + rng.uniform(-0.05, 0.05)
        self.heading = rng.uniform(0.0, 360.0)
        self.speed = 0.0
        self.moving = True
        self.cruise = rng.uniform(25.0, 70.0)
        self.state_until: datetime | None = None
        self.speeding: float | None = None

    def sample(self, now: datetime, dt: float, breach: bool) -> dict[str, Any]:
        if self.state_until is None or now >= self.state_until:
            self.moving = self.state_until is None or not self.moving
            self.cruise = self.rng.uniform(20.0, 80.0)
            span = self.rng.uniform(120.0, 900.0) if self.moving else self.rng.uniform(30.0, 240.0)
            self.state_until = now + timedelta(seconds=span)
        self.speeding = (self.speeding or self.rng.uniform(125.0, 145.0)) if breach else None
        target = self.speeding or (self.cruise if self.moving else 0.0)
        self.speed = max(0.0, _toward(self.speed, target, dt, 15.0) + (self.rng.gauss(0.0, 1.0) if target else 0.0))
        if self.speed > 1.0:
            self.heading = (self.heading + self.rng.gauss(0.0, 3.0 * math.sqrt(dt))) % 360.0
        metres = self.speed / 3.6 * dt
        self.lat = _clamp(self.lat + metres * math.cos(math.radians(self.heading)) / 111_320.0, -85.0, 85.0)
        self.lng += metres * math.sin(math.radians(self.heading)) / (111_320.0 * math.cos(math.radians(self.lat)))
        self.lng = (self.lng + 180.0) % 360.0 - 180.0
        return {"lat": round(self.lat, 6), "lng": round(self.lng, 6), "speed_kmh": round(self.speed, 1),
                "heading_deg": round(self.heading, 1)}

    def position(self) -> tuple[float, float] | None:
        return round(self.lat, 6), round(self.lng, 6)


class AirQuality(_Profile):
    """Indoor air: CO2 follows occupancy, particles and VOC wander; an excursion is a stuffy, dirty room."""

    name = "air_quality"

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.co2_base = rng.uniform(450.0, 750.0)
        self.co2, self.pm, self.voc = self.co2_base, rng.uniform(4.0, 15.0), rng.uniform(80.0, 120.0)
        self.pm_base, self.voc_base = self.pm, self.voc
        self.bad: tuple[float, float, float] | None = None

    def sample(self, now: datetime, dt: float, breach: bool) -> dict[str, Any]:
        hour = (now.timestamp() % 86400) / 3600
        occupancy = max(0.0, math.sin(math.pi * (hour - 7) / 12)) if 7 <= hour <= 19 else 0.0
        self.bad = (self.bad or (self.rng.uniform(1800, 2600), self.rng.uniform(80, 150),
                                 self.rng.uniform(300, 420))) if breach else None
        co2_t, pm_t, voc_t = self.bad or (self.co2_base + 400 * occupancy, self.pm_base, self.voc_base)
        self.co2 = _toward(self.co2, co2_t, dt, 90.0)
        self.pm = _toward(self.pm, pm_t, dt, 60.0)
        self.voc = _toward(self.voc, voc_t, dt, 60.0)
        return {"co2_ppm": round(max(380.0, self.co2 + self.rng.gauss(0.0, 8.0))),
                "pm2_5": round(max(0.0, self.pm + self.rng.gauss(0.0, 0.8)), 1),
                "voc_index": round(_clamp(self.voc + self.rng.gauss(0.0, 3.0), 1.0, 500.0))}


_PROFILE_CLASSES: dict[str, type[_Profile]] = {
    cls.name: cls for cls in (Temperature, Humidity, PowerMeter, Vibration, Door, GpsTracker, AirQuality)}


def profile_for(index: int, device_type: str | None) -> str:
    """The profile a device simulates: its device_type when that names one, else round-robin by position."""
    if device_type is not None and device_type in _PROFILE_CLASSES:
        return device_type
    return PROFILES[index % len(PROFILES)]


def iso_utc(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SimDevice:
    """One simulated device: its profile's values plus battery and radio, outages and excursions.

    Deterministic for a given `seed`, device id and sequence of `now` values. Two random streams keep
    values independent of the event probabilities (changing `outage_probability` does not change values).
    """

    def __init__(self, device_id: str, profile: str, *, seed: int | str | None = None, first_seq: int = 1,
                 outage_probability: float = DEFAULT_OUTAGE_PER_MINUTE,
                 breach_probability: float = DEFAULT_BREACH_PER_MINUTE) -> None:
        if profile not in _PROFILE_CLASSES:
            raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")
        base = None if seed is None else f"{seed}:{device_id}"
        self._values = random.Random(base)
        self._events = random.Random(None if base is None else base + ":events")
        self.device_id = device_id
        self.profile = _PROFILE_CLASSES[profile](self._values)
        self.outage_probability = _clamp(outage_probability, 0.0, 1.0)
        self.breach_probability = _clamp(breach_probability, 0.0, 1.0)
        self.battery_pct = self._values.uniform(55.0, 100.0)
        self.drain_pct_per_h = self._values.uniform(0.2, 1.0)
        self.rssi_mean = self._values.uniform(-95.0, -55.0)
        self.seq = first_seq - 1
        self.outage_until: datetime | None = None
        self.breach_until: datetime | None = None
        self._last_sample: datetime | None = None
        self._outage_checked: datetime | None = None
        self._breach_checked: datetime | None = None

    @property
    def breaching(self) -> bool:
        return self.breach_until is not None

    def is_silent(self, now: datetime) -> bool:
        """Whether the device is in an outage at `now` (and maybe start one): it sends nothing then."""
        if self.outage_until is not None:
            self._outage_checked = now  # no chance of a new outage accrues during this one
            if now < self.outage_until:
                return True
            self.outage_until = None  # back: it speaks at least once before another outage can start
            return False
        if self._roll(self.outage_probability, self._outage_checked, now):
            self.outage_until = now + timedelta(seconds=self._events.uniform(*OUTAGE_S))
        self._outage_checked = now
        return self.outage_until is not None

    def next_telemetry(self, now: datetime) -> dict[str, Any]:
        """The next telemetry envelope, sampled at `now`."""
        dt = max(0.0, (now - self._last_sample).total_seconds()) if self._last_sample else 0.0
        self._last_sample = now
        if self.breach_until is not None and now >= self.breach_until:
            self.breach_until = None
        if self.breach_until is None and self._roll(self.breach_probability, self._breach_checked, now):
            self.breach_until = now + timedelta(seconds=self._events.uniform(*BREACH_S))
        self._breach_checked = now
        metrics = self.profile.sample(now, dt, self.breaching)
        self.battery_pct -= self.drain_pct_per_h * dt / 3600
        if self.battery_pct <= 5.0:  # someone replaced the battery
            self.battery_pct = 100.0
        metrics["battery_pct"] = round(self.battery_pct, 2)
        metrics["rssi_dbm"] = round(_clamp(self.rssi_mean + self._values.gauss(0.0, 2.5), -120.0, -30.0))
        envelope = self._envelope(now)
        position = self.profile.position()
        if position is not None:
            envelope["lat"], envelope["lng"] = position
        envelope["metrics"] = metrics
        return envelope

    def next_heartbeat(self, now: datetime) -> dict[str, Any]:
        return self._envelope(now)

    def _envelope(self, now: datetime) -> dict[str, Any]:
        self.seq += 1
        return {"version": "1", "ts": iso_utc(now), "seq": self.seq}

    def _roll(self, per_minute: float, since: datetime | None, now: datetime) -> bool:
        if since is None or per_minute <= 0.0:
            return False
        dt = (now - since).total_seconds()
        if dt <= 0:
            return False
        return self._events.random() < 1.0 - (1.0 - per_minute) ** (dt / 60.0)


# --- the fleet in the database --------------------------------------------------------------------

@dataclass(frozen=True)
class SimDeviceSpec:
    device_id: str
    profile: str
    last_seq: int


async def prepare_devices(conn: AsyncConnection, tenant_id: str, count: int, *, now: datetime) -> list[SimDeviceSpec]:
    """The tenant's ACTIVE `sim-*` devices, registering sim-0001… until there are `count` (or the plan is full).

    Raises NotFound when the tenant does not exist.
    """
    from pulse.errors import Conflict, LimitExceeded
    from pulse.fleet.service import register_device

    if (await conn.execute(text("SELECT 1 FROM tenants WHERE tenant_id = :t"), {"t": tenant_id})).first() is None:
        raise NotFound(f"tenant {tenant_id!r} does not exist")
    rows = (await conn.execute(text(
        "SELECT d.device_id, d.device_type, d.status, s.last_seq FROM devices d "
        "LEFT JOIN device_state s ON s.tenant_id = d.tenant_id AND s.device_id = d.device_id "
        "WHERE d.tenant_id = :t AND d.device_id LIKE 'sim-%' ORDER BY d.device_id"), {"t": tenant_id})).all()
    taken = {r.device_id for r in rows}
    chosen: list[tuple[str, str | None, int]] = [(r.device_id, r.device_type, r.last_seq or 0)
                                                 for r in rows if r.status == "ACTIVE"][:count]
    number = 0
    while len(chosen) < count:
        number += 1
        device_id = f"sim-{number:04d}"
        if device_id in taken:
            continue
        profile = PROFILES[(number - 1) % len(PROFILES)]
        name = f"Simulated {profile.replace('_', ' ')} {number:04d}"
        try:
            await register_device(conn, tenant_id, device_id, name=name, device_type=profile, tags=("simulated",),
                                  now=now)
        except LimitExceeded as exc:
            log.warning("simulating %d of %d devices: %s", len(chosen), count, exc.message)
            break
        except Conflict:  # registered by someone else meanwhile
            continue
        chosen.append((device_id, profile, 0))
    return [SimDeviceSpec(device_id, profile_for(i, device_type), last_seq)
            for i, (device_id, device_type, last_seq) in enumerate(chosen)]


# --- MQTT -----------------------------------------------------------------------------------------

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
