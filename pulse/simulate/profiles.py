"""Simulated device values: seeded profiles (temperature, humidity, power, vibration, door, GPS, air quality)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

PROFILES = ("temperature", "humidity", "power_meter", "vibration", "door", "gps_tracker", "air_quality")
DEFAULT_OUTAGE_PER_MINUTE = 0.002  # chance per device per minute of going silent for 1-5 minutes
DEFAULT_BREACH_PER_MINUTE = 0.002  # chance per device per minute of an excursion lasting 3-10 minutes
HEARTBEAT_INTERVAL_S = 30.0
OUTAGE_S = (60.0, 300.0)
BREACH_S = (180.0, 600.0)


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
