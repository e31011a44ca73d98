"""Property-based fuzzing of the device input decoder (pulse.ingest.envelope) and the full check sequence
(pulse.ingest.validate.check_message), without I/O.

What must hold for any input:
- arbitrary bytes on any topic, over MQTT or HTTP, get a verdict: accepted, or exactly one documented reason code
  with a storable detail — never an exception;
- a valid envelope with one field made wrong (wrong type, out of range, too long, inconsistent with the topic or
  the registry) is refused with exactly the reason that field's check documents;
- with two faults, the one checked first in the documented order is reported;
- whatever is accepted is within every documented limit (seq, metrics, keys, strings, time window, position);
- the per-device rate limiter never lets more than burst + rate x elapsed messages through.

tests/ingest/test_envelope.py holds the hand-picked examples; this file searches the space around them.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulse.crypto import hash_token
from pulse.ingest.auth import DeviceRecord
from pulse.ingest.envelope import (
    MAX_METRIC_KEY_CHARS,
    MAX_METRIC_STRING_CHARS,
    MAX_METRICS,
    MAX_PAYLOAD_BYTES,
    MAX_SEQ,
    REASON_ORDER,
    Reason,
    Rejected,
    parse_topic,
)
from pulse.ingest.validate import InboundMessage, RateLimiter, Verdict, check_message

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RETENTION_DAYS = 90
TENANT, DEVICE, SITE = "acme", "dev-1", "plant-1"
TOKEN = "pt_fuzz-token-0123456789"
RECORD = DeviceRecord(tenant_id=TENANT, device_id=DEVICE, tenant_status="ACTIVE", device_status="ACTIVE",
                      site_id=SITE, has_subscription=True, subscription_status="ACTIVE",
                      tokens=((hash_token(TOKEN), None),))
TELEMETRY = f"tenant/{TENANT}/device/{DEVICE}/telemetry"
HEARTBEAT = f"tenant/{TENANT}/device/{DEVICE}/heartbeat"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def verdict(payload: bytes, topic: str | bytes = TELEMETRY, *, transport: str = "MQTT",
            token: str | None = None) -> Verdict:
    """check_message exactly as the pipeline calls it, with the registry record of the topic's device."""
    parsed, bad = None, None
    try:
        parsed = parse_topic(topic)
    except Rejected as exc:
        bad = exc
    record = None
    if parsed is not None:
        known = (parsed.tenant_id, parsed.device_id) == (TENANT, DEVICE)
        record = RECORD if known else DeviceRecord(parsed.tenant_id, parsed.device_id, None, None, None, False, None,
                                                   ())
    message = InboundMessage(transport, topic, payload, NOW, token)  # type: ignore[arg-type]
    return check_message(message, parsed, bad, record, limiter=RateLimiter(1e9, 1e9),
                         retention_days=RETENTION_DAYS, monotonic=0.0)


def assert_well_formed(v: Verdict) -> None:
    assert (v.accepted is None) == (v.reason is not None)
    if v.reason is not None:
        assert v.reason in REASON_ORDER
        assert isinstance(v.detail, str) and v.detail


# --- any bytes, any topic -----------------------------------------------------------------------------------------

ids = st.text(alphabet=string.ascii_letters + string.digits + "-._:/ +#$\x00é", max_size=70)
topics = st.one_of(
    st.sampled_from([TELEMETRY, HEARTBEAT, f"tenant/{TENANT}/device/{DEVICE}/status"]),
    st.builds(lambda t, d, m: f"tenant/{t}/device/{d}/{m}", ids, ids, st.sampled_from(
        ["telemetry", "heartbeat", "", "TELEMETRY", "command/x"])),
    st.text(max_size=120),
    st.binary(max_size=120),
)


@FUZZ
@given(st.binary(max_size=4096), topics, st.sampled_from(["MQTT", "HTTP"]),
       st.sampled_from([None, TOKEN, "pt_wrong", "", "\x00"]))
def test_any_bytes_on_any_topic_get_a_documented_verdict(payload: bytes, topic: str | bytes, transport: str,
                                                         token: str | None) -> None:
    v = verdict(payload, topic, transport=transport, token=token)
    assert_well_formed(v)
    if v.accepted is not None:
        assert (v.accepted.tenant_id, v.accepted.device_id) == (TENANT, DEVICE)
        assert transport == "MQTT" or token == TOKEN


