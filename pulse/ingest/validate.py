"""The one validation function both transports use, in the documented reason order, and the per-device rate limiter."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from pulse.ingest.auth import DeviceAuthCache, DeviceRecord
from pulse.ingest.envelope import (
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

Transport = Literal["MQTT", "HTTP"]

DEFAULT_RATE_PER_S = 50.0
DEFAULT_BURST = 100.0

_REVOKED_STATUSES = {"REVOKED": "revoked", "DISABLED": "disabled", "DECOMMISSIONED": "decommissioned"}


class RateLimiter:
    """A token bucket per device: `burst` messages at once, refilled at `rate_per_s`.

    Buckets that have refilled completely are indistinguishable from new ones, so they are pruned when the
    table grows past `max_buckets` (memory stays bounded even when a sender invents device ids).
    """

    def __init__(self, rate_per_s: float = DEFAULT_RATE_PER_S, burst: float = DEFAULT_BURST, *,
                 max_buckets: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_buckets = max_buckets
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, key: tuple[str, str], now: float) -> bool:
        """Take one token for `key` at monotonic time `now`; False when the bucket is empty."""
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._max_buckets:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate_per_s
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        while len(self._buckets) > self._max_buckets:  # everyone is busy: forget the oldest half
            for k in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[k]


class InboundMessage(msgspec.Struct, frozen=True, gc=False):
    """One message as a transport received it. `topic` is the MQTT topic, or the same shape built from the URL."""

    transport: Transport
    topic: str | bytes
    payload: bytes
    received_at: datetime
    token: str | None = None  # HTTP bearer token; MQTT is authenticated by the broker


class Accepted(msgspec.Struct, frozen=True, gc=False):
    """A message that passed every check, ready for the batch writer."""

    tenant_id: str
    device_id: str
    site_id: str | None
    msg_type: str
    ts: datetime
    seq: int
    metrics: dict[str, bool | int | float | str]
    lat: float | None
    lng: float | None
    received_at: datetime
    transport: Transport


class Verdict(msgspec.Struct, frozen=True, gc=False):
    """Outcome of validation: `accepted`, or the reason with the ids a quarantine event is filed under."""

    accepted: Accepted | None
    reason: Reason | None = None
    detail: str = ""
    tenant_id: str | None = None  # None when the topic names no registered tenant
    device_id: str | None = None


async def validate_message(message: InboundMessage, *, auth: DeviceAuthCache, limiter: RateLimiter,
                           retention_days: int, monotonic: float) -> Verdict:
    """Check one message in the documented order and say what to do with it.

    The registry is read through `auth` (cached) before any check, so an unreachable database raises the
    driver's error, without a verdict and without taking a rate-limit token: callers retry rather than
    quarantine good data.
    """
    topic: Topic | None = None
    bad_topic: Rejected | None = None
    try:
        topic = parse_topic(message.topic)
    except Rejected as exc:
        bad_topic = exc
    record = await auth.get_device(topic.tenant_id, topic.device_id) if topic is not None else None
    owner: tuple[str, str] | None = None
    token = message.token if message.transport == "HTTP" else None
    if token and record is not None and record.device_known and not record.token_matches(token, message.received_at):
        owner = await auth.token_owner(token)  # a database lookup, so only for devices that exist
    return check_message(message, topic, bad_topic, record, limiter=limiter, retention_days=retention_days,
                         monotonic=monotonic, token_owner=owner)


def check_message(message: InboundMessage, topic: Topic | None, bad_topic: Rejected | None,
                  record: DeviceRecord | None, *, limiter: RateLimiter, retention_days: int, monotonic: float,
                  token_owner: tuple[str, str] | None = None) -> Verdict:
    """The checks themselves, without waiting: `record` is the registry record of the topic's device and
    `token_owner` the device holding an HTTP token that is not this device's (None when it is nobody's)."""
    try:
        check_size(message.payload)
        if topic is None or record is None:
            raise bad_topic or Rejected(Reason.BAD_TOPIC, "unreadable topic")
        envelope = decode_envelope(message.payload, topic)
        check_msg_type(topic)
        ts = message_time(envelope, message.received_at, retention_days)
        if not limiter.allow((topic.tenant_id, topic.device_id), monotonic):
            raise Rejected(Reason.RATE_LIMITED, f"device sends faster than {limiter.rate_per_s:g} messages/s "
                                                f"(burst {limiter.burst:g})")
        if envelope.tenant_id is not None and envelope.tenant_id != topic.tenant_id:
            raise Rejected(Reason.TENANT_MISMATCH, f"tenant_id {_short(envelope.tenant_id)} in the body differs from "
                                                   f"{topic.tenant_id!r} in the {_where(message)}")
        if token_owner is not None and token_owner[0] != topic.tenant_id:
            raise Rejected(Reason.TENANT_MISMATCH, "the token belongs to a device of another tenant")
        if not record.tenant_known:
            raise Rejected(Reason.UNREGISTERED_DEVICE, f"tenant {topic.tenant_id!r} does not exist")
        if not record.device_known:
            raise Rejected(Reason.UNREGISTERED_DEVICE, f"device {topic.device_id!r} is not registered in tenant "
                                                       f"{topic.tenant_id!r}")
        if record.device_status in _REVOKED_STATUSES:
            raise Rejected(Reason.DEVICE_REVOKED, f"device is {_REVOKED_STATUSES[record.device_status or '']}")
        if record.tenant_status == "SUSPENDED":
            raise Rejected(Reason.SUBSCRIPTION_SUSPENDED, "tenant is suspended")
        if record.subscription_status == "SUSPENDED":
            raise Rejected(Reason.SUBSCRIPTION_SUSPENDED, "the device's subscription is suspended")
        if not record.has_subscription:
            raise Rejected(Reason.SUBSCRIPTION_EXPIRED, "device is not assigned to a subscription")
        if record.subscription_status == "EXPIRED":
            raise Rejected(Reason.SUBSCRIPTION_EXPIRED, "the device's subscription has expired")
        if envelope.site_id is not None and envelope.site_id != record.site_id:
            registered = repr(record.site_id) if record.site_id else "no site"
            raise Rejected(Reason.SITE_MISMATCH, f"site_id {_short(envelope.site_id)} differs from the registered "
                                                 f"{registered}")
        if message.transport == "HTTP":
            if not message.token:
                raise Rejected(Reason.TOKEN_MISSING, "send the device's provision token as 'Authorization: Bearer'")
            if not record.token_matches(message.token, message.received_at):
                raise Rejected(Reason.TOKEN_INVALID, "the token is not a live provision token of this device")
        metrics = envelope.metrics or {}
        check_metrics(metrics)
    except Rejected as rejected:
        if topic is None or record is None:
            return Verdict(None, rejected.reason, rejected.detail)
        # Filed under the topic's tenant only when that tenant exists (NULL otherwise).
        return Verdict(None, rejected.reason, rejected.detail,
                       topic.tenant_id if record.tenant_known else None, topic.device_id)
    return Verdict(Accepted(
        tenant_id=topic.tenant_id, device_id=topic.device_id, site_id=record.site_id, msg_type=topic.msg_type,
        ts=ts, seq=envelope.seq, metrics=metrics, lat=envelope.lat, lng=envelope.lng,
        received_at=message.received_at, transport=message.transport))


def _short(value: str, limit: int = 80) -> str:
    """A value quoted in an error, cut to `limit` characters: the sender gets its own input back, not 64 KiB."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"… ({len(value)} characters)"


def _where(message: InboundMessage) -> str:
    return "topic" if message.transport == "MQTT" else "URL"
