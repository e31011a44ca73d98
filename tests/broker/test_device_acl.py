"""What a device account may do on the production broker configuration, with the reason codes devices see."""

from __future__ import annotations

import asyncio

from pulse.fleet.broker_accounts import BrokerAdmin
from tests.broker.conftest import NOT_AUTHORISED, Peer, connect_error, requires_mosquitto

pytestmark = requires_mosquitto

PASSWORD = "device-password-0123456789"


async def _device(port: int, admin: BrokerAdmin, tenant_id: str, device_id: str) -> Peer:
    username = f"{tenant_id}/{device_id}"
    await admin.ensure_device(tenant_id, device_id, username, PASSWORD)
    return await Peer("device").connect(port, username, PASSWORD)


async def test_anonymous_and_wrong_passwords_are_refused_as_not_authorised(broker: int, admin: BrokerAdmin) -> None:
    await admin.ensure_device("acme", "door-1", "acme/door-1", PASSWORD)
    assert await connect_error(broker, None, None) == NOT_AUTHORISED
    assert await connect_error(broker, "acme/door-1", "not-the-password") == NOT_AUTHORISED
    assert await connect_error(broker, "acme/door-2", PASSWORD) == NOT_AUTHORISED  # no such account
    assert await connect_error(broker, "acme/door-1", PASSWORD) is None
    # the right password with another client id: a device may not resume or push off another client's session
    assert await connect_error(broker, "acme/door-1", PASSWORD, client_id="pulse-ingest-0") == NOT_AUTHORISED


async def test_publishes_outside_the_devices_own_topics_are_refused_and_never_reach_ingest(
        broker: int, admin: BrokerAdmin, ingest: Peer) -> None:
    await admin.ensure_device("acme", "pump-2", "acme/pump-2", PASSWORD)
    device = await _device(broker, admin, "acme", "pump-1")
    try:
        codes = {topic: await device.publish(topic, b'{"seq": 1}') for topic in (
            "tenant/acme/device/pump-2/telemetry",     # another device of the same tenant
            "tenant/globex/device/pump-1/telemetry",   # the same device id in another tenant
            "tenant/acme/device/pump-10/telemetry",    # a device whose id starts with its own
            "tenant/acme/device/pump-1/heartbeat")}    # its own: allowed, and sent last
        assert codes == {"tenant/acme/device/pump-2/telemetry": NOT_AUTHORISED,
                         "tenant/globex/device/pump-1/telemetry": NOT_AUTHORISED,
                         "tenant/acme/device/pump-10/telemetry": NOT_AUTHORISED,
                         "tenant/acme/device/pump-1/heartbeat": 0}
        # The broker handles one client's packets in order, so once the allowed message is through,
        # anything refused earlier would have been delivered before it.
        assert await ingest.next_message() == ("tenant/acme/device/pump-1/heartbeat", b'{"seq": 1}')
        assert ingest.received.empty()
    finally:
        await device.close()


async def test_a_device_subscribes_to_its_own_commands_only(broker: int, admin: BrokerAdmin) -> None:
    device = await _device(broker, admin, "acme", "valve-1")
    try:
        assert await device.subscribe("tenant/acme/device/valve-1/command/#") == 1
        for topic in ("tenant/acme/device/valve-2/command/#", "tenant/globex/device/valve-1/command/#",
                      "tenant/acme/device/+/command/#", "tenant/acme/device/valve-1/telemetry", "tenant/#", "#",
                      "$share/g/tenant/acme/device/valve-1/command/#", "$CONTROL/dynamic-security/v1/response"):
            assert await device.subscribe(topic) == NOT_AUTHORISED, topic
    finally:
        await device.close()


async def test_the_ingest_account_publishes_nowhere(broker: int, admin: BrokerAdmin, ingest: Peer) -> None:
    for topic in ("tenant/acme/device/pump-1/telemetry", "tenant/acme/device/pump-1/command/reboot",
                  "$CONTROL/dynamic-security/v1"):
        assert await ingest.publish(topic, b"{}") == NOT_AUTHORISED, topic


async def test_the_packet_limit_lets_oversized_bodies_reach_quarantine_and_refuses_larger_ones(
        broker: int, admin: BrokerAdmin, ingest: Peer) -> None:
    device = await _device(broker, admin, "acme", "camera-1")
    try:
        just_over = b"x" * 65_600  # over the 64 KiB envelope limit: ingest must see it to quarantine it
        assert await device.publish("tenant/acme/device/camera-1/telemetry", just_over) == 0
        assert (await ingest.next_message())[1] == just_over
        device.client.publish("tenant/acme/device/camera-1/telemetry", b"x" * 80_000, qos=1)
        await asyncio.wait_for(device.disconnected.wait(), 5)  # the broker closes the connection
        assert ingest.received.empty()
    finally:
        await device.close()


async def test_dynamic_security_does_not_substitute_the_username_in_acl_topics(broker: int,
                                                                               admin: BrokerAdmin) -> None:
    """Why each device has its own role: Mosquitto 2.0's plugin takes `%u`/`%c` literally."""
    await admin.execute([{"command": "createRole", "rolename": "pattern-probe", "acls": [
        {"acltype": "publishClientSend", "topic": "probe/%u/#", "allow": True},
        {"acltype": "publishClientSend", "topic": "probe/%c/#", "allow": True}]}])
    await admin.execute([{"command": "createClient", "username": "probe-user", "password": PASSWORD,
                          "clientid": "probe-client", "roles": [{"rolename": "pattern-probe"}]}])
    peer = Peer("unused")
    peer.client._client_id = "probe-client"
    await peer.connect(broker, "probe-user", PASSWORD)
    try:
        assert await peer.publish("probe/probe-user/x", b"1") == NOT_AUTHORISED
        assert await peer.publish("probe/probe-client/x", b"1") == NOT_AUTHORISED
    finally:
        await peer.close()