def test_oversized_bodies_are_refused_before_they_are_read() -> None:
    good = {"version": "1", "seq": 1, "metrics": {"blob": "x" * 1000}}
    padding = MAX_PAYLOAD_BYTES - len(msgspec.json.encode(good)) + 1
    assert verdict(msgspec.json.encode(good) + b" " * (padding - 1)).reason is None  # exactly 64 KiB: fine
    assert verdict(msgspec.json.encode(good) + b" " * padding).reason == Reason.PAYLOAD_TOO_LARGE
    assert verdict(b"{" * (MAX_PAYLOAD_BYTES + 1), b"\xff").reason == Reason.PAYLOAD_TOO_LARGE  # size comes first


# --- one field made wrong -----------------------------------------------------------------------------------------

def base_envelope() -> dict[str, Any]:
    return {"version": "1", "seq": 7, "ts": "2026-11-23T11:59:00.000Z", "site_id": SITE,
            "metrics": {"temp_c": 21.5, "door_open": False, "state": "ok", "count": 3}}


not_int = st.one_of(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
                    st.text(max_size=5), st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
not_scalar = st.one_of(st.none(), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                      st.integers(), max_size=2))
bad_time_text = st.text(max_size=30).filter(lambda s: _not_rfc3339(s))
out_of_window = st.one_of(
    st.timedeltas(min_value=timedelta(days=1, seconds=1), max_value=timedelta(days=3000)).map(lambda d: NOW + d),
    st.timedeltas(min_value=timedelta(days=RETENTION_DAYS, seconds=1), max_value=timedelta(days=3000))
    .map(lambda d: NOW - d))
control_chars = st.sampled_from([chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]])


def _not_rfc3339(text: str) -> bool:
    try:
        msgspec.json.decode(json.dumps(text).encode(), type=datetime)
    except msgspec.ValidationError:
        return True
    return False


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


# (name, strategy of a change to the base envelope, expected reason). Each change breaks exactly one check.
MUTATIONS: list[tuple[str, st.SearchStrategy[Any], Reason]] = [
    ("seq missing", st.just(("del", "seq")), Reason.INVALID_ENVELOPE),
    ("seq negative", st.integers(max_value=-1).map(lambda v: ("set", "seq", v)), Reason.INVALID_ENVELOPE),
    ("seq too large", st.integers(min_value=MAX_SEQ + 1, max_value=2**80).map(lambda v: ("set", "seq", v)),
     Reason.INVALID_ENVELOPE),
    ("seq not an integer", not_int.map(lambda v: ("set", "seq", v)), Reason.INVALID_ENVELOPE),
    ("version not 1", st.one_of(st.text(max_size=4).filter(lambda s: s != "1"), st.integers(), st.booleans())
     .map(lambda v: ("set", "version", v)), Reason.INVALID_ENVELOPE),
    ("ts unreadable", st.one_of(bad_time_text, st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                                st.booleans())
     .map(lambda v: ("set", "ts", v)), Reason.INVALID_ENVELOPE),
    ("ts outside the window", out_of_window.map(lambda v: ("set", "ts", _iso(v))), Reason.INVALID_ENVELOPE),
    ("metrics not an object", st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=5), st.integers(),
                                        st.booleans()).map(lambda v: ("set", "metrics", v)),
     Reason.INVALID_ENVELOPE),
    ("metrics empty", st.one_of(st.just({}), st.none()).map(lambda v: ("set", "metrics", v)),
     Reason.INVALID_ENVELOPE),
    ("metric value not a scalar", not_scalar.map(lambda v: ("metric", "bad", v)), Reason.INVALID_ENVELOPE),
    ("metric number out of range", st.sampled_from(["1e400", "-1e400", "1E999"]).map(lambda v: ("raw_metric", v)),
     Reason.INVALID_ENVELOPE),
    ("metric string too long", st.integers(MAX_METRIC_STRING_CHARS + 1, 5000).map(
        lambda n: ("metric", "note", "x" * n)), Reason.INVALID_ENVELOPE),
    ("metric string with NUL", st.text(max_size=10).map(lambda s: ("metric", "note", s + "\x00")),
     Reason.INVALID_ENVELOPE),
    ("too many metrics", st.integers(MAX_METRICS + 1, 400).map(lambda n: ("metrics_n", n)),
     Reason.TOO_MANY_METRICS),
    ("metric key empty", st.just(("metric", "", 1)), Reason.METRIC_KEY_INVALID),
    ("metric key too long", st.integers(MAX_METRIC_KEY_CHARS + 1, 600).map(lambda n: ("metric", "k" * n, 1)),
     Reason.METRIC_KEY_INVALID),
    ("metric key with a control character", st.tuples(st.text(max_size=5), control_chars).map(
        lambda p: ("metric", p[0] + p[1], 1)), Reason.METRIC_KEY_INVALID),
    ("lat out of range", st.floats(min_value=90.0001, max_value=1e300).map(lambda v: ("pos", v, 0.0)),
     Reason.INVALID_ENVELOPE),
    ("lng out of range", st.floats(min_value=180.0001, max_value=1e300).map(lambda v: ("pos", 0.0, -v)),
     Reason.INVALID_ENVELOPE),
    ("lat without lng", st.floats(-90, 90).map(lambda v: ("set", "lat", v)), Reason.INVALID_ENVELOPE),
    ("position not numbers", st.text(max_size=5).map(lambda v: ("pos", v, v)), Reason.INVALID_ENVELOPE),
    ("tenant_id of another tenant", st.text(min_size=1, max_size=40).filter(lambda s: s != TENANT and "\x00" not in s)
     .map(lambda v: ("set", "tenant_id", v)), Reason.TENANT_MISMATCH),
    ("device_id of another device", st.text(max_size=40).filter(lambda s: s != DEVICE)
     .map(lambda v: ("set", "device_id", v)), Reason.INVALID_ENVELOPE),
    ("msg_type other than the topic's", st.text(max_size=20).filter(lambda s: s != "telemetry")
     .map(lambda v: ("set", "msg_type", v)), Reason.INVALID_ENVELOPE),
    ("site_id of another site", st.text(max_size=40).filter(lambda s: s != SITE and "\x00" not in s)
     .map(lambda v: ("set", "site_id", v)), Reason.SITE_MISMATCH),
    ("site_id with NUL", st.text(max_size=10).map(lambda s: ("set", "site_id", s + "\x00")),
     Reason.INVALID_ENVELOPE),
    ("ids not strings", st.tuples(st.sampled_from(["site_id", "tenant_id", "device_id", "msg_type"]),
                                  st.one_of(st.integers(), st.booleans(), st.lists(st.text(max_size=2), max_size=2)))
     .map(lambda p: ("set", p[0], p[1])), Reason.INVALID_ENVELOPE),
    ("not an object", st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=5), st.integers(), st.none())
     .map(lambda v: ("replace", v)), Reason.INVALID_ENVELOPE),
    ("truncated", st.floats(0.0, 0.999).map(lambda f: ("truncate", f)), Reason.INVALID_JSON),
    ("invalid UTF-8 inside a string", st.binary(min_size=1, max_size=4).filter(_not_utf8)
     .map(lambda b: ("bytes_in_string", b)), Reason.INVALID_JSON),
]


