"""The device wire format: topics, the JSON envelope, limits and the stable quarantine reasons (pure, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

import msgspec

MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest accepted message body (MQTT payload or HTTP body of one message)."""
MAX_METRICS = 100
MAX_METRIC_KEY_CHARS = 128
MAX_METRIC_STRING_CHARS = 1024
MAX_SEQ = 2**63 - 1
MAX_FUTURE = timedelta(days=1)
MSG_TYPES = frozenset({"telemetry", "heartbeat"})
TOPIC_FILTER = "tenant/+/device/+/+"

_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Reason(StrEnum):
    """Why a message was quarantined. Stable codes, declared in the order they are checked."""

    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    BAD_TOPIC = "BAD_TOPIC"
    INVALID_JSON = "INVALID_JSON"
    INVALID_ENVELOPE = "INVALID_ENVELOPE"
    UNSUPPORTED_MSG_TYPE = "UNSUPPORTED_MSG_TYPE"
    RATE_LIMITED = "RATE_LIMITED"
    TENANT_MISMATCH = "TENANT_MISMATCH"
    UNREGISTERED_DEVICE = "UNREGISTERED_DEVICE"
    DEVICE_REVOKED = "DEVICE_REVOKED"
    SUBSCRIPTION_SUSPENDED = "SUBSCRIPTION_SUSPENDED"
    SUBSCRIPTION_EXPIRED = "SUBSCRIPTION_EXPIRED"
    SITE_MISMATCH = "SITE_MISMATCH"
    TOKEN_MISSING = "TOKEN_MISSING"  # noqa: S105 - a reason code
    TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105 - a reason code
    TOO_MANY_METRICS = "TOO_MANY_METRICS"
    METRIC_KEY_INVALID = "METRIC_KEY_INVALID"


REASON_ORDER: tuple[Reason, ...] = tuple(Reason)


class Rejected(Exception):
    """A message failed one check; `reason` is its stable code, `detail` says what to fix."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Topic:
    """Where a message claims to come from: `tenant/{tenant_id}/device/{device_id}/{msg_type}`."""

    tenant_id: str
    device_id: str
    msg_type: str

    def __str__(self) -> str:
        return f"tenant/{self.tenant_id}/device/{self.device_id}/{self.msg_type}"


class Envelope(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One message body. Unknown fields are ignored so devices can run newer firmware than the server."""

    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
    version: Literal["1"] | None = None
    ts: datetime | None = None
    site_id: str | None = None
    tenant_id: str | None = None
    device_id: str | None = None
    msg_type: str | None = None
    metrics: dict[str, bool | int | float | str] | None = None
    lat: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)] | None = None
    lng: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)] | None = None


_DECODER = msgspec.json.Decoder(Envelope)


def parse_topic(topic: str | bytes) -> Topic:
    """Split an MQTT topic (or the equivalent HTTP path) into its ids; raise BAD_TOPIC when it has another shape.

    The message type is not checked here: an unknown type is UNSUPPORTED_MSG_TYPE, reported after the body.
    """
    if isinstance(topic, bytes):
        raise Rejected(Reason.BAD_TOPIC, "topic is not valid UTF-8")
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "tenant" or parts[2] != "device":
        raise Rejected(Reason.BAD_TOPIC, f"topic {_clip(topic)} is not tenant/{{tenant_id}}/device/{{device_id}}/"
                                         "{telemetry|heartbeat}")
    _, tenant_id, _, device_id, msg_type = parts
    if not _TENANT_ID.fullmatch(tenant_id):
        raise Rejected(Reason.BAD_TOPIC, f"tenant id {_clip(tenant_id)} is not 2-63 characters of a-z, 0-9 and '-'")
    if not _DEVICE_ID.fullmatch(device_id):
        raise Rejected(Reason.BAD_TOPIC, f"device id {_clip(device_id)} is not 1-128 characters of "
                                         "A-Z, a-z, 0-9 and . _ : -")
    if not msg_type:
        raise Rejected(Reason.BAD_TOPIC, "topic has an empty message type")
    return Topic(tenant_id, device_id, msg_type)


