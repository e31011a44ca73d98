"""Pulse's ingest gate (deploy/mosquitto/ingest_gate.c) on the deployed broker configuration: from the broker's start
until the ingest account subscribes to the device topics, the connections of device accounts and of the simulator's
account are closed before CONNACK (nothing they send can be acknowledged and dropped for want of a subscriber); other
accounts (Pulse's own, alert consumers) connect meanwhile."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pulse.fleet.broker_accounts import BrokerAdmin
from tests.broker.conftest import ADMIN, INGEST, Peer, admin_url, requires_mosquitto
from tests.conftest import free_port, run_mosquitto
from tests.deployed_broker import deployed_conf

pytestmark = requires_mosquitto

PASSWORD = "device-password-0123456789"
DEVICE = ("acme", "pump-1", "acme/pump-1")
SIMULATOR = ("pulse-simulator", "simulator-password-0123")  # named in plugin_opt_hold
CONSUMER = ("alerts-consumer", "consumer-password-0123")  # any other account


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def _connack(port: int, username: str, password: str, *, version: int) -> bytes:
    """Send a raw CONNECT (MQTT 3.1.1 or 5, clean session) and return the broker's first answer (b"" = closed)."""
    variable = _text("MQTT") + bytes([version, 0x80 | 0x40 | 0x02]) + struct.pack("!H", 30)
    if version == 5:
        variable += b"\x00"  # no properties
    body = variable + _text(username) + _text(username) + _text(password)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\x10" + _remaining_length(len(body)) + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4), 5)
    finally:
        writer.close()


def _accepted(answer: bytes) -> bool:
    assert answer == b"" or answer[0] == 0x20, answer  # closed, or a CONNACK
    return answer[:1] == b"\x20" and answer[3] == 0


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The deployed configuration, just started: the gate is closed."""
    port = free_port()
    conf = deployed_conf(tmp_path, port, ADMIN)
    for _ in run_mosquitto(conf, port, log=tmp_path / "mosquitto.log"):
        yield port, tmp_path / "mosquitto.log"


@pytest.fixture
async def accounts(fresh_broker: tuple[int, Path]) -> AsyncIterator[int]:
    """The admin account (not held while the gate is closed) creates the ingest account, a device and two others."""
    port, _ = fresh_broker
    async with BrokerAdmin(admin_url(port), client_id="gate-test-admin") as admin:
        await admin.ensure_ingest_account(*INGEST)
        await admin.ensure_device(*DEVICE, PASSWORD)
        for username, password in (SIMULATOR, CONSUMER):
            await admin.execute([{"command": "createClient", "username": username, "password": password}])
    yield port


async def test_devices_wait_until_ingest_subscribes_and_then_reach_it(accounts: int) -> None:
    port = accounts
    for version in (4, 5):  # MQTT 3.1.1 and 5: the connection is closed, not refused as "not authorised"
        assert await _connack(port, DEVICE[2], PASSWORD, version=version) == b""
        assert await _connack(port, *SIMULATOR, version=version) == b""
        assert _accepted(await _connack(port, *CONSUMER, version=version))

    ingest = await Peer("ingest").connect(port, *INGEST)
    try:
        assert await _connack(port, DEVICE[2], PASSWORD, version=5) == b""  # connected is not enough
        assert await ingest.subscribe("tenant/acme/device/+/+") == 1  # nor a narrower filter
        assert await _connack(port, DEVICE[2], PASSWORD, version=5) == b""

        assert await ingest.subscribe("$share/pulse-ingest/tenant/+/device/+/+") == 1
        for version in (4, 5):
            assert _accepted(await _connack(port, DEVICE[2], PASSWORD, version=version))
            assert _accepted(await _connack(port, *SIMULATOR, version=version))
        device = await Peer("device").connect(port, DEVICE[2], PASSWORD)
        try:
            assert await device.publish("tenant/acme/device/pump-1/telemetry", b'{"seq": 1}') == 0
            assert await ingest.next_message() == ("tenant/acme/device/pump-1/telemetry", b'{"seq": 1}')
        finally:
            await device.close()
    finally:
        await ingest.close()

    # Open for the rest of the broker's life, with the dynamic-security plugin still judging every account.
    assert _accepted(await _connack(port, DEVICE[2], PASSWORD, version=5))
    wrong = await _connack(port, DEVICE[2], "not-the-password", version=5)
    assert wrong[:1] == b"\x20" and wrong[3] == 0x87


async def test_the_broker_log_says_why_devices_are_held_and_when_the_gate_opens(
        accounts: int, fresh_broker: tuple[int, Path]) -> None:
    port, log = fresh_broker
    for _ in range(3):
        assert await _connack(port, DEVICE[2], PASSWORD, version=5) == b""
    ingest = await Peer("ingest").connect(port, *INGEST)
    try:
        assert await ingest.subscribe("tenant/+/device/+/+") == 1  # a plain subscription opens it too
    finally:
        await ingest.close()
    assert _accepted(await _connack(port, DEVICE[2], PASSWORD, version=5))
    lines = [line.split(": ", 1)[1] for line in log.read_text().splitlines() if "pulse ingest gate" in line]
    assert lines[0] == "pulse ingest gate: closed until ingest subscribes to tenant/+/device/+/+"
    assert lines[-2] == "pulse ingest gate: closed, 3 connection(s) of devices held off so far " \
                        "(waiting for ingest to subscribe to tenant/+/device/+/+)"
    assert lines[-1].startswith("pulse ingest gate: open after ")
    assert lines[-1].endswith(" (pulse-ingest, client " + ingest.client._client_id + ", subscribed to "
                              "tenant/+/device/+/+)")