def apply(change: tuple[Any, ...], fields: dict[str, Any]) -> bytes:
    """The base envelope with one change, encoded as a device would send it."""
    kind = change[0]
    if kind == "del":
        fields.pop(change[1])
    elif kind == "set":
        fields[change[1]] = change[2]
    elif kind == "metric":
        fields["metrics"][change[1]] = change[2]
    elif kind == "metrics_n":
        fields["metrics"] = {f"m{i}": i for i in range(change[1])}
    elif kind == "pos":
        fields["lat"], fields["lng"] = change[1], change[2]
    elif kind == "replace":
        return json.dumps(change[1]).encode()
    elif kind == "raw_metric":
        return json.dumps(fields).encode()[:-2] + f', "huge": {change[1]}}}}}'.encode()
    elif kind == "truncate":
        whole = json.dumps(fields).encode()
        return whole[: int(len(whole) * change[1])]
    elif kind == "bytes_in_string":
        return json.dumps(fields).encode().replace(b'"ok"', b'"o' + change[1] + b'k"')
    return json.dumps(fields).encode()


def touched(change: tuple[Any, ...]) -> set[str]:
    """The top-level envelope fields a change writes."""
    kind = change[0]
    if kind in ("del", "set"):
        return {change[1]}
    if kind == "pos":
        return {"lat", "lng"}
    return {"metrics"}


@st.composite
def one_mutation(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], Reason]:
    name, strategy, reason = draw(st.sampled_from(MUTATIONS))
    return name, draw(strategy), reason


def test_the_base_envelope_is_accepted() -> None:
    v = verdict(apply(("noop",), base_envelope()))
    assert v.reason is None, v.detail


