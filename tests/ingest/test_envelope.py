"""The wire format without I/O: topics, envelope decoding edge cases, limits, the reason order, NOTIFY splitting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.ingest.envelope import (
    MAX_METRICS,
    MAX_PAYLOAD_BYTES,
    REASON_ORDER,
    Reason,
    Rejected,
    Topic,
    check_metrics,
    check_msg_type,
    check_size,
    decode_envelope,
    message_time,
    parse_topic,
)
from pulse.ingest.service import status_for
from pulse.ingest.validate import Accepted, RateLimiter
from pulse.ingest.writer import NOTIFY_PAYLOAD_LIMIT, distinct_devices, notify_payloads

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TELEMETRY = Topic("acme", "dev-1", "telemetry")
HEARTBEAT = Topic("acme", "dev-1", "heartbeat")


def reason_of(fn: object, *args: object) -> Reason | None:
    try:
        fn(*args)  # type: ignore[operator]
    except Rejected as exc:
        return exc.reason
    return None


def test_reason_codes_are_stable_and_in_the_documented_order() -> None:
    assert [r.value for r in REASON_ORDER] == [
        "PAYLOAD_TOO_LARGE", "BAD_TOPIC", "INVALID_JSON", "INVALID_ENVELOPE", "UNSUPPORTED_MSG_TYPE",
        "RATE_LIMITED", "TENANT_MISMATCH", "UNREGISTERED_DEVICE", "DEVICE_REVOKED", "SUBSCRIPTION_SUSPENDED",
        "SUBSCRIPTION_EXPIRED", "SITE_MISMATCH", "TOKEN_MISSING", "TOKEN_INVALID", "TOO_MANY_METRICS",
        "METRIC_KEY_INVALID"]


@pytest.mark.parametrize("topic", [
    "tenant/acme/device/dev-1/telemetry", "tenant/a1/device/A.b_c:d-e/heartbeat", "tenant/acme/device/x/status",
])
def test_topics_that_parse(topic: str) -> None:
    parsed = parse_topic(topic)
    assert str(parsed) == topic


@pytest.mark.parametrize("topic", [
    "tenant/acme/device/dev-1", "tenant/acme/device/dev-1/telemetry/extra", "tenants/acme/device/d/telemetry",
    "tenant/acme/devices/d/telemetry", "tenant/ACME/device/d/telemetry", "tenant/a/device/d/telemetry",
    "tenant//device/d/telemetry", "tenant/acme/device//telemetry", "tenant/acme/device/d e/telemetry",
    "tenant/acme/device/" + "d" * 129 + "/telemetry", "tenant/acme/device/d/", "", b"tenant/\xff/device/d/x",
])
def test_bad_topics(topic: str | bytes) -> None:
    assert reason_of(parse_topic, topic) == Reason.BAD_TOPIC


def test_payload_limit_is_64_kib() -> None:
    assert reason_of(check_size, b"x" * MAX_PAYLOAD_BYTES) is None
    assert reason_of(check_size, b"x" * (MAX_PAYLOAD_BYTES + 1)) == Reason.PAYLOAD_TOO_LARGE


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", Reason.INVALID_JSON),
    (b"not json", Reason.INVALID_JSON),
    (b'{"seq": 1', Reason.INVALID_JSON),
    (b"\xef\xbb\xbf{\"seq\": 1, \"metrics\": {\"a\": 1}}", Reason.INVALID_JSON),  # a BOM is not JSON
    (b'{"seq": 1, "metrics": {"a": "\xff"}}', Reason.INVALID_JSON),  # invalid UTF-8
    (b'{"seq": 1, "metrics": {"a": "\\ud800"}}', Reason.INVALID_JSON),  # lone surrogate
    (b'{"x": ' + b"[" * 100_000, Reason.INVALID_JSON),
    (b"[" * 100_000, Reason.INVALID_ENVELOPE),  # not an object: the first token already says so
    (b"[]", Reason.INVALID_ENVELOPE),
    (b"42", Reason.INVALID_ENVELOPE),
    (b'{"metrics": {"a": 1}}', Reason.INVALID_ENVELOPE),  # seq is required
    (b'{"seq": -1, "metrics": {"a": 1}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1.5, "metrics": {"a": 1}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 9223372036854775808, "metrics": {"a": 1}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": "1", "metrics": {"a": 1}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "version": "2", "metrics": {"a": 1}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "ts": "yesterday", "metrics": {"a": 1}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "ts": "2026-11-23", "metrics": {"a": 1}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": null}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": [1]}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": {"b": 1}}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": 1e400}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": "x\\u0000y"}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": "' + b"x" * 1025 + b'"}}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": []}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {}}', Reason.INVALID_ENVELOPE),  # telemetry needs a metric
    (b'{"seq": 1}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": 1}, "lat": 91, "lng": 0}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": 1}, "lat": 10}', Reason.INVALID_ENVELOPE),  # lat without lng
    (b'{"seq": 1, "metrics": {"a": 1}, "device_id": "other"}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": 1}, "msg_type": "heartbeat"}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": 1}, "site_id": 7}', Reason.INVALID_ENVELOPE),
    (b'{"seq": 1, "metrics": {"a": 1.5, "b": true, "c": "on", "d": -3}}', None),
    (b'{"seq": 0, "metrics": {"a": 1}, "unknown_field": {"x": [1, 2]}}', None),  # newer firmware
    (b'{"seq": 9223372036854775807, "metrics": {"a": 1}, "lat": -90, "lng": 180}', None),
])
def test_envelope_decoding(payload: bytes, reason: Reason | None) -> None:
    assert reason_of(decode_envelope, payload, TELEMETRY) == reason


@pytest.mark.parametrize("payload", [b'{"seq": 1}', b'{"seq": 1, "metrics": {}}', b'{"seq": 1, "metrics": null}',
                                     b'{"version": "1", "seq": 5, "ts": "2026-11-23T11:59:00Z"}'])
def test_heartbeats_may_have_no_metrics(payload: bytes) -> None:
    envelope = decode_envelope(payload, HEARTBEAT)
    assert not envelope.metrics


def test_unsupported_message_type() -> None:
    assert reason_of(check_msg_type, Topic("acme", "d", "status")) == Reason.UNSUPPORTED_MSG_TYPE
    assert reason_of(check_msg_type, TELEMETRY) is None
    assert reason_of(check_msg_type, HEARTBEAT) is None


@pytest.mark.parametrize(("ts", "expected"), [
    (None, NOW),
    ("2026-11-23T11:00:00", datetime(2026, 11, 23, 11, 0, tzinfo=UTC)),  # naive means UTC
    ("2026-11-23T13:30:00+02:00", datetime(2026, 11, 23, 11, 30, tzinfo=UTC)),
    ("2026-11-23 11:00:00.250Z", datetime(2026, 11, 23, 11, 0, 0, 250000, tzinfo=UTC)),
    ("2026-11-24T12:00:00Z", datetime(2026, 11, 24, 12, 0, tzinfo=UTC)),  # exactly one day ahead is fine
])
def test_message_time(ts: str | None, expected: datetime) -> None:
    envelope = decode_envelope(body_with(ts), TELEMETRY)
    got = message_time(envelope, NOW, retention_days=90)
    assert got == expected and got.tzinfo is not None and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize(("ts", "words"), [("2026-11-24T12:00:01Z", "ahead"), ("2026-08-24T11:59:59Z", "retention")])
def test_message_time_window(ts: str, words: str) -> None:
    envelope = decode_envelope(body_with(ts), TELEMETRY)
    with pytest.raises(Rejected) as info:
        message_time(envelope, NOW, retention_days=90)
    assert info.value.reason == Reason.INVALID_ENVELOPE and words in info.value.detail


def body_with(ts: str | None) -> bytes:
    fields: dict[str, object] = {"seq": 1, "metrics": {"t": 20}}
    if ts is not None:
        fields["ts"] = ts
    return msgspec.json.encode(fields)


@pytest.mark.parametrize(("metrics", "reason"), [
    ({f"m{i}": i for i in range(MAX_METRICS)}, None),
    ({f"m{i}": i for i in range(MAX_METRICS + 1)}, Reason.TOO_MANY_METRICS),
    ({"k" * 128: 1}, None),
    ({"k" * 129: 1}, Reason.METRIC_KEY_INVALID),
    ({"": 1}, Reason.METRIC_KEY_INVALID),
    ({"temp\n": 1}, Reason.METRIC_KEY_INVALID),
    ({"a\x00b": 1}, Reason.METRIC_KEY_INVALID),
    ({"a\x7fb": 1}, Reason.METRIC_KEY_INVALID),
    ({"température °C": 1, "a.b/c d": 2}, None),
])
def test_metric_limits(metrics: dict[str, int], reason: Reason | None) -> None:
    assert reason_of(check_metrics, metrics) == reason


def pipeline_reasons(payload: bytes, topic: str | bytes) -> Reason | None:
    """Every pure check in the documented order, as validate_message runs them."""
    try:
        check_size(payload)
        parsed = parse_topic(topic)
        envelope = decode_envelope(payload, parsed)
        check_msg_type(parsed)
        message_time(envelope, NOW, retention_days=90)
        check_metrics(envelope.metrics or {})
    except Rejected as exc:
        return exc.reason
    return None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048),
       st.one_of(st.just("tenant/acme/device/dev-1/telemetry"), st.just("tenant/acme/device/dev-1/heartbeat"),
                 st.text(max_size=60), st.binary(max_size=60)))
def test_any_bytes_get_a_verdict_never_an_exception(payload: bytes, topic: str | bytes) -> None:
    assert pipeline_reasons(payload, topic) in (*REASON_ORDER, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["seq", "ts", "version", "site_id", "metrics", "lat", "lng", "tenant_id",
                                        "device_id", "msg_type", "other"]), json_values, max_size=8))
def test_any_json_object_gets_a_verdict(fields: dict[str, object]) -> None:
    payload = json.dumps(fields).encode()
    assert pipeline_reasons(payload, "tenant/acme/device/dev-1/telemetry") in (*REASON_ORDER, None)


metric_values = (st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
                 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50).filter(lambda s: "\0" not in s))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda k: k.isprintable()), metric_values,
                       min_size=1, max_size=20),
       st.integers(min_value=0, max_value=2**63 - 1))
def test_valid_envelopes_keep_their_values(metrics: dict[str, object], seq: int) -> None:
    payload = msgspec.json.encode({"version": "1", "seq": seq, "metrics": metrics})
    envelope = decode_envelope(payload, TELEMETRY)
    assert pipeline_reasons(payload, str(TELEMETRY)) is None
    assert envelope.seq == seq
    assert envelope.metrics == metrics
    assert {k: type(v) for k, v in (envelope.metrics or {}).items()} == {k: type(v) for k, v in metrics.items()}


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=2, burst=3)
    key = ("acme", "d")
    assert [limiter.allow(key, 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(key, 0.4) is False  # 0.8 of a token
    assert limiter.allow(key, 0.5) is True
    assert limiter.allow(("acme", "other"), 0.5) is True  # buckets are per device
    assert [limiter.allow(key, 100.0) for _ in range(4)] == [True, True, True, False]  # refills only to the burst


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=2, max_buckets=100)
    for i in range(10_000):
        assert limiter.allow(("acme", f"d{i}"), float(i))
    assert len(limiter._buckets) <= 100


@pytest.mark.parametrize(("reason", "status"), [
    (None, 202), ("PAYLOAD_TOO_LARGE", 413), ("BAD_TOPIC", 400), ("INVALID_JSON", 400), ("INVALID_ENVELOPE", 400),
    ("UNSUPPORTED_MSG_TYPE", 400), ("RATE_LIMITED", 429), ("TENANT_MISMATCH", 403), ("UNREGISTERED_DEVICE", 403),
    ("DEVICE_REVOKED", 403), ("SUBSCRIPTION_SUSPENDED", 403), ("SUBSCRIPTION_EXPIRED", 403), ("SITE_MISMATCH", 400),
    ("TOKEN_MISSING", 401), ("TOKEN_INVALID", 401), ("TOO_MANY_METRICS", 400), ("METRIC_KEY_INVALID", 400),
])
def test_http_status_for_each_reason(reason: str | None, status: int) -> None:
    assert status_for(reason) == status


def test_notify_payloads_split_under_the_postgres_limit() -> None:
    rows = [Accepted(tenant_id="acme", device_id=f"device-{i:04d}-" + "x" * 100, site_id=None, msg_type="telemetry",
                     ts=NOW, seq=i, metrics={"a": 1}, lat=None, lng=None, received_at=NOW, transport="MQTT")
            for i in range(300)]
    rows += rows[:10]  # a device twice in a batch is named once
    payloads = notify_payloads(distinct_devices(rows))
    assert len(payloads) > 1
    assert all(len(p.encode()) <= NOTIFY_PAYLOAD_LIMIT for p in payloads)
    pairs = [tuple(pair) for p in payloads for pair in json.loads(p)]
    assert pairs == [("acme", f"device-{i:04d}-" + "x" * 100) for i in range(300)]
    assert notify_payloads(distinct_devices(rows[:1])) == [json.dumps([["acme", rows[0].device_id]], separators=(",", ":"))]


async def test_auth_cache_shares_one_load_and_survives_a_cancelled_waiter() -> None:
    import asyncio

    from pulse.ingest.auth import _TtlCache

    now = [0.0]
    cache: _TtlCache[str, int] = _TtlCache(ttl_s=60, max_entries=2, monotonic=lambda: now[0])
    loads = 0
    release = asyncio.Event()

    async def load() -> int:
        nonlocal loads
        loads += 1
        await release.wait()
        return loads

    first = asyncio.ensure_future(cache.get("k", load))
    second = asyncio.ensure_future(cache.get("k", load))
    await asyncio.sleep(0)
    first.cancel()  # e.g. an HTTP client that went away
    release.set()
    assert await second == 1 and loads == 1
    assert await cache.get("k", load) == 1  # cached
    now[0] = 61.0
    assert await cache.get("k", load) == 2  # expired after the TTL
    for key in ("a", "b", "c"):
        await cache.get(key, load)
    assert "k" not in cache and "a" not in cache and "c" in cache  # bounded: least recently used go first
