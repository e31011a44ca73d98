"""`pulse ingest` in-process against the real Mosquitto and PostgreSQL: end to end, quarantine over MQTT,
acknowledgement only after commit, database outages, shutdown, and the MQTT 3.1.1 fallback (amqtt)."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from gmqtt.mqtt.constants import MQTTv311
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import connect_raw
from pulse.ingest.mqtt import broker_address
from pulse.settings import Settings
from tests.conftest import make_device, make_tenant
from tests.ingest.conftest import (
    TcpLink,
    body,
    eventually,
    forget_session,
    publish,
    quarantine_rows,
    running_worker,
    set_subscription_status,
    sql,
    worker_settings,
)


def telemetry_topic(tenant_id: str, device_id: str, msg_type: str = "telemetry") -> str:
    return f"tenant/{tenant_id}/device/{device_id}/{msg_type}"


async def rows_of(engine: AsyncEngine, tenant_id: str) -> list[dict[str, object]]:
    return [dict(r) for r in await sql(engine, "SELECT * FROM telemetry WHERE tenant_id = :t ORDER BY seq",
                                       t=tenant_id)]


async def test_telemetry_reaches_the_database_state_and_a_notify(engine: AsyncEngine, settings: Settings,
                                                                 mqtt_url: str) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    listener = await connect_raw(settings.require_database_url())
    notices: list[str] = []
    await listener.add_listener("pulse_telemetry", lambda *args: notices.append(args[3]))
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    try:
        async with running_worker(worker_settings(settings, ingest_flush_ms=50)) as worker:
            await publish(mqtt_url, [
                (telemetry_topic(tenant.tenant_id, device),
                 body(version="1", ts=ts.isoformat(), seq=41, metrics={"temp_c": 23.5, "door": "closed"})),
                (telemetry_topic(tenant.tenant_id, device, "heartbeat"),
                 body(version="1", ts=(ts + timedelta(seconds=1)).isoformat(), seq=42)),
            ])

            async def both_written() -> list[dict[str, object]]:
                rows = await rows_of(engine, tenant.tenant_id)
                return rows if len(rows) == 2 else []

            rows = await eventually(both_written, what="telemetry rows")
            assert [(r["msg_type"], r["seq"], r["time"], r["metrics"]) for r in rows] == [
                ("telemetry", 41, ts, {"temp_c": 23.5, "door": "closed"}),
                ("heartbeat", 42, ts + timedelta(seconds=1), {})]
            state = (await sql(engine, "SELECT * FROM device_state WHERE tenant_id = :t", t=tenant.tenant_id))[0]
            assert state["latest_metrics"] == {"temp_c": 23.5, "door": "closed"}
            assert (state["last_seq"], state["last_message_ts"]) == (42, ts + timedelta(seconds=1))
            assert state["last_telemetry_at"] is not None and state["last_heartbeat_at"] is not None

            async def notified() -> bool:
                return any([tenant.tenant_id, device] in json.loads(p) for p in notices)

            await eventually(notified, what="a pulse_telemetry NOTIFY naming the device")
            ok, checks = await worker.readiness()
            assert ok and checks["mqtt"].startswith("ok: $share/test-")

            async def ready_beat() -> bool:
                rows = await sql(engine, "SELECT ready, ready_since FROM service_heartbeats "
                                         "WHERE process_type = 'ingest' AND ready AND beat_at > now() - interval '15 s'")
                return bool(rows)

            await eventually(ready_beat, what="a ready ingest heartbeat")
            assert await worker.stopped() == 0
    finally:
        await listener.close()


async def test_stop_commits_pending_rows_acknowledges_them_and_exits_0(engine: AsyncEngine, settings: Settings,
                                                                       mqtt_url: str) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    slow = worker_settings(settings, ingest_flush_ms=60_000, ingest_batch_size=1000)  # only the stop flushes
    client_id = f"test-ingest-{secrets.token_hex(4)}"
    try:
        async with running_worker(slow, client_id=client_id) as worker:
            await publish(mqtt_url, [(telemetry_topic(tenant.tenant_id, device), body(seq=1, metrics={"a": 1}))])

            async def held() -> bool:
                return (await worker.readiness())[1]["ingest"] == "ok: 1 pending"

            await eventually(held, what="the message waiting in the batch")
            assert await rows_of(engine, tenant.tenant_id) == []
            assert await worker.stopped() == 0
        assert [r["seq"] for r in await rows_of(engine, tenant.tenant_id)] == [1]
        # It was acknowledged before the disconnect: the resumed session gets only the new message.
        async with running_worker(worker_settings(settings, ingest_flush_ms=50).replace(
                ingest_shared_group=slow.ingest_shared_group), client_id=client_id) as worker:
            await publish(mqtt_url, [(telemetry_topic(tenant.tenant_id, device), body(seq=2, metrics={"a": 2}))])

            async def second() -> list[object]:
                seqs = [r["seq"] for r in await rows_of(engine, tenant.tenant_id)]
                return seqs if 2 in seqs else []

            assert await eventually(second, what="the second message") == [1, 2]
            assert await worker.stopped() == 0
    finally:
        await forget_session(mqtt_url, client_id)


async def test_every_mqtt_reason_is_quarantined(engine: AsyncEngine, settings: Settings, mqtt_url: str) -> None:
    tenant = await make_tenant(engine)
    t = tenant.tenant_id
    devices = {name: await make_device(engine, tenant, device_id=f"{name}-{secrets.token_hex(3)}")
               for name in ("big", "json", "env", "type", "rate", "mismatch", "revoked", "site", "many", "key", "ok")}
    await sql(engine, "UPDATE devices SET status = 'REVOKED' WHERE tenant_id = :t AND device_id = :d",
              t=t, d=devices["revoked"])
    suspended, expired = await make_tenant(engine), await make_tenant(engine)
    suspended_dev, expired_dev = await make_device(engine, suspended), await make_device(engine, expired)
    await set_subscription_status(engine, suspended, "SUSPENDED")
    await set_subscription_status(engine, expired, "EXPIRED")
    ghost = f"ghost-{secrets.token_hex(4)}"
    good = body(seq=1, metrics={"a": 1})
    marker = secrets.token_hex(4)
    messages = [
        (telemetry_topic(t, devices["big"]), body(seq=1, metrics={"blob": "x" * 70_000})),
        (f"tenant/BAD-{marker}/device/d/telemetry", good),
        (telemetry_topic(t, devices["json"]), b"\xff not json"),
        (telemetry_topic(t, devices["env"]), body(metrics={"a": 1})),
        (telemetry_topic(t, devices["type"], "status"), good),
        *[(telemetry_topic(t, devices["rate"]), body(seq=i, metrics={"a": i})) for i in range(4)],
        (telemetry_topic(t, devices["mismatch"]), body(seq=1, tenant_id="other-tenant", metrics={"a": 1})),
        (telemetry_topic(t, f"unknown-{marker}"), good),
        (telemetry_topic(ghost, "d1"), good),
        (telemetry_topic(t, devices["revoked"]), good),
        (telemetry_topic(suspended.tenant_id, suspended_dev), good),
        (telemetry_topic(expired.tenant_id, expired_dev), good),
        (telemetry_topic(t, devices["site"]), body(seq=1, site_id="plant-7", metrics={"a": 1})),
        (telemetry_topic(t, devices["many"]), body(seq=1, metrics={f"m{i}": i for i in range(101)})),
        (telemetry_topic(t, devices["key"]), body(seq=1, metrics={"ctrl\x01": 1})),
        (telemetry_topic(t, devices["ok"]), good),
    ]
    async with running_worker(worker_settings(settings, ingest_flush_ms=50), burst=3, rate_per_s=0.001) as worker:
        await publish(mqtt_url, messages)

        async def all_filed() -> list[dict[str, object]]:
            rows = await quarantine_rows(
                engine, "tenant_id IN (:a, :b, :c) OR topic LIKE :bad OR topic LIKE :ghost",
                a=t, b=suspended.tenant_id, c=expired.tenant_id, bad=f"%BAD-{marker}%", ghost=f"%{ghost}%")
            return [dict(r) for r in rows] if len(rows) >= 15 else []

        rows = await eventually(all_filed, what="15 quarantine events")
        await eventually(lambda: _rows_exist(engine, t), what="the good message")
        assert await worker.stopped() == 0
    filed = sorted((r["reason"], r["tenant_id"] or "-", r["transport"]) for r in rows)
    assert filed == sorted([
        ("PAYLOAD_TOO_LARGE", t, "MQTT"), ("BAD_TOPIC", "-", "MQTT"), ("INVALID_JSON", t, "MQTT"),
        ("INVALID_ENVELOPE", t, "MQTT"), ("UNSUPPORTED_MSG_TYPE", t, "MQTT"), ("RATE_LIMITED", t, "MQTT"),
        ("TENANT_MISMATCH", t, "MQTT"), ("UNREGISTERED_DEVICE", t, "MQTT"), ("UNREGISTERED_DEVICE", "-", "MQTT"),
        ("DEVICE_REVOKED", t, "MQTT"), ("SUBSCRIPTION_SUSPENDED", suspended.tenant_id, "MQTT"),
        ("SUBSCRIPTION_EXPIRED", expired.tenant_id, "MQTT"), ("SITE_MISMATCH", t, "MQTT"),
        ("TOO_MANY_METRICS", t, "MQTT"), ("METRIC_KEY_INVALID", t, "MQTT")])
    by_reason = {r["reason"]: r for r in rows}
    assert by_reason["PAYLOAD_TOO_LARGE"]["payload_size"] > 70_000
    assert len(by_reason["PAYLOAD_TOO_LARGE"]["raw_payload"]) == 2048
    assert by_reason["INVALID_JSON"]["raw_payload"] == "\ufffd not json"
    assert by_reason["RATE_LIMITED"]["device_id"] == devices["rate"]
    assert by_reason["BAD_TOPIC"]["topic"] == f"tenant/BAD-{marker}/device/d/telemetry"
    counters = await sql(engine, "SELECT reason, sum(count) AS n FROM quarantine_counters WHERE tenant_id = :t "
                                 "GROUP BY reason", t=t)
    assert {c["reason"]: c["n"] for c in counters} == {
        "PAYLOAD_TOO_LARGE": 1, "INVALID_JSON": 1, "INVALID_ENVELOPE": 1, "UNSUPPORTED_MSG_TYPE": 1,
        "RATE_LIMITED": 1, "TENANT_MISMATCH": 1, "UNREGISTERED_DEVICE": 1, "DEVICE_REVOKED": 1, "SITE_MISMATCH": 1,
        "TOO_MANY_METRICS": 1, "METRIC_KEY_INVALID": 1}
    written = sorted(str(r["device_id"]) for r in await rows_of(engine, t))
    assert written == sorted([devices["rate"]] * 3 + [devices["ok"]])  # the burst of 3 passed, the 4th did not


async def _rows_exist(engine: AsyncEngine, tenant_id: str) -> bool:
    return len(await rows_of(engine, tenant_id)) >= 4


def _link_to_postgres(settings: Settings) -> TcpLink:
    parts = urlsplit(settings.require_database_url())
    return TcpLink(parts.hostname or "127.0.0.1", parts.port or 5432)


async def test_database_outage_holds_acknowledgements_and_resumes(engine: AsyncEngine, settings: Settings,
                                                                  mqtt_url: str) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    link = _link_to_postgres(settings)
    await link.start()
    linked = worker_settings(settings, ingest_flush_ms=50,
                             database_url=link.url_for(settings.require_database_url()))
    client_id = f"test-ingest-{secrets.token_hex(4)}"
    topic = telemetry_topic(tenant.tenant_id, device)
    try:
        async with running_worker(linked, client_id=client_id, grace_s=1.0) as worker:
            await publish(mqtt_url, [(topic, body(seq=1, metrics={"a": 1}))])
            await eventually(lambda: _count_is(engine, tenant.tenant_id, 1), what="the first row")
            link.cut()
            await publish(mqtt_url, [(topic, body(seq=2, metrics={"a": 2}))])

            async def not_ready() -> bool:
                ok, checks = await worker.readiness()
                return not ok and checks["ingest"].startswith("fail")

            await eventually(not_ready, what="readiness to fail while PostgreSQL is unreachable")
            link.restore()
            await eventually(lambda: _count_is(engine, tenant.tenant_id, 2), what="the held row after recovery")

            async def ready() -> bool:
                return (await worker.readiness())[0]

            await eventually(ready, what="readiness to recover")
            # Still down at shutdown: the message stays unacknowledged and exits cleanly.
            link.cut()
            await publish(mqtt_url, [(topic, body(seq=3, metrics={"a": 3}))])
            await eventually(not_ready, what="readiness to fail again")
            assert await worker.stopped() == 0
        assert [r["seq"] for r in await rows_of(engine, tenant.tenant_id)] == [1, 2]
        link.restore()
        async with running_worker(linked, client_id=client_id) as worker:  # the same session: redelivery
            await eventually(lambda: _count_is(engine, tenant.tenant_id, 3), what="the redelivered message")
            assert await worker.stopped() == 0
        assert [r["seq"] for r in await rows_of(engine, tenant.tenant_id)] == [1, 2, 3]
    finally:
        await link.close()
        await forget_session(mqtt_url, client_id)


async def _count_is(engine: AsyncEngine, tenant_id: str, n: int) -> bool:
    return len(await rows_of(engine, tenant_id)) == n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_mqtt_311_broker_falls_back_to_the_plain_subscription(engine: AsyncEngine, settings: Settings) -> None:
    from amqtt.broker import Broker
    from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType

    port = _free_port()
    broker = Broker(BrokerConfig(
        listeners={"default": ListenerConfig(type=ListenerType.TCP, bind=f"127.0.0.1:{port}")},
        plugins={"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}))
    await broker.start()
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    url = f"mqtt://127.0.0.1:{port}"
    try:
        async with running_worker(worker_settings(settings, mqtt_url=url, ingest_flush_ms=50)) as worker:
            ok, checks = await worker.readiness()
            assert ok and checks["mqtt"] == "ok: tenant/+/device/+/+"
            await publish(url, [(telemetry_topic(tenant.tenant_id, device), body(seq=1, metrics={"a": 1}))],
                          version=MQTTv311)
            await eventually(lambda: _count_is(engine, tenant.tenant_id, 1), what="a row via MQTT 3.1.1")
            assert await worker.stopped() == 0
    finally:
        await broker.shutdown()


@pytest.mark.parametrize(("url", "expected"), [
    ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883, False, None, None, "auto")),
    ("mqtt://ingest@broker", ("broker", 1883, False, "ingest", "from-settings", "auto")),
    ("mqtts://us%40er:p%3Ass@broker:9999?protocol=3.1.1", ("broker", 9999, True, "us@er", "p:ss", "3.1.1")),
    ("mqtts://u:@broker?protocol=5", ("broker", 8883, True, "u", "", "5")),
])
def test_broker_address(url: str, expected: tuple[object, ...]) -> None:
    a = broker_address(url, "from-settings")
    assert (a.host, a.port, a.ssl, a.username, a.password, a.protocol) == expected


def test_broker_address_rejects_unknown_protocol() -> None:
    from pulse.errors import SettingsError

    with pytest.raises(SettingsError, match="protocol"):
        broker_address("mqtt://h?protocol=4", "x")


async def test_worker_waits_for_the_broker(engine: AsyncEngine, settings: Settings) -> None:
    """No broker yet: not ready, keeps retrying, and still stops cleanly on the stop event."""
    from pulse.ingest.worker import run

    stop = asyncio.Event()
    holder: list[object] = []
    client_id = f"test-ingest-{secrets.token_hex(4)}"
    task = asyncio.create_task(run(worker_settings(settings, mqtt_url=f"mqtt://127.0.0.1:{_free_port()}"), stop,
                                   client_id=client_id, on_started=holder.append))

    async def reported() -> bool:
        return bool(holder) and not (await holder[0].readiness())[0]  # type: ignore[attr-defined]

    await eventually(reported, what="a not-ready worker")
    _, checks = await holder[0].readiness()  # type: ignore[attr-defined]
    assert checks["mqtt"] == "fail: not connected to the broker"

    async def beating() -> list[dict[str, object]]:  # what the evaluator's liveness guard reads
        return await sql(engine, "SELECT ready, detail FROM service_heartbeats WHERE instance LIKE :i",
                         i=f"ingest:{client_id}@%")

    assert (await eventually(beating, what="a heartbeat"))[0] == {"ready": False,
                                                                  "detail": "not connected to the broker"}
    stop.set()
    assert await asyncio.wait_for(task, 30) == 0