def check_size(payload: bytes) -> None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected(Reason.PAYLOAD_TOO_LARGE, f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")


def decode_envelope(payload: bytes, topic: Topic) -> Envelope:
    """Decode and check one body; raise INVALID_JSON or INVALID_ENVELOPE. Never raises anything else."""
    try:
        envelope = _DECODER.decode(payload)
    except msgspec.ValidationError as exc:
        raise Rejected(Reason.INVALID_ENVELOPE, _clip(str(exc), 300)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Rejected(Reason.INVALID_JSON, _clip(str(exc), 300)) from None
    except RecursionError:
        raise Rejected(Reason.INVALID_JSON, "JSON is nested too deeply") from None
    if envelope.device_id is not None and envelope.device_id != topic.device_id:
        raise Rejected(Reason.INVALID_ENVELOPE, f"device_id {_clip(envelope.device_id)} in the body differs from "
                                                f"{topic.device_id!r} in the topic")
    if envelope.msg_type is not None and envelope.msg_type != topic.msg_type:
        raise Rejected(Reason.INVALID_ENVELOPE, f"msg_type {_clip(envelope.msg_type)} in the body differs from "
                                                f"{_clip(topic.msg_type)} in the topic")
    if (envelope.lat is None) != (envelope.lng is None):
        raise Rejected(Reason.INVALID_ENVELOPE, "lat and lng must be given together")
    metrics = envelope.metrics or {}
    for key, value in metrics.items():
        if isinstance(value, float) and value != value:  # NaN cannot come from JSON, but be sure
            raise Rejected(Reason.INVALID_ENVELOPE, f"metric {_clip(key)} is not a number")
        if isinstance(value, str):
            if len(value) > MAX_METRIC_STRING_CHARS:
                raise Rejected(Reason.INVALID_ENVELOPE, f"metric {_clip(key)} is a string of {len(value)} characters;"
                                                        f" the limit is {MAX_METRIC_STRING_CHARS}")
            if "\x00" in value:
                raise Rejected(Reason.INVALID_ENVELOPE, f"metric {_clip(key)} contains a NUL character")
    if "\x00" in (envelope.site_id or "") or "\x00" in (envelope.tenant_id or ""):
        raise Rejected(Reason.INVALID_ENVELOPE, "site_id and tenant_id must not contain NUL characters")
    if topic.msg_type == "telemetry" and not metrics:
        raise Rejected(Reason.INVALID_ENVELOPE, "telemetry needs at least one metric (send a heartbeat instead)")
    return envelope


def check_msg_type(topic: Topic) -> None:
    if topic.msg_type not in MSG_TYPES:
        raise Rejected(Reason.UNSUPPORTED_MSG_TYPE,
                       f"message type {_clip(topic.msg_type)} is not one of {', '.join(sorted(MSG_TYPES))}")


def message_time(envelope: Envelope, received_at: datetime, retention_days: int) -> datetime:
    """The message's own time in UTC (receive time when absent, UTC when naive), within the accepted window."""
    ts = envelope.ts
    if ts is None:
        return received_at
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if ts > received_at + MAX_FUTURE:
        raise Rejected(Reason.INVALID_ENVELOPE, f"ts {ts.isoformat()} is more than 1 day ahead of the server clock "
                                                f"({received_at.isoformat()}); check the device's clock")
    if ts < received_at - timedelta(days=retention_days):
        raise Rejected(Reason.INVALID_ENVELOPE, f"ts {ts.isoformat()} is older than the {retention_days}-day "
                                                "telemetry retention")
    return ts


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""Unicode category Cc: the C0 and C1 control characters and DEL."""


def check_metrics(metrics: dict[str, bool | int | float | str]) -> None:
    """The last two checks: TOO_MANY_METRICS, then METRIC_KEY_INVALID."""
    if len(metrics) > MAX_METRICS:
        raise Rejected(Reason.TOO_MANY_METRICS, f"{len(metrics)} metrics; the limit is {MAX_METRICS}")
    for key in metrics:
        if not key:
            raise Rejected(Reason.METRIC_KEY_INVALID, "a metric key is empty")
        if len(key) > MAX_METRIC_KEY_CHARS:
            raise Rejected(Reason.METRIC_KEY_INVALID, f"metric key {_clip(key)} has {len(key)} characters; "
                                                      f"the limit is {MAX_METRIC_KEY_CHARS}")
        if _CONTROL.search(key):
            raise Rejected(Reason.METRIC_KEY_INVALID, f"metric key {_clip(key)} contains a control character")


def _clip(value: str, limit: int = 80) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
