"""The MQTT broker (Mosquitto from deploy/mosquitto/mosquitto.conf, persistence on) stopped and started again:

- under a live QoS 1 stream, real `pulse ingest`, `pulse simulate` and a device gateway reconnect, and every
  message the broker acknowledged is stored exactly once;
- `pulse deliver` keeps retrying MQTT notifications raised while the broker is down and delivers them when it is
  back, to a subscriber whose persistent session outlived the restart;
- a backlog queued in a stopped ingest worker's persistent session survives the restart and is stored in full;
- devices that come back before ingest does wait at the door and lose nothing.

Mosquitto 2.0 does not restore shared (`$share/…`) subscriptions from its persistence file: without Pulse's ingest
gate (deploy/mosquitto/ingest_gate.c) the broker would answer device messages with PUBACK 0x10 (no matching
subscribers) and drop them until ingest subscribes again. The gate closes device connections until then; no device
message in these tests is ever answered 0x10.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, raise_alert
from pulse.db import system_tx
from pulse.notify.routing import create_route
from pulse.notify.service import create_channel
from pulse.settings import Settings
from tests.conftest import TenantRef, make_tenant
from tests.faults.data import add_devices, fetch, stored_keys
from tests.faults.mqtt_tools import AckedPublisher, Key, SessionSubscriber, envelope, subscribers
from tests.faults.private_broker import PrivateBroker, private_broker, publisher_acls
from tests.faults.processes import PulseProcesses, eventually, processes

__all__ = ["private_broker", "processes", "subscribers"]  # fixtures

DEVICES = 30
ALERTS = 5


def _stream(tenant_id: str, device_ids: list[str], per_device: int) -> list[tuple[Key, str, bytes]]:
    return [((d, seq), f"tenant/{tenant_id}/device/{d}/telemetry", envelope(seq, {"flow_l_min": seq % 50}))
            for seq in range(1, per_device + 1) for d in device_ids]


async def _setup(engine: AsyncEngine, broker: PrivateBroker) -> tuple[TenantRef, list[str], dict[str, str]]:
    tenant = await make_tenant(engine, heartbeat_interval_s=3600)
    device_ids = [f"pump-{i:03d}-{secrets.token_hex(2)}" for i in range(DEVICES)]
    await add_devices(engine, tenant, device_ids)
    ingest = await broker.ingest_account()
    env = {"PULSE_MQTT_URL": broker.url(*ingest), "PULSE_INGEST_SHARED_GROUP": f"faults-{tenant.tenant_id}",
           "PULSE_INGEST_RATE_PER_S": "100000", "PULSE_INGEST_BURST": "100000"}
    return tenant, device_ids, env


async def _assert_stored_once(database_url: str, tenant_id: str, acked: set[Key]) -> None:
    async def all_stored() -> bool:
        return set(await stored_keys(database_url, tenant_id)) >= acked
    await eventually(all_stored, timeout=120, what="every acknowledged message to be stored")
    stored = await stored_keys(database_url, tenant_id)
    mine = {key: n for key, n in stored.items() if not key[0].startswith("sim-")}
    assert set(mine) == acked
    assert [key for key, n in mine.items() if n > 1] == []
    assert await fetch(database_url, "SELECT reason, detail FROM quarantine_events WHERE tenant_id = $1",
                       tenant_id) == []


async def test_ingest_simulator_gateway_and_deliver_come_back_after_a_broker_restart(
        engine: AsyncEngine, settings: Settings, database_url: str, private_broker: PrivateBroker,
        processes: PulseProcesses, subscribers: list[SessionSubscriber]) -> None:
    broker = private_broker
    tenant, device_ids, ingest_env = await _setup(engine, broker)
    t = tenant.tenant_id
    # Publishers for many devices: a gateway's device-shaped account and the simulator's account, both held by the
    # ingest gate while ingest is not subscribed (deploy/mosquitto/mosquitto.conf).
    gateway = await broker.account(f"{t}/gateway", publisher_acls(t))
    simulator = await broker.account("pulse-simulator", publisher_acls(t))
    notifier = await broker.account(f"notifier-{t}", [
        {"acltype": "publishClientSend", "topic": f"alerts/{t}/#", "allow": True}])
    consumer_account = await broker.account(f"consumer-{t}", [
        {"acltype": "subscribePattern", "topic": f"alerts/{t}/#", "allow": True}])
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, t, "alert bus", "MQTT", {
            "url": f"mqtt://127.0.0.1:{broker.port}", "topic_template": "alerts/{tenant_id}/{device_id}", "qos": 1,
            "username": notifier[0]}, {"password": notifier[1]}, settings=settings)
        await create_route(conn, t, name="all alerts", channel_id=channel, event_kinds=["OPENED"])
    consumer = await SessionSubscriber(broker.port, *consumer_account, f"alerts/{t}/#").start()
    subscribers.append(consumer)

    processes.env["PULSE_DATABASE_URL"] = database_url
    processes.start("ingest", "ingest", **ingest_env)
    processes.start("deliver", "deliver", PULSE_ALLOW_PRIVATE_URLS="loopback", PULSE_DELIVER_RETRY_BASE_S="0.5",
                    PULSE_DELIVER_RETRY_CAP_S="2", PULSE_DELIVER_MAX_ATTEMPTS="50")
    processes.start("simulate", "simulate", "--devices", "3", "--tenant", t, "--rate", "2",
                    PULSE_MQTT_URL=broker.url(*simulator))
    await processes.ready("ingest", "mqtt")
    await processes.ready("deliver")
    sim_devices = ["sim-0001", "sim-0002", "sim-0003"]

    async def simulated_since(since: datetime) -> bool:
        rows = await fetch(database_url, "SELECT DISTINCT device_id FROM telemetry WHERE tenant_id = $1 "
                           "AND device_id LIKE 'sim-%' AND time > $2", t, since)
        return {r["device_id"] for r in rows} == set(sim_devices)
    await eventually(lambda: simulated_since(datetime(2000, 1, 1, tzinfo=UTC)), timeout=60,
                     what="the simulated devices' telemetry", details=processes.outputs)

    messages = _stream(t, device_ids, 200)  # 6,000 messages over ~12 s
    publisher = AckedPublisher("127.0.0.1", broker.port, *gateway, rate_per_s=500)
    publishing = asyncio.create_task(publisher.publish_all(messages, timeout=180))
    try:
        async def a_third_stored() -> bool:
            assert not publishing.done() or publishing.exception() is None
            return sum((await stored_keys(database_url, t)).values()) >= len(messages) // 3
        await eventually(a_third_stored, timeout=60, what="a third of the stream", details=processes.outputs)

        await asyncio.to_thread(broker.stop)
        async with system_tx(engine) as conn:  # alerts open while nobody can reach the broker
            now = datetime.now(UTC)
            alert_ids = [(await raise_alert(conn, AlertSignal(
                tenant_id=t, fingerprint=f"RULE:outage:{d}", alert_type="THRESHOLD", severity=4,
                title="flow stalled", summary="flow 0", device_id=d), now=now)).alert_id
                for d in device_ids[:ALERTS]]

        async def every_job_retried() -> bool:
            rows = await fetch(database_url, "SELECT count(DISTINCT a.job_id) FROM notification_attempts a "
                               "WHERE a.tenant_id = $1 AND a.outcome = 'RETRY'", t)
            return rows[0][0] == ALERTS
        await eventually(every_job_retried, timeout=30, what="the deliverer to fail against the stopped broker",
                         details=lambda: processes.output("deliver"))
        await asyncio.sleep(1.0)  # every client is now retrying against a closed port
        broker.start()
        restarted_at = datetime.now(UTC)
        await asyncio.wait_for(publishing, 180)
    finally:
        if not publishing.done():
            publishing.cancel()
        await asyncio.sleep(0)

    assert publisher.connections >= 2, "the gateway never lost its connection"
    assert not publisher.refused
    assert not publisher.no_subscribers, f"{len(publisher.no_subscribers)} messages answered 0x10 and dropped"
    assert publisher.acked == {key for key, _, _ in messages}
    await _assert_stored_once(database_url, t, publisher.acked)
    await eventually(lambda: simulated_since(restarted_at), timeout=60,
                     what="every simulated device to publish again after the restart",
                     details=lambda: processes.output("simulate"))

    async def all_delivered() -> bool:
        return len({props.get("pulse-delivery") for _, _, props in consumer.received}) >= ALERTS
    await eventually(all_delivered, timeout=60, what="the notifications raised during the outage",
                     details=lambda: processes.output("deliver"))
    jobs = await fetch(database_url, "SELECT job_id, status, idempotency_key, "
                       "  array(SELECT outcome FROM notification_attempts n WHERE n.job_id = j.job_id "
                       "        ORDER BY attempt_no) AS outcomes "
                       "FROM notification_jobs j WHERE tenant_id = $1", t)
    assert len(jobs) == ALERTS and {j["status"] for j in jobs} == {"DELIVERED"}
    for job in jobs:  # failed while the broker was down, then one delivery
        assert job["outcomes"][-1] == "DELIVERED" and set(job["outcomes"][:-1]) == {"RETRY"}, job
    received = Counter(props.get("pulse-delivery") for _, _, props in consumer.received)
    assert set(received) == {j["idempotency_key"] for j in jobs}
    assert sorted(body["alert"]["alert_id"] for _, body, _ in consumer.received) == sorted(alert_ids)
    codes = processes.stop_all()
    assert codes == {"ingest": 0, "deliver": 0, "simulate": 0}, processes.outputs()


async def test_a_backlog_in_a_stopped_ingest_session_survives_a_broker_restart(
        engine: AsyncEngine, database_url: str, private_broker: PrivateBroker, processes: PulseProcesses) -> None:
    broker = private_broker
    tenant, device_ids, ingest_env = await _setup(engine, broker)
    gateway = await broker.account(f"{tenant.tenant_id}/gateway", publisher_acls(tenant.tenant_id))
    processes.env["PULSE_DATABASE_URL"] = database_url
    processes.start("ingest", "ingest", **ingest_env)
    await processes.ready("ingest", "mqtt")
    assert processes.stop("ingest") == 0  # its session (and subscription) stays with the broker

    messages = _stream(tenant.tenant_id, device_ids, 100)  # 3,000 messages queued for the absent worker
    publisher = AckedPublisher("127.0.0.1", broker.port, *gateway)
    await publisher.publish_all(messages, timeout=120)
    assert not publisher.refused and not publisher.no_subscribers, broker.log_tail() + processes.output("ingest")
    assert publisher.acked == {key for key, _, _ in messages}
    assert await stored_keys(database_url, tenant.tenant_id) == Counter()

    await asyncio.to_thread(broker.stop)  # Mosquitto writes the sessions and their queues to mosquitto.db
    broker.start()
    processes.start("ingest", "ingest", **ingest_env)
    await _assert_stored_once(database_url, tenant.tenant_id, publisher.acked)
    assert processes.stop("ingest") == 0, processes.output("ingest")


async def test_devices_that_send_after_a_broker_restart_before_ingest_is_back_wait_and_lose_nothing(
        engine: AsyncEngine, database_url: str, private_broker: PrivateBroker, processes: PulseProcesses) -> None:
    broker = private_broker
    tenant, device_ids, ingest_env = await _setup(engine, broker)
    gateway = await broker.account(f"{tenant.tenant_id}/gateway", publisher_acls(tenant.tenant_id))
    processes.env["PULSE_DATABASE_URL"] = database_url
    processes.start("ingest", "ingest", **ingest_env)
    await processes.ready("ingest", "mqtt")
    assert processes.stop("ingest") == 0
    await asyncio.to_thread(broker.stop)
    broker.start()  # ingest's session is back, its shared subscription is not

    messages = _stream(tenant.tenant_id, device_ids[:5], 10)
    publisher = AckedPublisher("127.0.0.1", broker.port, *gateway)
    publishing = asyncio.create_task(publisher.publish_all(messages, timeout=90))
    try:
        async def held_off() -> bool:
            assert not publishing.done(), publishing
            return publisher.held_off >= 5
        await eventually(held_off, timeout=30, what="the gateway to be held off")
        assert publisher.connections == 0 and publisher.acked == set()
        processes.start("ingest", "ingest", **ingest_env)
        await processes.ready("ingest", "mqtt")
        await asyncio.wait_for(publishing, 90)
    finally:
        if not publishing.done():
            publishing.cancel()
    assert not publisher.refused
    assert publisher.no_subscribers == set(), f"{len(publisher.no_subscribers)} messages answered 0x10 and dropped"
    assert publisher.acked == {key for key, _, _ in messages}
    await _assert_stored_once(database_url, tenant.tenant_id, publisher.acked)
    assert "pulse ingest gate: open after" in broker.log_tail()
    assert processes.stop("ingest") == 0, processes.output("ingest")
