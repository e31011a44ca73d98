"""The shared pipeline against a real PostgreSQL, through the HTTP entry points: every quarantine reason, accepted
messages committed before the answer, device_state folding, partitions, the auth cache and its invalidation."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import FrozenClock, SystemClock
from pulse.db import connect_raw, create_engine
from pulse.ingest.envelope import Reason
from pulse.ingest.quarantine import RAW_PAYLOAD_LIMIT
from pulse.ingest.service import (
    BatchRejected,
    IngestPipeline,
    IngestResult,
    ingest_http,
    ingest_http_batch,
)
from pulse.ingest.validate import Accepted, InboundMessage
from pulse.ingest.writer import BatchWriter, IngestUnavailable
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant
from tests.ingest.conftest import (
    TcpLink,
    body,
    eventually,
    issue_token,
    quarantine_rows,
    set_subscription_status,
    sql,
)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Case:
    """One HTTP message and where its quarantine event must be filed."""

    tenant_id: str
    device_id: str
    msg_type: str
    payload: bytes
    token: str | None
    filed_under: str | None  # tenant_id expected on the quarantine row


GOOD = body(seq=1, metrics={"temp_c": 21.5})


async def registered(engine: AsyncEngine, **device: Any) -> tuple[TenantRef, str, str]:
    tenant = await make_tenant(engine)
    device_id = await make_device(engine, tenant, **device)
    return tenant, device_id, await issue_token(engine, tenant.tenant_id, device_id)


async def case_for(reason: Reason, engine: AsyncEngine) -> Case:
    tenant, dev, token = await registered(engine)
    t = tenant.tenant_id
    if reason is Reason.PAYLOAD_TOO_LARGE:
        return Case(t, dev, "telemetry", body(seq=1, metrics={"blob": "x" * 70_000}), token, t)
    if reason is Reason.BAD_TOPIC:
        return Case(t, "bad device id", "telemetry", GOOD, token, None)
    if reason is Reason.INVALID_JSON:
        return Case(t, dev, "telemetry", b'{"seq": 1, "metrics": {"temp_c": 21.5}', token, t)
    if reason is Reason.INVALID_ENVELOPE:
        return Case(t, dev, "telemetry", body(metrics={"temp_c": 1}), token, t)
    if reason is Reason.UNSUPPORTED_MSG_TYPE:
        return Case(t, dev, "status", GOOD, token, t)
    if reason is Reason.RATE_LIMITED:
        raise AssertionError("covered by test_rate_limited")
    if reason is Reason.TENANT_MISMATCH:
        return Case(t, dev, "telemetry", body(seq=1, tenant_id="someone-else", metrics={"a": 1}), token, t)
    if reason is Reason.UNREGISTERED_DEVICE:
        return Case(t, "never-registered", "telemetry", GOOD, None, t)
    if reason is Reason.DEVICE_REVOKED:
        await sql(engine, "UPDATE devices SET status = 'REVOKED' WHERE tenant_id = :t AND device_id = :d", t=t, d=dev)
        return Case(t, dev, "telemetry", GOOD, token, t)
    if reason is Reason.SUBSCRIPTION_SUSPENDED:
        await set_subscription_status(engine, tenant, "SUSPENDED")
        return Case(t, dev, "telemetry", GOOD, token, t)
    if reason is Reason.SUBSCRIPTION_EXPIRED:
        await set_subscription_status(engine, tenant, "EXPIRED")
        return Case(t, dev, "telemetry", GOOD, token, t)
    if reason is Reason.SITE_MISMATCH:
        return Case(t, dev, "telemetry", body(seq=1, site_id="plant-9", metrics={"a": 1}), token, t)
    if reason is Reason.TOKEN_MISSING:
        return Case(t, dev, "telemetry", GOOD, None, t)
    if reason is Reason.TOKEN_INVALID:
        return Case(t, dev, "telemetry", GOOD, "pt_not-the-token", t)
    if reason is Reason.TOO_MANY_METRICS:
        return Case(t, dev, "telemetry", body(seq=1, metrics={f"m{i}": i for i in range(101)}), token, t)
    if reason is Reason.METRIC_KEY_INVALID:
        return Case(t, dev, "telemetry", body(seq=1, metrics={"bad\tkey": 1}), token, t)
    raise AssertionError(reason)


STATUS = {Reason.PAYLOAD_TOO_LARGE: 413, Reason.TOKEN_MISSING: 401, Reason.TOKEN_INVALID: 401,
          Reason.TENANT_MISMATCH: 403, Reason.UNREGISTERED_DEVICE: 403, Reason.DEVICE_REVOKED: 403,
          Reason.SUBSCRIPTION_SUSPENDED: 403, Reason.SUBSCRIPTION_EXPIRED: 403}


@pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.RATE_LIMITED])
async def test_each_reason_is_answered_and_quarantined(reason: Reason, engine: AsyncEngine,
                                                       pipeline: IngestPipeline) -> None:
    case = await case_for(reason, engine)
    received_at = now()
    result = await ingest_http(pipeline, case.tenant_id, case.device_id, case.msg_type, case.payload, case.token,
                               received_at)
    assert (result.accepted, result.reason) == (False, reason), result.detail
    assert result.detail
    assert result.status == STATUS.get(reason, 400)
    await pipeline.flush()
    topic = f"tenant/{case.tenant_id}/device/{case.device_id}/{case.msg_type}"
    rows = await quarantine_rows(engine, "topic = :topic", topic=topic)
    assert [(r["reason"], r["transport"], r["tenant_id"]) for r in rows] == [(reason, "HTTP", case.filed_under)]
    row = rows[0]
    assert row["detail"] == result.detail
    assert row["payload_size"] == len(case.payload)
    assert row["raw_payload"] == case.payload[:RAW_PAYLOAD_LIMIT].decode()
    counters = await sql(engine, "SELECT count FROM quarantine_counters WHERE tenant_id IS NOT DISTINCT FROM :t "
                                 "AND reason = :r AND minute = date_trunc('minute', CAST(:at AS timestamptz))",
                         t=case.filed_under, r=reason.value, at=received_at)
    assert counters and counters[0]["count"] >= 1
    telemetry = await sql(engine, "SELECT 1 FROM telemetry WHERE tenant_id = :t", t=case.tenant_id)
    assert telemetry == []


async def test_rate_limited(engine: AsyncEngine, settings: Settings) -> None:
    tenant, dev, token = await registered(engine)
    pipeline = IngestPipeline(engine, settings.replace(ingest_flush_ms=20), FrozenClock(now()), rate_per_s=1,
                              burst=2, listen=False)
    await pipeline.start()
    try:
        results = [await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", body(seq=i, metrics={"a": i}),
                                     token, now()) for i in range(3)]
        assert [r.reason for r in results] == [None, None, Reason.RATE_LIMITED]
        assert results[2].status == 429
        pipeline.clock.advance(1.0)  # type: ignore[attr-defined]
        assert (await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", body(seq=9, metrics={"a": 9}),
                                  token, now())).accepted
        other = await make_device(engine, tenant)  # buckets are per device
        other_token = await issue_token(engine, tenant.tenant_id, other)
        assert (await ingest_http(pipeline, tenant.tenant_id, other, "telemetry", GOOD, other_token, now())).accepted
        await pipeline.flush()
    finally:
        await pipeline.close()
    rows = await quarantine_rows(engine, "tenant_id = :t", t=tenant.tenant_id)
    assert [(r["reason"], r["device_id"]) for r in rows] == [("RATE_LIMITED", dev)]
    assert len(await sql(engine, "SELECT 1 FROM telemetry WHERE tenant_id = :t", t=tenant.tenant_id)) == 4


async def test_unknown_tenant_is_counted_under_null(engine: AsyncEngine, pipeline: IngestPipeline) -> None:
    ghost = f"ghost-{secrets.token_hex(4)}"
    at = now()
    before = await sql(engine, "SELECT count FROM quarantine_counters WHERE tenant_id IS NULL "
                               "AND reason = 'UNREGISTERED_DEVICE' AND minute = date_trunc('minute', "
                               "CAST(:at AS timestamptz))", at=at)
    for i in range(2):
        result = await ingest_http(pipeline, ghost, "d1", "telemetry", body(seq=i, metrics={"a": 1}), "pt_x", at)
        assert result.reason == Reason.UNREGISTERED_DEVICE and ghost in result.detail
    await pipeline.flush()
    rows = await quarantine_rows(engine, "topic = :topic", topic=f"tenant/{ghost}/device/d1/telemetry")
    assert [(r["tenant_id"], r["device_id"]) for r in rows] == [(None, "d1"), (None, "d1")]
    after = await sql(engine, "SELECT count FROM quarantine_counters WHERE tenant_id IS NULL "
                              "AND reason = 'UNREGISTERED_DEVICE' AND minute = date_trunc('minute', "
                              "CAST(:at AS timestamptz))", at=at)
    assert len(after) == 1  # NULL tenants share one counter row per minute and reason
    assert after[0]["count"] - (before[0]["count"] if before else 0) >= 2


@pytest.mark.parametrize(("setup", "payload", "token", "expected"), [
    ("unregistered", body(metrics={}), None, Reason.INVALID_ENVELOPE),  # body problems come first
    ("unregistered", body(seq=1, metrics={f"m{i}": i for i in range(200)}), None, Reason.UNREGISTERED_DEVICE),
    ("revoked", GOOD, "pt_wrong", Reason.DEVICE_REVOKED),  # registry before token
    ("suspended", body(seq=1, site_id="elsewhere", metrics={"a": 1}), None, Reason.SUBSCRIPTION_SUSPENDED),
    ("ok", body(seq=1, site_id="elsewhere", metrics={"a": 1}), None, Reason.SITE_MISMATCH),  # site before token
    ("ok", body(seq=1, metrics={"": 1}), None, Reason.TOKEN_MISSING),  # token before metric keys
    ("ok", body(seq=1, metrics={"": 1}), "token", Reason.METRIC_KEY_INVALID),
])
async def test_first_failing_check_wins(setup: str, payload: bytes, token: str | None, expected: Reason,
                                        engine: AsyncEngine, pipeline: IngestPipeline) -> None:
    tenant, dev, real_token = await registered(engine)
    if setup == "unregistered":
        dev = "not-there"
    elif setup == "revoked":
        await sql(engine, "UPDATE devices SET status = 'REVOKED' WHERE tenant_id = :t AND device_id = :d",
                  t=tenant.tenant_id, d=dev)
    elif setup == "suspended":
        await set_subscription_status(engine, tenant, "SUSPENDED")
    result = await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", payload,
                               real_token if token == "token" else token, now())
    assert result.reason == expected, result.detail


async def test_token_of_another_tenant_is_a_tenant_mismatch(engine: AsyncEngine, pipeline: IngestPipeline) -> None:
    tenant_a, dev_a, _ = await registered(engine)
    tenant_b, dev_b, token_b = await registered(engine)
    same_tenant_other = await make_device(engine, tenant_a)
    token_a2 = await issue_token(engine, tenant_a.tenant_id, same_tenant_other)
    result = await ingest_http(pipeline, tenant_a.tenant_id, dev_a, "telemetry", GOOD, token_b, now())
    assert result.reason == Reason.TENANT_MISMATCH and result.status == 403
    # A token of another device in the same tenant is simply not this device's token.
    result = await ingest_http(pipeline, tenant_a.tenant_id, dev_a, "telemetry", GOOD, token_a2, now())
    assert result.reason == Reason.TOKEN_INVALID
    assert (await ingest_http(pipeline, tenant_b.tenant_id, dev_b, "telemetry", GOOD, token_b, now())).accepted


async def test_accepted_message_is_committed_before_the_answer(engine: AsyncEngine, pipeline: IngestPipeline) -> None:
    tenant, dev, token = await registered(engine)
    received_at = now()
    ts = received_at - timedelta(seconds=5)
    result = await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry",
                               body(version="1", seq=7, ts=ts.isoformat(), metrics={"temp_c": 21.5, "door": "open",
                                                                                     "ok": True}, lat=1.5, lng=2.5),
                               token, received_at)
    assert result == IngestResult(True, None, "accepted") and result.status == 202
    rows = await sql(engine, "SELECT * FROM telemetry WHERE tenant_id = :t", t=tenant.tenant_id)
    assert [(r["device_id"], r["msg_type"], r["seq"], r["time"], r["metrics"]) for r in rows] == [
        (dev, "telemetry", 7, ts, {"temp_c": 21.5, "door": "open", "ok": True})]
    state = (await sql(engine, "SELECT * FROM device_state WHERE tenant_id = :t", t=tenant.tenant_id))[0]
    assert state["last_seen_at"] == received_at and state["last_telemetry_at"] == received_at
    assert state["last_heartbeat_at"] is None
    assert (state["last_message_ts"], state["last_seq"]) == (ts, 7)
    assert state["latest_metrics"] == {"temp_c": 21.5, "door": "open", "ok": True}
    assert {k: datetime.fromisoformat(v) for k, v in state["latest_metrics_at"].items()} == dict.fromkeys(
        ("temp_c", "door", "ok"), ts)
    assert (state["lat"], state["lng"]) == (1.5, 2.5)


async def test_device_state_folds_a_batch_and_never_moves_backwards(engine: AsyncEngine,
                                                                    pipeline: IngestPipeline) -> None:
    tenant, dev, token = await registered(engine)
    t0 = now().replace(microsecond=0) - timedelta(minutes=10)
    batch = [
        {"seq": 2, "ts": (t0 + timedelta(minutes=2)).isoformat(), "metrics": {"temp_c": 22, "rssi": -70}},
        {"seq": 1, "ts": (t0 + timedelta(minutes=1)).isoformat(), "metrics": {"temp_c": 21, "hum": 40}},
        {"msg_type": "heartbeat", "seq": 3, "ts": (t0 + timedelta(minutes=3)).isoformat()},
    ]
    received_at = now()
    result = await ingest_http_batch(pipeline, batch_body(tenant.tenant_id, dev, token, batch), received_at)
    assert [r.accepted for r in result.results] == [True, True, True] and result.status == 202
    state = (await sql(engine, "SELECT * FROM device_state WHERE tenant_id = :t", t=tenant.tenant_id))[0]
    assert state["latest_metrics"] == {"temp_c": 22, "rssi": -70, "hum": 40}
    assert (state["last_seq"], state["last_message_ts"]) == (3, t0 + timedelta(minutes=3))
    assert state["last_heartbeat_at"] == received_at and state["last_telemetry_at"] == received_at
    # A late reading (older ts) is stored in telemetry but does not overwrite newer latest values.
    late = body(seq=0, ts=t0.isoformat(), metrics={"temp_c": 5, "pressure": 1013})
    assert (await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", late, token, now())).accepted
    state = (await sql(engine, "SELECT * FROM device_state WHERE tenant_id = :t", t=tenant.tenant_id))[0]
    assert state["latest_metrics"] == {"temp_c": 22, "rssi": -70, "hum": 40, "pressure": 1013}
    assert (state["last_seq"], state["last_message_ts"]) == (3, t0 + timedelta(minutes=3))
    kinds = await sql(engine, "SELECT msg_type, seq FROM telemetry WHERE tenant_id = :t ORDER BY time",
                      t=tenant.tenant_id)
    assert [(k["msg_type"], k["seq"]) for k in kinds] == [("telemetry", 0), ("telemetry", 1), ("telemetry", 2),
                                                          ("heartbeat", 3)]
    # A heartbeat carrying a metric is stored with it, but never becomes a latest value rules would see.
    beat = body(seq=4, ts=(t0 + timedelta(minutes=4)).isoformat(), metrics={"temp_c": 99, "battery_pct": 80})
    assert (await ingest_http(pipeline, tenant.tenant_id, dev, "heartbeat", beat, token, now())).accepted
    state = (await sql(engine, "SELECT * FROM device_state WHERE tenant_id = :t", t=tenant.tenant_id))[0]
    assert state["latest_metrics"] == {"temp_c": 22, "rssi": -70, "hum": 40, "pressure": 1013}
    assert (state["last_seq"], state["last_message_ts"]) == (4, t0 + timedelta(minutes=4))


async def test_device_state_takes_the_newest_of_a_batch_by_time_then_arrival(engine: AsyncEngine,
                                                                           pipeline: IngestPipeline) -> None:
    tenant, dev, token = await registered(engine)
    t0 = now().replace(microsecond=0) - timedelta(minutes=10)
    at = [(t0 + timedelta(minutes=m)).isoformat() for m in range(3)]
    batch = [
        {"seq": 10, "ts": at[2], "metrics": {"temp_c": 30}, "lat": 50.0, "lng": 8.0},
        {"seq": 11, "ts": at[2], "metrics": {"temp_c": 31}},  # same time, arrived later: it is the newest
        {"seq": 9, "ts": at[1], "metrics": {"temp_c": 29, "hum": 41}, "lat": 40.0, "lng": 7.0},
    ]
    result = await ingest_http_batch(pipeline, batch_body(tenant.tenant_id, dev, token, batch), now())
    assert [r.accepted for r in result.results] == [True, True, True]
    state = (await sql(engine, "SELECT * FROM device_state WHERE tenant_id = :t", t=tenant.tenant_id))[0]
    assert state["latest_metrics"] == {"temp_c": 31, "hum": 41}
    assert {k: datetime.fromisoformat(v) for k, v in state["latest_metrics_at"].items()} == {
        "temp_c": t0 + timedelta(minutes=2), "hum": t0 + timedelta(minutes=1)}
    assert (state["last_seq"], state["last_message_ts"]) == (11, t0 + timedelta(minutes=2))
    assert (state["lat"], state["lng"]) == (50.0, 8.0)  # the newest message that had a position


def batch_body(tenant_id: str, device_id: str, token: str | None, messages: list[Any]) -> bytes:
    """A /ingest/v1/batch body: each message addressed to the device; `msg_type` may ride in the message."""
    items = []
    for m in messages:
        if not isinstance(m, dict):
            items.append(m)
            continue
        m = dict(m)
        items.append({"tenant_id": m.pop("tenant_id", tenant_id), "device_id": device_id,
                      "msg_type": m.pop("msg_type", "telemetry"), "token": token, "message": m})
    return json.dumps({"messages": items}).encode()


async def test_batch_items_are_checked_one_by_one(engine: AsyncEngine, pipeline: IngestPipeline) -> None:
    tenant, dev, token = await registered(engine)
    other, other_dev, other_token = await registered(engine)
    items = [{"seq": 1, "metrics": {"a": 1}}, {"seq": 2, "tenant_id": other.tenant_id, "metrics": {"a": 2}},
             {"seq": 3, "msg_type": "status"}, {"metrics": {"a": 4}}, "not an object"]
    body_ = json.loads(batch_body(tenant.tenant_id, dev, token, items))
    body_["messages"][1]["device_id"] = other_dev  # the other tenant's device, with this tenant's token
    body_["messages"].append({"tenant_id": other.tenant_id, "device_id": other_dev, "token": other_token,
                              "message": {"seq": 9, "metrics": {"b": 1}}})  # another device in the same batch
    result = await ingest_http_batch(pipeline, json.dumps(body_).encode(), now())
    assert [r.reason for r in result.results] == [None, Reason.TENANT_MISMATCH, Reason.UNSUPPORTED_MSG_TYPE,
                                                  Reason.INVALID_ENVELOPE, Reason.BAD_TOPIC, None]
    assert result.accepted == 2 and result.status == 202
    assert len(await sql(engine, "SELECT 1 FROM telemetry WHERE tenant_id = :t", t=tenant.tenant_id)) == 1
    assert len(await sql(engine, "SELECT 1 FROM telemetry WHERE tenant_id = :t", t=other.tenant_id)) == 1
    await pipeline.flush()
    rows = await quarantine_rows(engine, "tenant_id = :t", t=tenant.tenant_id)
    assert [r["reason"] for r in rows] == ["UNSUPPORTED_MSG_TYPE", "INVALID_ENVELOPE"]
    # Only rejections: the first one decides the status; each item carries its own token.
    result = await ingest_http_batch(pipeline, batch_body(tenant.tenant_id, dev, None, items[:1]), now())
    assert result.status == 401 and result.accepted == 0


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", Reason.INVALID_JSON), (b'{"seq": 1}', Reason.INVALID_ENVELOPE), (b"[]", Reason.INVALID_ENVELOPE),
    (b'{"messages": []}', Reason.INVALID_ENVELOPE),
    (json.dumps({"messages": [{"seq": i} for i in range(501)]}).encode(), Reason.INVALID_ENVELOPE),
    (b'{"messages": [' + b",".join([b'{"message": {"seq": 1, "metrics": {"a": "' + b"x" * 1000 + b'"}}}'] * 4200)
     + b"]}", Reason.PAYLOAD_TOO_LARGE),
])
async def test_unusable_batch_bodies(payload: bytes, reason: Reason, engine: AsyncEngine,
                                     pipeline: IngestPipeline) -> None:
    with pytest.raises(BatchRejected) as exc:
        await ingest_http_batch(pipeline, payload, now())
    assert exc.value.result.reason == reason
    await pipeline.flush()
    rows = await quarantine_rows(engine, "topic = '/ingest/v1/batch' AND reason = :r AND raw_payload LIKE :p",
                                 r=reason, p=payload[:20].decode() + "%")
    assert rows and rows[-1]["tenant_id"] is None


async def test_notify_names_every_device_of_a_batch_in_split_payloads(engine: AsyncEngine,
                                                                      settings: Settings) -> None:
    tenant = await make_tenant(engine)
    prefix = "device-" + "x" * 100
    await sql(engine, "INSERT INTO devices (tenant_id, device_id, subscription_id) "
                      "SELECT :t, :p || i, CAST(:s AS uuid) FROM generate_series(1, 150) i",
              t=tenant.tenant_id, p=prefix, s=tenant.subscription_id)
    listener = await connect_raw(settings.require_database_url())
    notices: list[str] = []
    await listener.add_listener("pulse_telemetry", lambda *args: notices.append(args[3]))
    pipeline = IngestPipeline(engine, settings.replace(ingest_flush_ms=60_000, ingest_batch_size=1000))
    await pipeline.start()
    try:
        for i in range(1, 151):
            verdict, _ = await pipeline.process(InboundMessage(
                "MQTT", f"tenant/{tenant.tenant_id}/device/{prefix}{i}/telemetry", GOOD, now()))
            assert verdict.accepted is not None
        await pipeline.flush()
        mine = lambda: [p for p in notices if tenant.tenant_id in p]  # noqa: E731
        await eventually(lambda: _at_least(mine, 2), what="NOTIFY payloads")
        pairs = {tuple(pair) for p in mine() for pair in json.loads(p)}
        assert pairs == {(tenant.tenant_id, f"{prefix}{i}") for i in range(1, 151)}
        assert all(len(p.encode()) < 8000 for p in mine())
        states = await sql(engine, "SELECT count(*) AS n FROM device_state WHERE tenant_id = :t "
                                   "AND latest_metrics = CAST('{\"temp_c\": 21.5}' AS jsonb)", t=tenant.tenant_id)
        assert states[0]["n"] == 150  # device_state rows are created by the upsert when missing
    finally:
        await pipeline.close()
        await listener.close()


async def _at_least(get: Callable[[], list[str]], n: int) -> bool:
    return len(get()) >= n


async def test_revocation_notify_drops_the_cached_device(engine: AsyncEngine, pipeline: IngestPipeline) -> None:
    tenant, dev, token = await registered(engine)
    # Listening first: when the listener (re)connects it drops the whole cache (it may have missed notifications).
    await eventually(_async(lambda: pipeline.auth.listening), what="LISTEN on pulse_device_changed")
    assert (await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, token, now())).accepted
    assert pipeline.auth.is_cached(tenant.tenant_id, dev)
    await sql(engine, "UPDATE devices SET status = 'REVOKED' WHERE tenant_id = :t AND device_id = :d",
              t=tenant.tenant_id, d=dev)
    # Cached for 60 s: without the notification the device would still be accepted.
    assert (await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, token, now())).accepted
    await sql(engine, "SELECT pg_notify('pulse_device_changed', :p)", p=f"{tenant.tenant_id}/{dev}")
    await eventually(_async(lambda: not pipeline.auth.is_cached(tenant.tenant_id, dev)), what="cache invalidation")
    result = await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, token, now())
    assert result.reason == Reason.DEVICE_REVOKED


async def test_rotated_token_is_refused_after_the_ttl(engine: AsyncEngine, settings: Settings) -> None:
    tenant, dev, token = await registered(engine)
    clock = FrozenClock(now())
    pipeline = IngestPipeline(engine, settings.replace(ingest_flush_ms=20), clock, listen=False)
    await pipeline.start()
    try:
        assert (await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, token, clock.now())).accepted
        await sql(engine, "UPDATE device_credentials SET revoked_at = now() WHERE tenant_id = :t AND device_id = :d",
                  t=tenant.tenant_id, d=dev)
        new_token = await issue_token(engine, tenant.tenant_id, dev)
        clock.advance(30)  # within the TTL the cache still holds the old token list
        assert (await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, token, clock.now())).accepted
        clock.advance(31)
        result = await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, token, clock.now())
        assert result.reason == Reason.TOKEN_INVALID
        assert (await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, new_token,
                                  clock.now())).accepted
    finally:
        await pipeline.close()


async def test_expired_token_is_refused(engine: AsyncEngine, pipeline: IngestPipeline) -> None:
    tenant, dev, token = await registered(engine)
    await sql(engine, "UPDATE device_credentials SET expires_at = now() - interval '1 minute' "
                      "WHERE tenant_id = :t AND device_id = :d", t=tenant.tenant_id, d=dev)
    result = await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, token, now())
    assert result.reason == Reason.TOKEN_INVALID


@pytest.mark.parametrize("payload", [
    b"", b"\x00\x01\x02", b"\xff\xfe{}", b'{"seq": 1, "metrics": {"\\u0000": 1}}', b'{"seq":1,"metrics":{"a":"\\u0000"}}',
    b'{"x": ' + b"[" * 50_000, b'{"seq": 1, "version": "\\u0000", "metrics": {"a": 1}}', b"\x00" * 5000,
])
async def test_hostile_bodies_are_quarantined_with_storable_text(payload: bytes, engine: AsyncEngine,
                                                                 pipeline: IngestPipeline) -> None:
    tenant, dev, token = await registered(engine)
    result = await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", payload, token, now())
    assert result.reason in Reason.__members__.values()
    await pipeline.flush()
    rows = await quarantine_rows(engine, "tenant_id = :t", t=tenant.tenant_id)
    assert len(rows) == 1 and "\x00" not in rows[0]["raw_payload"] and "\x00" not in rows[0]["detail"]
    assert len(rows[0]["raw_payload"].encode()) <= RAW_PAYLOAD_LIMIT * 3  # U+FFFD is 3 bytes in UTF-8


async def test_rows_the_database_refuses_are_quarantined_and_the_rest_commit(engine: AsyncEngine) -> None:
    tenant, dev, _ = await registered(engine)
    writer = BatchWriter(engine, SystemClock(), batch_size=100, flush_ms=60_000)
    writer.start()

    def row(seq: int, value: object) -> Accepted:
        at = now()
        return Accepted(tenant_id=tenant.tenant_id, device_id=dev, site_id=None, msg_type="telemetry", ts=at,
                        seq=seq, metrics={"v": value}, lat=None, lng=None, received_at=at, transport="MQTT")

    try:
        # PostgreSQL's jsonb cannot hold U+0000: validation refuses it, here it reaches the database anyway.
        futures = [await writer.submit(row(i, "bad\x00" if i == 5 else i)) for i in range(10)]
        await writer.flush()
        assert all(f.done() and f.exception() is None for f in futures)
    finally:
        await writer.close()
    seqs = await sql(engine, "SELECT seq FROM telemetry WHERE tenant_id = :t ORDER BY seq", t=tenant.tenant_id)
    assert [s["seq"] for s in seqs] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    rows = await quarantine_rows(engine, "tenant_id = :t", t=tenant.tenant_id)
    assert [(r["reason"], r["device_id"]) for r in rows] == [("INVALID_ENVELOPE", dev)]
    assert "database refused" in rows[0]["detail"]


async def test_unreachable_database_answers_unavailable(engine: AsyncEngine, settings: Settings) -> None:
    tenant, dev, token = await registered(engine)
    host_port = settings.require_database_url().split("@", 1)[1].split("/", 1)[0]
    link = TcpLink(host_port.split(":")[0], int(host_port.split(":")[1]))
    await link.start()
    linked = settings.replace(database_url=link.url_for(settings.require_database_url()), ingest_flush_ms=20)
    linked_engine = create_engine(linked.require_database_url(), pool_size=2)
    pipeline = IngestPipeline(linked_engine, linked, listen=False)
    await pipeline.start()
    try:
        link.cut()
        with pytest.raises(IngestUnavailable) as info:
            await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, token, now())
        assert info.value.status == 503
        assert not (await pipeline.ready_check())[0]
        link.restore()
        result = await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", GOOD, token, now())
        assert result.accepted
        assert (await pipeline.ready_check())[0]
    finally:
        await pipeline.close()
        await linked_engine.dispose()
        await link.close()


def _async(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        await asyncio.sleep(0)
        return fn()
    return probe


async def test_a_redelivered_message_is_stored_once(engine: AsyncEngine, pipeline: IngestPipeline) -> None:
    tenant, dev, token = await registered(engine)
    ts = now().replace(microsecond=0).isoformat()
    message = body(seq=42, ts=ts, metrics={"temp_c": 3.5})
    for _ in range(2):  # e.g. committed, then the PUBACK was lost and the broker sent it again
        assert (await ingest_http(pipeline, tenant.tenant_id, dev, "telemetry", message, token, now())).accepted
    heartbeat = body(seq=42, ts=ts)
    assert (await ingest_http(pipeline, tenant.tenant_id, dev, "heartbeat", heartbeat, token, now())).accepted
    rows = await sql(engine, "SELECT msg_type, seq FROM telemetry WHERE tenant_id = :t ORDER BY msg_type",
                     t=tenant.tenant_id)
    assert [(r["msg_type"], r["seq"]) for r in rows] == [("heartbeat", 42), ("telemetry", 42)]


async def test_a_starting_pipeline_warms_the_registry_cache(engine: AsyncEngine, pipeline: IngestPipeline) -> None:
    """Registered devices are checked without waiting for a registry read: before a worker takes traffic it
    loads the records of the most recently active devices in bulk."""
    tenant, dev, _token = await registered(engine)
    await sql(engine, "INSERT INTO device_state (tenant_id, device_id, last_seen_at) VALUES (:t, :d, now()) "
                      "ON CONFLICT (tenant_id, device_id) DO UPDATE SET last_seen_at = now()",
              t=tenant.tenant_id, d=dev)
    assert pipeline.auth.cached_device(tenant.tenant_id, dev) is None
    await pipeline.prepare()
    record = pipeline.auth.cached_device(tenant.tenant_id, dev)
    assert record is not None and record.device_status == "ACTIVE"
