"""The ingest pipeline both transports share (validate → quarantine or batch write), and the HTTP entry points."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import prometheus_client
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import Clock, SystemClock
from pulse.ingest.auth import DEFAULT_TTL_S, DeviceAuthCache
from pulse.ingest.envelope import Reason, Rejected, Topic, parse_topic
from pulse.ingest.quarantine import quarantine_event
from pulse.ingest.validate import (
    InboundMessage,
    RateLimiter,
    Verdict,
    check_message,
    validate_message,
)
from pulse.ingest.writer import BatchWriter, IngestUnavailable
from pulse.settings import Settings

log = logging.getLogger("pulse.ingest")

MAX_BATCH_BYTES = 4 * 1024 * 1024
"""Largest HTTP batch body; each message in it still obeys the 64 KiB message limit."""
MAX_BATCH_MESSAGES = 500
HTTP_COMMIT_TIMEOUT_S = 10.0
TOPIC_CACHE_MAX = 200_000
"""Parsed topics remembered by the MQTT hot path (a topic per device and message type)."""

MESSAGES = prometheus_client.Counter("pulse_ingest_messages", "Messages validated, by transport and outcome "
                                     "(accepted or the quarantine reason)", ["transport", "outcome"])

_STATUS = {
    Reason.PAYLOAD_TOO_LARGE: 413,
    Reason.RATE_LIMITED: 429,
    Reason.TOKEN_MISSING: 401,
    Reason.TOKEN_INVALID: 401,
    Reason.TENANT_MISMATCH: 403,
    Reason.UNREGISTERED_DEVICE: 403,
    Reason.DEVICE_REVOKED: 403,
    Reason.SUBSCRIPTION_SUSPENDED: 403,
    Reason.SUBSCRIPTION_EXPIRED: 403,
}


def status_for(reason: str | None) -> int:
    """HTTP status of an ingest outcome: 202 accepted; 413, 429, 401 (token), 403 (not allowed to send), else 400.

    UNREGISTERED_DEVICE answers 403 like a revoked device: the path is not a place this caller may send to.
    """
    if reason is None:
        return 202
    try:
        return _STATUS.get(Reason(reason), 400)
    except ValueError:
        return 400


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one HTTP message: accepted (committed), or rejected with its quarantine reason."""

    accepted: bool
    reason: str | None
    detail: str

    @property
    def status(self) -> int:
        return status_for(self.reason)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per-message results of an HTTP batch, in request order."""

    results: tuple[IngestResult, ...]

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.results)

    @property
    def status(self) -> int:
        """202 when any message was accepted, otherwise the status of the first rejection."""
        if self.accepted or not self.results:
            return 202
        return self.results[0].status


class IngestPipeline:
    """Auth cache, rate limiter and batch writer, shared by the MQTT worker and the web process.

    `await start()` before use (starts the writer and the device-change LISTEN), `await close()` at shutdown.
    """

    def __init__(self, engine: AsyncEngine, settings: Settings, clock: Clock | None = None, *,
                 rate_per_s: float | None = None, burst: float | None = None,
                 auth_ttl_s: float = DEFAULT_TTL_S, max_pending: int | None = None, listen: bool = True,
                 retry_max_s: float = 5.0) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.auth = DeviceAuthCache(engine, self.clock, ttl_s=auth_ttl_s)
        self.limiter = RateLimiter(rate_per_s or settings.ingest_rate_per_s, burst or settings.ingest_burst)
        self.writer = BatchWriter(engine, self.clock, batch_size=settings.ingest_batch_size,
                                  flush_ms=settings.ingest_flush_ms, max_pending=max_pending, retry_max_s=retry_max_s)
        self._listen = listen
        self._stop = asyncio.Event()
        self._listen_task: asyncio.Task[None] | None = None
        self._fresh_task: asyncio.Task[None] | None = None
        self.registry_error = ""
        self._counters: dict[tuple[str, Reason | None], Any] = {}
        self._tally: dict[tuple[str, Reason | None], int] = {}
        self.writer.on_commit = self.flush_counts
        self._topics: dict[str | bytes, Topic] = {}

    async def prepare(self, timeout_s: float = 10.0) -> None:
        """Before taking traffic: wait (briefly) for the device-change LISTEN, then load the registry records of
        the most recently active devices, so their messages are checked without waiting for a registry read.
        A database that does not answer in time is logged; messages then load records as they come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._listen:
            await self.auth.wait_listening(timeout_s / 2)
        try:
            count = await asyncio.wait_for(self.auth.warm(), timeout=max(deadline - loop.time(), 0.1))
            log.info("device registry cache warmed", extra={"devices": count})
        except (TimeoutError, OSError, SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("device registry cache not warmed: %s", f"{type(exc).__name__}: {exc}"[:200])

    @property
    def closing(self) -> bool:
        return self._stop.is_set()

    async def start(self) -> None:
        self.writer.start()
        if self._listen and self._listen_task is None:
            self._listen_task = asyncio.create_task(
                self.auth.listen(self.settings.require_database_url(), self._stop), name="ingest-auth-listen")
            self._fresh_task = asyncio.create_task(self.auth.keep_fresh(self._stop), name="ingest-auth-refresh")

    async def close(self, grace_s: float = 10.0) -> bool:
        """Commit what is queued (within `grace_s`) and stop; True when nothing was left uncommitted."""
        self._stop.set()
        clean = await self.writer.close(grace_s)
        for task in (self._listen_task, self._fresh_task):
            if task is not None:
                task.cancel()  # it may be waiting on a connect to an unreachable database
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return clean

    async def ready_check(self) -> tuple[bool, str]:
        if self.registry_error:
            return False, self.registry_error
        return await self.writer.ready_check()

    async def process(self, message: InboundMessage) -> tuple[Verdict, asyncio.Future[None]]:
        """Validate one message and queue its row or quarantine event; the future resolves once that committed.

        Raises IngestUnavailable (nothing queued) when the device registry cannot be read.
        """
        try:
            verdict = await validate_message(message, auth=self.auth, limiter=self.limiter,
                                             retention_days=self.settings.telemetry_retention_days,
                                             monotonic=self.clock.monotonic())
        except (OSError, TimeoutError, SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.registry_error = f"device registry unreachable: {type(exc).__name__}: {exc}"[:300]
            raise IngestUnavailable("the device registry is unreachable; retry later") from exc
        self.registry_error = ""
        await self.writer.wait_for_room()
        return verdict, self._queue(message, verdict)

    def try_process(self, message: InboundMessage) -> asyncio.Future[None] | None:
        """The same as `process` without waiting, for MQTT's hot path: None (nothing done, nothing counted) when
        that would need to wait — the device's registry record is not cached, or the writer is full — and the
        caller then awaits `process`. Otherwise the message's batch future (accepted or quarantined)."""
        if not self.writer.has_room:
            return None
        topic: Topic | None = self._topics.get(message.topic)
        bad_topic: Rejected | None = None
        if topic is None:
            try:
                topic = parse_topic(message.topic)
            except Rejected as exc:
                bad_topic = exc
            else:
                if len(self._topics) >= TOPIC_CACHE_MAX:
                    self._topics.clear()
                self._topics[message.topic] = topic
        record = self.auth.cached_device(topic.tenant_id, topic.device_id) if topic is not None else None
        if topic is not None and record is None:
            return None
        verdict = check_message(message, topic, bad_topic, record, limiter=self.limiter,
                                retention_days=self.settings.telemetry_retention_days,
                                monotonic=self.clock.monotonic())
        self.registry_error = ""
        return self._queue(message, verdict)

    def _queue(self, message: InboundMessage, verdict: Verdict) -> asyncio.Future[None]:
        # Counted here and added to the Prometheus counters once per batch (a locked increment per message
        # costs more than the rest of the hot path's bookkeeping).
        key = (message.transport, verdict.reason)
        self._tally[key] = self._tally.get(key, 0) + 1
        if verdict.accepted is not None:
            return self.writer.submit_nowait(verdict.accepted)
        return self.writer.submit_nowait(quarantine_event(
            tenant_id=verdict.tenant_id, device_id=verdict.device_id, received_at=message.received_at,
            transport=message.transport, reason=verdict.reason or Reason.INVALID_ENVELOPE, detail=verdict.detail,
            topic=message.topic, payload=message.payload))

    def flush_counts(self) -> None:
        """Add the messages counted since the last call to pulse_ingest_messages."""
        tally, self._tally = self._tally, {}
        for key, n in tally.items():
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = MESSAGES.labels(key[0], key[1] or "accepted")
            counter.inc(n)

    async def flush(self) -> None:
        """Commit everything queued so far (tests and shutdown)."""
        await self.writer.flush()

    async def pause(self, seconds: float) -> None:
        """Sleep between retries, cut short by close()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)


def http_topic(tenant_id: str, device_id: str, msg_type: str) -> str:
    """The MQTT topic equivalent of an HTTP ingest URL, so both transports are checked alike."""
    return f"tenant/{tenant_id}/device/{device_id}/{msg_type}"


async def ingest_http(pipeline: IngestPipeline, tenant_id: str, device_id: str, msg_type: str, body: bytes,
                      token: str | None, received_at: datetime) -> IngestResult:
    """One HTTP message: validated like MQTT plus the provision token; accepted means committed.

    Raises IngestUnavailable (HTTP 503) when the database cannot take it now.
    """
    message = InboundMessage("HTTP", http_topic(tenant_id, device_id, msg_type), body, received_at, token)
    verdict, future = await pipeline.process(message)
    if verdict.accepted is None:
        return IngestResult(False, verdict.reason, verdict.detail)
    await _committed([future])
    return IngestResult(True, None, "accepted")


class BatchItem(msgspec.Struct, kw_only=True):
    """One message of an HTTP batch: where it is from, its device's token, and the envelope itself."""

    tenant_id: str = ""
    device_id: str = ""
    msg_type: str = "telemetry"
    token: str | None = None
    message: msgspec.Raw = msgspec.Raw(b"")


class _BatchBody(msgspec.Struct):
    messages: list[msgspec.Raw]


async def ingest_http_batch(pipeline: IngestPipeline, body: bytes, received_at: datetime) -> BatchResult:
    """`{"messages": [{tenant_id, device_id, msg_type, token, message}, …]}`, up to MAX_BATCH_MESSAGES messages
    of any devices (a gateway's or a backend's), each checked, rate limited and quarantined like a message of
    its own. Accepted ones are committed before this returns. An unusable body raises BatchRejected."""
    if len(body) > MAX_BATCH_BYTES:
        await _quarantine_body(pipeline, body, received_at, Reason.PAYLOAD_TOO_LARGE,
                               f"batch is {len(body)} bytes; the limit is {MAX_BATCH_BYTES}")
    try:
        items = msgspec.json.decode(body, type=_BatchBody).messages
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        is_json = True
        try:
            msgspec.json.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            is_json = False
        reason = Reason.INVALID_ENVELOPE if is_json else Reason.INVALID_JSON
        detail = ('a batch is {"messages": [...]}' if is_json else
                  "JSON is nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:300])
        await _quarantine_body(pipeline, body, received_at, reason, detail)
    if not 1 <= len(items) <= MAX_BATCH_MESSAGES:
        await _quarantine_body(pipeline, body, received_at, Reason.INVALID_ENVELOPE,
                               f"a batch holds 1 to {MAX_BATCH_MESSAGES} messages, not {len(items)}")
    results: list[IngestResult] = []
    futures: list[asyncio.Future[None]] = []
    for raw in items:
        try:
            item = msgspec.json.decode(bytes(raw), type=BatchItem)
            topic, payload, token = http_topic(item.tenant_id, item.device_id, item.msg_type), bytes(item.message), \
                item.token
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
            topic, payload, token = "", bytes(raw), None  # not an item: filed as BAD_TOPIC with its raw text
        verdict, future = await pipeline.process(InboundMessage("HTTP", topic, payload, received_at, token))
        if verdict.accepted is None:
            results.append(IngestResult(False, verdict.reason, verdict.detail))
        else:
            results.append(IngestResult(True, None, "accepted"))
            if future not in futures:
                futures.append(future)
    await _committed(futures)
    return BatchResult(tuple(results))


class BatchRejected(Exception):
    """The batch body as a whole is unusable; it was quarantined under `reason`."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.result = IngestResult(False, reason, detail)


async def _quarantine_body(pipeline: IngestPipeline, body: bytes, received_at: datetime, reason: Reason,
                           detail: str) -> None:
    """Quarantine a batch body that cannot be split into messages (tenant unknown), then refuse it."""
    MESSAGES.labels("HTTP", reason).inc()
    await pipeline.writer.submit(quarantine_event(
        tenant_id=None, device_id=None, received_at=received_at, transport="HTTP", reason=reason, detail=detail,
        topic="/ingest/v1/batch", payload=body))
    raise BatchRejected(reason, detail)


async def _committed(futures: list[asyncio.Future[None]]) -> None:
    try:
        await asyncio.wait_for(asyncio.gather(*(asyncio.shield(f) for f in futures)), HTTP_COMMIT_TIMEOUT_S)
    except TimeoutError:
        raise IngestUnavailable("the database did not commit in time; retry later") from None
