"""`pulse simulate`: plausible, seeded device values, and devices publishing over a real broker."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse import simulate
from pulse.db import system_tx
from pulse.settings import Settings
from pulse.simulate import PROFILES, SimDevice
from tests.conftest import free_port, make_device, make_tenant

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _series(sim: SimDevice, *, seconds: int, step: int = 5, start: datetime = T0) -> list[dict[str, Any]]:
    return [sim.next_telemetry(start + timedelta(seconds=s)) for s in range(0, seconds, step)]


def _values(envelopes: list[dict[str, Any]], metric: str) -> list[Any]:
    return [e["metrics"][metric] for e in envelopes]


RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "temperature": {"temp_c": (0.0, 27.0)},
    "humidity": {"humidity_pct": (25.0, 65.0)},
    "power_meter": {"power_w": (0.0, 4000.0), "voltage_v": (220.0, 240.0), "energy_kwh": (100.0, 5001.0)},
    "vibration": {"vibration_mm_s": (0.05, 7.0), "peak_mm_s": (0.05, 12.0)},
    "door": {"open_count": (0, 10_000)},
    "gps_tracker": {"lat": (-90.0, 90.0), "lng": (-180.0, 180.0), "speed_kmh": (0.0, 100.0)},
    "air_quality": {"co2_ppm": (380.0, 1500.0), "pm2_5": (0.0, 40.0), "voc_index": (1.0, 500.0)},
}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("seed", [1, 7, 42])
def test_every_profile_reports_plausible_values_without_excursions(profile: str, seed: int) -> None:
    sim = SimDevice(f"sim-{profile}", profile, seed=seed, breach_probability=0.0)
    series = _series(sim, seconds=4 * 3600)
    for metric, (low, high) in RANGES[profile].items():
        values = _values(series, metric)
        assert all(low <= v <= high for v in values), (metric, min(values), max(values))
    assert all(0.0 <= v <= 100.0 for v in _values(series, "battery_pct"))
    assert all(isinstance(v, int) and -120 <= v <= -30 for v in _values(series, "rssi_dbm"))


def test_a_temperature_sensor_sits_near_a_fridge_or_room_setpoint() -> None:
    setpoints = set()
    for n in range(20):
        series = _values(_series(SimDevice(f"sim-{n}", "temperature", seed=3, breach_probability=0.0),
                                 seconds=3600), "temp_c")
        mean = sum(series) / len(series)
        assert abs(mean - 4.0) < 2.0 or abs(mean - 21.0) < 2.0, mean
        setpoints.add(round(mean / 10))
    assert setpoints == {0, 2}, "both fridges and rooms occur"


def test_energy_only_ever_increases_and_the_door_counter_never_goes_back() -> None:
    meter = _series(SimDevice("sim-meter", "power_meter", seed=5), seconds=6 * 3600, step=7)
    energy = _values(meter, "energy_kwh")
    assert all(b >= a for a, b in pairwise(energy)) and energy[-1] > energy[0]

    door = _series(SimDevice("sim-door", "door", seed=5, breach_probability=0.0), seconds=6 * 3600, step=3)
    counts, states = _values(door, "open_count"), _values(door, "door_open")
    assert all(b >= a for a, b in pairwise(counts)) and counts[-1] > counts[0]
    assert True in states and False in states and all(isinstance(s, bool) for s in states)


def test_gps_tracker_moves_and_puts_its_position_on_the_envelope() -> None:
    series = _series(SimDevice("sim-gps", "gps_tracker", seed=9, breach_probability=0.0), seconds=3600)
    assert all(e["lat"] == e["metrics"]["lat"] and e["lng"] == e["metrics"]["lng"] for e in series)
    positions = {(e["lat"], e["lng"]) for e in series}
    assert len(positions) > 10
    assert max(_values(series, "speed_kmh")) > 10
    assert all("lat" not in e for e in _series(SimDevice("sim-t", "temperature", seed=9), seconds=60))


def test_battery_drains_slowly() -> None:
    sim = SimDevice("sim-battery", "humidity", seed=11)
    levels = _values(_series(sim, seconds=10 * 3600, step=60), "battery_pct")
    assert all(b <= a for a, b in pairwise(levels))
    assert 1.5 <= levels[0] - levels[-1] <= 10.5, "0.2-1 % per hour"


def test_same_seed_same_fleet_other_seed_other_values() -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        out = []
        for profile in PROFILES:
            sim = SimDevice(f"sim-{profile}", profile, seed=seed, outage_probability=0.3, breach_probability=0.3)
            for s in range(0, 1800, 10):
                now = T0 + timedelta(seconds=s)
                if not sim.is_silent(now):
                    out.append(sim.next_telemetry(now) if s % 30 else sim.next_heartbeat(now))
        return out

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_a_temperature_excursion_goes_past_30_and_comes_back() -> None:
    sim = SimDevice("sim-hot", "temperature", seed=2, breach_probability=1.0)
    during = _series(sim, seconds=240, step=2)
    assert sim.breaching and max(_values(during, "temp_c")) > 30.0
    sim.breach_probability = 0.0
    assert sim.breach_until is not None
    after = _series(sim, seconds=1800, step=5, start=sim.breach_until + timedelta(seconds=1))
    assert not sim.breaching and _values(after, "temp_c")[-1] < 28.0


def test_outages_silence_a_device_for_one_to_five_minutes() -> None:
    sim = SimDevice("sim-flaky", "door", seed=4, outage_probability=0.2)
    silent = [sim.is_silent(T0 + timedelta(seconds=s)) for s in range(4 * 3600)]
    spans, run = [], 0
    for s in silent:
        if s:
            run += 1
        elif run:
            spans.append(run)
            run = 0
    assert spans, "some outage happened"
    assert all(60 <= span <= 301 for span in spans), spans
    assert silent.count(False) > silent.count(True)

    steady = SimDevice("sim-steady", "door", seed=4, outage_probability=0.0)
    assert not any(steady.is_silent(T0 + timedelta(seconds=s)) for s in range(3600))


def test_envelopes_count_seq_across_kinds_and_carry_utc_timestamps() -> None:
    sim = SimDevice("sim-seq", "air_quality", seed=1, first_seq=41)
    first = sim.next_telemetry(T0)
    beat = sim.next_heartbeat(T0 + timedelta(seconds=1))
    second = sim.next_telemetry(T0 + timedelta(seconds=2))
    assert [first["seq"], beat["seq"], second["seq"]] == [41, 42, 43]
    assert set(beat) == {"version", "ts", "seq"} and beat["version"] == "1"
    assert first["ts"] == "2026-11-23T09:00:00.000Z"
    assert datetime.fromisoformat(second["ts"]) == T0 + timedelta(seconds=2)
    assert set(first["metrics"]) == {"co2_ppm", "pm2_5", "voc_index", "battery_pct", "rssi_dbm"}


# --- against a real broker --------------------------------------------------------------------------

class Collector:
    """A plain MQTT subscriber recording every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.client = gmqtt.Client(f"test-collector-{secrets.token_hex(4)}")
        self.client.on_message = self._on_message
        self._subscribed = asyncio.Event()
        self.client.on_subscribe = lambda *_: self._subscribed.set()

    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        self.messages.append((topic, json.loads(payload)))
        return 0

    async def start(self, host: str, port: int, topic: str) -> Collector:
        await self.client.connect(host, port, version=MQTTv311)
        self.client.subscribe(topic, qos=1)
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def stop(self) -> None:
        await self.client.disconnect()

    def by_device(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        out: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for topic, message in self.messages:
            _, _, _, device_id, kind = topic.split("/")
            out[device_id].append((kind, message))
        return out

    async def wait_for(self, devices: list[str], *, telemetry: int, heartbeats: int = 0,
                       after_seq: dict[str, int] | None = None, deadline_s: float = 30.0) -> None:
        def enough() -> bool:
            seen = self.by_device()
            for d in devices:
                mine = [(k, m) for k, m in seen.get(d, []) if m["seq"] > (after_seq or {}).get(d, 0)]
                if (sum(k == "telemetry" for k, _ in mine) < telemetry
                        or sum(k == "heartbeat" for k, _ in mine) < heartbeats):
                    return False
            return True

        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while not enough():
            assert loop.time() < end, f"not every device published: {dict(self.by_device())}"
            await asyncio.sleep(0.05)


async def test_simulated_devices_publish_valid_envelopes_over_mqtt(settings: Settings, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    for n in (1, 2, 3):
        await make_device(engine, tenant, f"sim-{n:04d}")
    collector = await Collector().start("127.0.0.1", 1883, f"tenant/{tenant.tenant_id}/device/+/+")
    stop = asyncio.Event()
    task = asyncio.create_task(simulate.run(settings, stop, devices=4, tenant_id=tenant.tenant_id, rate=2, seed=1))
    expected = ["sim-0001", "sim-0002", "sim-0003", "sim-0004"]
    try:
        await collector.wait_for(expected, telemetry=4, heartbeats=1)
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 30)
        await collector.stop()
    assert code == 0

    seen = collector.by_device()
    assert sorted(seen) == expected
    for device_id, messages in seen.items():
        for kind in ("telemetry", "heartbeat"):
            seqs = [m["seq"] for k, m in messages if k == kind]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (device_id, kind, seqs)
        for kind, m in messages:
            assert m["version"] == "1" and isinstance(m["seq"], int)
            assert datetime.fromisoformat(m["ts"]).utcoffset() == timedelta(0)
            if kind == "heartbeat":
                assert set(m) == {"version", "ts", "seq"}
            else:
                assert {"battery_pct", "rssi_dbm"} <= set(m["metrics"])
    telemetry = {d: [m for k, m in msgs if k == "telemetry"] for d, msgs in seen.items()}
    assert all("temp_c" in m["metrics"] for m in telemetry["sim-0001"])  # first in the round-robin
    assert all("vibration_mm_s" in m["metrics"] for m in telemetry["sim-0004"])  # registered as "vibration"
    async with system_tx(engine) as conn:
        created = (await conn.execute(text(
            "SELECT device_type, tags FROM devices WHERE tenant_id = :t AND device_id = 'sim-0004'"),
            {"t": tenant.tenant_id})).one()
    assert created.device_type == "vibration" and "simulated" in created.tags


async def test_an_unknown_tenant_exits_2_naming_it(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="pulse.simulate"):
        code = await simulate.run(settings, asyncio.Event(), devices=3, tenant_id="no-such-tenant", rate=1)
    assert code == 2
    assert "no-such-tenant" in caplog.text and "does not exist" in caplog.text


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Any]:
    """A Mosquitto of our own (loopback only) that a test may stop and start again."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        pytest.skip("mosquitto is not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")

    class Broker:
        proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)

        def stop(self) -> None:
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait(10)
                self.proc = None

    broker = Broker()
    broker.port = port  # type: ignore[attr-defined]
    broker.start()
    yield broker
    broker.stop()


async def _collector_when_up(port: int, topic: str) -> Collector:
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while True:
        try:
            return await Collector().start("127.0.0.1", port, topic)
        except OSError:
            assert loop.time() < end, "broker did not come up"
            await asyncio.sleep(0.1)


async def test_devices_reconnect_and_carry_on_after_the_broker_restarts(
        settings: Settings, engine: AsyncEngine, private_broker: Any) -> None:
    tenant = await make_tenant(engine)
    port = private_broker.port
    topic = f"tenant/{tenant.tenant_id}/device/+/+"
    collector = await _collector_when_up(port, topic)
    stop = asyncio.Event()
    task = asyncio.create_task(simulate.run(settings.replace(mqtt_url=f"mqtt://127.0.0.1:{port}"), stop, devices=2,
                                            tenant_id=tenant.tenant_id, rate=5, seed=3, reconnect_delay_s=0.3))
    devices = ["sim-0001", "sim-0002"]
    try:
        await collector.wait_for(devices, telemetry=2)
        last_seq = {d: max(m["seq"] for _, m in msgs) for d, msgs in collector.by_device().items()}
        await collector.stop()
        await asyncio.to_thread(private_broker.stop)
        await asyncio.sleep(0.5)  # devices notice and start retrying against a closed port
        private_broker.start()
        after = await _collector_when_up(port, topic)
        await after.wait_for(devices, telemetry=3, after_seq=last_seq)
        await after.stop()
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 30)
    assert code == 0