@FUZZ
@given(one_mutation(), st.sampled_from(["MQTT", "HTTP"]))
def test_one_wrong_field_gets_its_documented_reason(mutation: tuple[str, tuple[Any, ...], Reason],
                                                    transport: str) -> None:
    name, change, expected = mutation
    v = verdict(apply(change, base_envelope()), transport=transport, token=TOKEN if transport == "HTTP" else None)
    assert_well_formed(v)
    assert v.reason == expected, (name, change, v.detail)


@FUZZ
@given(one_mutation(), one_mutation())
def test_with_two_wrong_fields_the_earlier_check_is_reported(first: tuple[str, tuple[Any, ...], Reason],
                                                             second: tuple[str, tuple[Any, ...], Reason]) -> None:
    structural = {"replace", "truncate", "bytes_in_string", "raw_metric", "metrics_n"}
    changes = (first[1], second[1])
    if any(c[0] in structural for c in changes):
        return  # these rewrite the whole body: one change only
    if touched(first[1]) & touched(second[1]):
        return  # the second change would undo or overwrite the first
    fields = base_envelope()
    apply(first[1], fields)
    v = verdict(apply(second[1], fields))
    assert_well_formed(v)
    earliest = min(first[2], second[2], key=REASON_ORDER.index)
    assert v.reason == earliest, (first[0], second[0], v.reason, v.detail)


# --- what is accepted is within the limits ------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=10)
field_values = {
    "seq": st.one_of(st.integers(min_value=-5, max_value=MAX_SEQ + 5), json_values),
    "version": st.one_of(st.just("1"), json_values),
    "ts": st.one_of(st.datetimes(timezones=st.just(UTC)).map(_iso), st.datetimes().map(datetime.isoformat),
                    json_values),
    "site_id": st.one_of(st.just(SITE), json_values),
    "tenant_id": st.one_of(st.just(TENANT), json_values),
    "device_id": st.one_of(st.just(DEVICE), json_values),
    "msg_type": st.one_of(st.just("telemetry"), json_values),
    "metrics": st.one_of(st.dictionaries(st.text(max_size=10), json_scalars, max_size=8), json_values),
    "lat": st.one_of(st.floats(-100, 100), json_values),
    "lng": st.one_of(st.floats(-200, 200), json_values),
    "firmware": json_values,
}


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.sets(st.sampled_from(sorted(field_values)), max_size=len(field_values)))
    return {k: draw(field_values[k]) for k in keys}


@FUZZ
@given(envelopes(), st.sampled_from([TELEMETRY, HEARTBEAT]))
def test_whatever_is_accepted_is_within_every_limit(fields: dict[str, Any], topic: str) -> None:
    v = verdict(json.dumps(fields).encode(), topic)
    assert_well_formed(v)
    a = v.accepted
    if a is None:
        return
    assert (a.tenant_id, a.device_id, a.site_id) == (TENANT, DEVICE, SITE)
    assert a.msg_type == topic.rsplit("/", 1)[1]
    assert 0 <= a.seq <= MAX_SEQ and type(a.seq) is int
    assert NOW - timedelta(days=RETENTION_DAYS) <= a.ts <= NOW + timedelta(days=1) and a.ts.utcoffset() == timedelta(0)
    assert (a.lat is None) == (a.lng is None)
    if a.lat is not None and a.lng is not None:
        assert -90 <= a.lat <= 90 and -180 <= a.lng <= 180
    assert len(a.metrics) <= MAX_METRICS and (a.msg_type != "telemetry" or a.metrics)
    for key, value in a.metrics.items():
        assert 0 < len(key) <= MAX_METRIC_KEY_CHARS
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in key)
        assert type(value) in (bool, int, float, str)
        if isinstance(value, str):
            assert len(value) <= MAX_METRIC_STRING_CHARS and "\x00" not in value
        if isinstance(value, float):
            assert value == value and abs(value) != float("inf")
    msgspec.json.encode(a.metrics)  # what the writer stores: always encodable


# --- the rate limiter ---------------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.floats(0.5, 200), st.integers(1, 50), st.lists(st.floats(0, 0.5), min_size=1, max_size=300))
def test_the_rate_limiter_never_lets_more_than_burst_plus_rate_through(rate: float, burst: int,
                                                                        gaps: list[float]) -> None:
    limiter = RateLimiter(rate, burst)
    now, allowed = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.allow(("acme", "dev-1"), now):
            allowed.append(now)
    for i, start in enumerate(allowed):  # any window [start, t] lets at most burst + rate * (t - start) through
        for j in range(i, len(allowed)):
            assert j - i + 1 <= burst + rate * (allowed[j] - start) + 1e-6
