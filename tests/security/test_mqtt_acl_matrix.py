"""The MQTT ACL matrix on the production broker configuration (deploy/mosquitto, dynamic security): each device's
credentials against every other device's and every other tenant's topics, publish and subscribe, and what actually
arrives where. Four devices: acme/pump-1, acme/pump-2 (same tenant), acme/pump-10 (an id that starts with
pump-1's) and globex/pump-1 (the same device id in another tenant).

tests/broker/test_device_acl.py holds the single-device cases with the reason codes devices see, the ingest
account and the packet limit; this file is the full cross product, plus the client id binding: a device account
connects only with its username as client id, so it cannot resume or push off another client's persistent session.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50

from pulse.fleet.broker_accounts import BrokerAdmin
from tests.broker.conftest import NOT_AUTHORISED, Peer, connect_error, requires_mosquitto
from tests.fleet.conftest import INGEST, admin_url, broker

pytestmark = requires_mosquitto
__all__ = ["broker"]  # fixture

DEVICES = [("acme", "pump-1"), ("acme", "pump-2"), ("acme", "pump-10"), ("globex", "pump-1")]
SUFFIXES = ["telemetry", "heartbeat", "status", "command/reboot"]
GRANTED = 1  # SUBACK: QoS 1 granted
NO_SUBSCRIBERS = 0x10


def password(tenant_id: str, device_id: str) -> str:
    return f"pw-{tenant_id}-{device_id}-0123456789"


def prefix(tenant_id: str, device_id: str) -> str:
    return f"tenant/{tenant_id}/device/{device_id}"


@pytest.fixture(scope="module")
async def accounts(broker: int) -> AsyncIterator[None]:
    async with BrokerAdmin(admin_url(broker)) as admin:
        await admin.ensure_ingest_account(*INGEST)
        for t, d in DEVICES:
            await admin.ensure_device(t, d, f"{t}/{d}", password(t, d))
        await admin.execute([{"command": "createRole", "rolename": "operator-commands", "acls": [
            {"acltype": "publishClientSend", "topic": "tenant/+/device/+/command/#", "allow": True}]}],
            tolerate=("already exists",))
        await admin.execute([{"command": "createClient", "username": "operator-commands",
                              "password": "operator-commands-pw", "roles": [{"rolename": "operator-commands"}]}],
                            tolerate=("already exists",))
    yield


async def _device(port: int, t: str, d: str) -> Peer:
    return await Peer(f"{t}-{d}").connect(port, f"{t}/{d}", password(t, d))


async def test_each_device_password_opens_only_its_own_account(broker: int, accounts: None) -> None:
    for t, d in DEVICES:
        for other_t, other_d in DEVICES:
            code = await connect_error(broker, f"{other_t}/{other_d}", password(t, d))
            assert code == (None if (t, d) == (other_t, other_d) else NOT_AUTHORISED), (t, d, other_t, other_d)


async def test_each_device_publishes_only_under_its_own_prefix(broker: int, accounts: None) -> None:
    ingest = await Peer("ingest").connect(broker, *INGEST)
    assert await ingest.subscribe(f"$share/acl-{secrets.token_hex(3)}/tenant/+/device/+/+") == GRANTED
    listener = await Peer("listener").connect(broker, "operator-commands", "operator-commands-pw")
    try:
        outcomes: dict[tuple[str, str, str], int] = {}
        delivered_to_ingest: list[str] = []
        for t, d in DEVICES:
            device = await _device(broker, t, d)
            try:
                for ot, od in DEVICES:
                    for suffix in SUFFIXES:
                        topic = f"{prefix(ot, od)}/{suffix}"
                        outcomes[(f"{t}/{d}", topic, "publish")] = code = await device.publish(topic, b'{"seq": 1}')
                        expected_ok = (t, d) == (ot, od)
                        assert (code in (0, NO_SUBSCRIBERS)) == expected_ok, (t, d, topic, hex(code))
                        if expected_ok and suffix != "command/reboot":
                            delivered_to_ingest.append(topic)
                for topic in ("$CONTROL/dynamic-security/v1", "$SYS/broker/x", f"tenant/{t}", "tenant/x/device/y",
                              f"alerts/{t}/x", f"tenant/{t}/device", "command/reboot"):
                    assert await device.publish(topic, b"{}") == NOT_AUTHORISED, (t, d, topic)
            finally:
                await device.close()
        received: Counter[str] = Counter()
        with contextlib.suppress(TimeoutError):
            while sum(received.values()) < len(delivered_to_ingest):
                received[(await ingest.next_message(timeout=5))[0]] += 1
        await asyncio.sleep(0.5)
        while not ingest.received.empty():
            received[ingest.received.get_nowait()[0]] += 1
        assert received == Counter(delivered_to_ingest)  # exactly the allowed ones, each once
    finally:
        await ingest.close()
        await listener.close()
    # A device's publish to the broker's admin topic was refused, so this account was never created.
    assert await connect_error(broker, "made-by-a-device", "pw") == NOT_AUTHORISED


async def test_each_device_subscribes_and_receives_only_its_own_commands(broker: int,
                                                                         accounts: None) -> None:
    peers: dict[tuple[str, str], Peer] = {}
    try:
        for t, d in DEVICES:
            peer = peers[(t, d)] = await _device(broker, t, d)
            for ot, od in DEVICES:
                own = (t, d) == (ot, od)
                p = prefix(ot, od)
                for topic, allowed in ((f"{p}/command/#", own), (f"{p}/command/reboot", own),
                                       (f"{p}/command/+", own), (f"{p}/telemetry", False), (f"{p}/#", False),
                                       (f"{p}/+", False), (p, False)):
                    code = await peer.subscribe(topic)
                    assert (code == GRANTED) == allowed, (t, d, topic, hex(code))
            for topic in ("#", "+/+/+/+/+", "tenant/+/device/+/command/#", f"tenant/{t}/#", f"tenant/{t}/device/+/#",
                          f"$share/g/{prefix(t, d)}/command/#", "$SYS/#", "$CONTROL/#",
                          "$CONTROL/dynamic-security/v1/response", "alerts/#"):
                assert await peer.subscribe(topic) == NOT_AUTHORISED, (t, d, topic)
        operator = await Peer("operator").connect(broker, "operator-commands", "operator-commands-pw")
        try:
            for t, d in DEVICES:
                assert await operator.publish(f"{prefix(t, d)}/command/reboot", f"{t}/{d}".encode()) == 0
        finally:
            await operator.close()
        for (t, d), peer in peers.items():
            got = [await peer.next_message()]
            await asyncio.sleep(0.3)
            while not peer.received.empty():
                got.append(peer.received.get_nowait())
            # one copy per granted subscription that matches (#, reboot, +): its own command, nobody else's
            assert {payload for _topic, payload in got} == {f"{t}/{d}".encode()}, (t, d, got)
            assert {topic for topic, _payload in got} == {f"{prefix(t, d)}/command/reboot"}
    finally:
        for peer in peers.values():
            await peer.close()


async def test_a_device_cannot_take_over_the_ingest_session_by_its_client_id(broker: int,
                                                                            accounts: None) -> None:
    client_id = f"pulse-ingest-{secrets.token_hex(2)}"  # `pulse ingest` names its session {group}-{index}
    ingest = gmqtt.Client(client_id, clean_session=False, session_expiry_interval=3600)
    ingest.set_auth_credentials(*INGEST)
    await ingest.connect("127.0.0.1", broker, version=MQTTv50)
    subscribed = asyncio.Event()
    ingest.on_subscribe = lambda *_args: subscribed.set()
    ingest.subscribe(f"$share/{client_id}/tenant/+/device/+/+", qos=1)
    await asyncio.wait_for(subscribed.wait(), 5)
    await ingest.disconnect()  # ingest restarting: its session waits for it at the broker

    victim = await _device(broker, "acme", "pump-2")
    try:
        assert await victim.publish(f"{prefix('acme', 'pump-2')}/telemetry", b'{"seq": 1, "secret": 1}') == 0
    finally:
        await victim.close()
    attacker = gmqtt.Client(client_id, clean_session=False, session_expiry_interval=3600)
    stolen: list[str] = []

    def on_message(_client: object, topic: str, _payload: bytes, _qos: int, _properties: object) -> int:
        stolen.append(topic)
        return 0

    attacker.on_message = on_message
    attacker.set_auth_credentials("globex/pump-1", password("globex", "pump-1"))
    try:
        with contextlib.suppress(gmqtt.mqtt.handler.MQTTConnectError):
            await asyncio.wait_for(attacker.connect("127.0.0.1", broker, version=MQTTv50), 5)
        await asyncio.sleep(1.0)
    finally:
        with contextlib.suppress(Exception):
            await attacker.disconnect()
    assert stolen == [], f"globex/pump-1 received {stolen}"
