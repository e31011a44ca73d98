"""Batch writer: accepted rows and quarantine events, committed together per batch with COPY, one device_state
upsert and one NOTIFY per batch; a future per batch tells transports when their messages are durable."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

import asyncpg
import msgspec
import prometheus_client
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.clock import Clock
from pulse.db import driver_connection, error_chain, ingest_tx, is_data_error, sqlstate
from pulse.errors import PulseError
from pulse.ingest.envelope import Reason
from pulse.ingest.quarantine import QuarantineEvent, quarantine_event, write_quarantine
from pulse.ingest.validate import Accepted

log = logging.getLogger("pulse.ingest.writer")

TELEMETRY_CHANNEL = "pulse_telemetry"
NOTIFY_PAYLOAD_LIMIT = 7900
"""Bytes per pg_notify payload (PostgreSQL refuses 8000 and more); longer device lists are split."""

ROWS_WRITTEN = prometheus_client.Counter("pulse_ingest_rows_written", "Telemetry rows committed")
DUPLICATES = prometheus_client.Counter("pulse_ingest_duplicates", "Messages already stored (redeliveries), skipped")
EVENTS_WRITTEN = prometheus_client.Counter("pulse_ingest_quarantine_written", "Quarantine events committed")
BATCH_SECONDS = prometheus_client.Histogram("pulse_ingest_batch_seconds", "Time to commit one batch")
WRITE_FAILURES = prometheus_client.Counter("pulse_ingest_write_failures", "Batch commits that failed and are retried")
PENDING = prometheus_client.Gauge("pulse_ingest_pending", "Rows and events waiting for their batch to commit")

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS pulse_telemetry_stage (
  time timestamptz, tenant_id text, device_id text, site_id text, msg_type text, seq bigint, metrics jsonb
) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ("time", "tenant_id", "device_id", "site_id", "msg_type", "seq", "metrics")
_FROM_STAGE = """
INSERT INTO telemetry (time, tenant_id, device_id, site_id, msg_type, seq, metrics)
SELECT time, tenant_id, device_id, site_id, msg_type, seq, metrics FROM pulse_telemetry_stage
ON CONFLICT DO NOTHING
"""

# One row per device, folded from the batch. Values only move forward: a late (older) message neither rewinds
# last_message_ts/last_seq nor overwrites a metric that already has a newer reading (per-key times in
# latest_metrics_at). When the batch's oldest message for a device is not older than anything stored (the
# usual case) every incoming metric is the newest, so the maps are simply merged; otherwise key by key.
_UPDATE_STATE = """
UPDATE device_state AS s SET
  last_seen_at = GREATEST(s.last_seen_at, u.seen),
  last_telemetry_at = GREATEST(s.last_telemetry_at, u.tel),
  last_heartbeat_at = GREATEST(s.last_heartbeat_at, u.hb),
  last_message_ts = GREATEST(s.last_message_ts, u.ts),
  last_seq = CASE WHEN s.last_message_ts IS NULL OR u.ts >= s.last_message_ts THEN u.seq ELSE s.last_seq END,
  latest_metrics = CASE WHEN s.last_message_ts IS NULL OR u.first_ts >= s.last_message_ts
    THEN s.latest_metrics || u.metrics
    ELSE s.latest_metrics || (
      SELECT coalesce(jsonb_object_agg(n.key, n.value), '{}'::jsonb) FROM jsonb_each(u.metrics) n
      WHERE s.latest_metrics_at ->> n.key IS NULL
         OR (s.latest_metrics_at ->> n.key)::timestamptz <= (u.metrics_at ->> n.key)::timestamptz) END,
  latest_metrics_at = CASE WHEN s.last_message_ts IS NULL OR u.first_ts >= s.last_message_ts
    THEN s.latest_metrics_at || u.metrics_at
    ELSE s.latest_metrics_at || (
      SELECT coalesce(jsonb_object_agg(n.key, n.value), '{}'::jsonb) FROM jsonb_each(u.metrics_at) n
      WHERE s.latest_metrics_at ->> n.key IS NULL
         OR (s.latest_metrics_at ->> n.key)::timestamptz <= (n.value #>> '{}')::timestamptz) END,
  lat = coalesce(u.lat, s.lat),
  lng = coalesce(u.lng, s.lng),
  updated_at = $13
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[],
            $7::bigint[], $8::jsonb[], $9::jsonb[], $10::float8[], $11::float8[], $12::timestamptz[])
     AS u(tenant_id, device_id, seen, tel, hb, ts, seq, metrics, metrics_at, lat, lng, first_ts)
WHERE s.tenant_id = u.tenant_id AND s.device_id = u.device_id
RETURNING s.tenant_id, s.device_id
"""

# A device's first state row (registered devices only), which _UPDATE_STATE then fills.
_ADD_STATE = """
INSERT INTO device_state (tenant_id, device_id)
SELECT u.tenant_id, u.device_id FROM unnest($1::text[], $2::text[]) AS u(tenant_id, device_id)
JOIN devices d ON d.tenant_id = u.tenant_id AND d.device_id = u.device_id
ON CONFLICT (tenant_id, device_id) DO NOTHING
"""

_encode = msgspec.json.encode

Item = Accepted | QuarantineEvent


class IngestUnavailable(PulseError):
    """The database could not take the message (yet); nothing was acknowledged, the sender should retry."""

    code = "ingest_unavailable"
    status = 503


@dataclass(eq=False)
class _Batch:
    opened_at: float
    future: asyncio.Future[None]
    items: list[Item] = field(default_factory=list)
    due: bool = False


class BatchWriter:
    """Collects rows and quarantine events; commits a batch when it holds `batch_size` items or is `flush_ms` old.

    `submit` waits while `max_pending` items are uncommitted (memory stays bounded; MQTT stops being read) and
    returns the future of the item's batch. A batch that fails on the connection is retried with backoff until it
    commits (health not ready meanwhile); one that the database refuses for its content is split until the
    offending message is found, which is quarantined as INVALID_ENVELOPE instead.
    """

    def __init__(self, engine: AsyncEngine, clock: Clock, *, batch_size: int, flush_ms: int,
                 max_pending: int | None = None, retry_first_s: float = 0.1, retry_max_s: float = 5.0) -> None:
        self._engine = engine
        self._clock = clock
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000
        self.max_pending = max_pending or max(2 * batch_size, 100)
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._batches: deque[_Batch] = deque()
        self._writing: _Batch | None = None
        self._pending = 0
        self._wake = asyncio.Event()
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._abandon = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.healthy = True
        self.last_error = ""
        self.on_commit: Callable[[], None] | None = None
        """Called as each batch starts to be written (callers flush their own counters there)."""

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingest-batch-writer")

    async def submit(self, item: Item) -> asyncio.Future[None]:
        """Queue one item (waiting for room); the returned future resolves when its batch committed."""
        await self.wait_for_room()
        return self.submit_nowait(item)

    async def wait_for_room(self) -> None:
        """Return once fewer than `max_pending` items wait (or the writer is closing: submitting then raises)."""
        if self.has_room or self._closing:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room_waiters.append(waiter)  # first come, first served; woken one per free slot
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_room_waiters()  # pass the slot on
            raise

    def _wake_room_waiters(self) -> None:
        free = self.max_pending - self._pending if not self._closing else len(self._room_waiters)
        while free > 0 and self._room_waiters:
            waiter = self._room_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def has_room(self) -> bool:
        """Whether submit_nowait may be called now: fewer than `max_pending` items wait, nobody is queued for room
        and the writer is not closing."""
        return self._pending < self.max_pending and not self._room_waiters and not self._closing

    def submit_nowait(self, item: Item) -> asyncio.Future[None]:
        """Queue one item without waiting for room (callers check `has_room`, or are bounded otherwise)."""
        if self._closing:
            raise IngestUnavailable("ingest is shutting down")
        batch = self._batches[-1] if self._batches else None
        if batch is None or batch.due or len(batch.items) >= self.batch_size:
            loop = asyncio.get_running_loop()
            batch = _Batch(loop.time(), loop.create_future())
            batch.future.add_done_callback(_retrieve)
            self._batches.append(batch)
            self._wake.set()
        batch.items.append(item)
        self._pending += 1
        if len(batch.items) >= self.batch_size:
            self._wake.set()
        return batch.future

    async def flush(self) -> None:
        """Write everything queued so far now and return once it committed (raises IngestUnavailable if it cannot)."""
        futures = [b.future for b in self._batches]
        if self._writing is not None:
            futures.append(self._writing.future)
        for batch in self._batches:
            batch.due = True
        self._wake.set()
        for future in futures:
            await asyncio.shield(future)

    async def close(self, grace_s: float = 10.0) -> bool:
        """Stop taking items, commit what is queued within `grace_s`; True when nothing was left uncommitted."""
        self._closing = True
        self._wake_room_waiters()
        self._wake.set()
        if self._task is None:
            clean = not self._batches
            self._fail_all(IngestUnavailable("ingest stopped before this message was written"))
            return clean
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace_s)
            return True
        except TimeoutError:
            log.warning("database still unavailable at shutdown; %d messages stay unacknowledged", self._pending)
            self._abandon.set()
            await self._task
            return False

    async def ready_check(self) -> tuple[bool, str]:
        return self.healthy, (self.last_error if not self.healthy else f"{self._pending} pending")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._batches:
                if self._closing:
                    return
                await self._wake.wait()
                continue
            head = self._batches[0]
            wait = head.opened_at + self.flush_s - loop.time()
            if not (head.due or self._closing or len(head.items) >= self.batch_size or wait <= 0):
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
                continue
            self._batches.popleft()
            self._writing = head
            PENDING.set(self._pending)
            if self.on_commit is not None:
                self.on_commit()
            try:
                committed = await self._commit(head.items)
            finally:
                self._writing = None
                self._pending -= len(head.items)
                PENDING.set(self._pending)
                self._wake_room_waiters()
            if committed:
                head.future.set_result(None)
            else:
                head.future.set_exception(IngestUnavailable("ingest stopped before this message was written"))
                self._fail_all(IngestUnavailable("ingest stopped before this message was written"))
                return

    def _fail_all(self, exc: Exception) -> None:
        while self._batches:
            batch = self._batches.popleft()
            self._pending -= len(batch.items)
            PENDING.set(self._pending)
            if not batch.future.done():
                batch.future.set_exception(exc)

    async def _commit(self, items: list[Item]) -> bool:
        """Commit all items, retrying connection failures; False if abandoned at shutdown before committing."""
        chunks = [items]
        delay = self._retry_first_s
        while chunks:
            chunk = chunks[0]
            started = asyncio.get_running_loop().time()
            try:
                await self._write(chunk)
            except Exception as exc:
                if is_data_error(exc):
                    chunks.pop(0)
                    if len(chunk) > 1:
                        mid = len(chunk) // 2
                        chunks[0:0] = [chunk[:mid], chunk[mid:]]
                    elif isinstance(chunk[0], Accepted):
                        log.warning("database refused a message; quarantining it: %s", exc)
                        chunks.insert(0, [_refused(chunk[0], exc)])
                    else:
                        log.error("database refused a quarantine event; dropping it: %s", exc)
                    continue
                WRITE_FAILURES.inc()
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("batch write failed; retrying in %.1fs: %s", delay, self.last_error)
                if self._abandon.is_set():
                    return False
                try:
                    await asyncio.wait_for(self._abandon.wait(), timeout=delay)
                    return False
                except TimeoutError:
                    delay = min(delay * 2, self._retry_max_s)
                continue
            BATCH_SECONDS.observe(asyncio.get_running_loop().time() - started)
            chunks.pop(0)
            if not self.healthy:
                log.info("batch writes work again")
            self.healthy = True
            self.last_error = ""
            delay = self._retry_first_s
        return True

    async def _write(self, items: list[Item]) -> None:
        rows = [i for i in items if isinstance(i, Accepted)]
        events = [i for i in items if isinstance(i, QuarantineEvent)]
        try:
            added = await self._write_tx(rows, events, ensure_days=[])
        except Exception as exc:
            if not rows or not _is_missing_partition(exc):
                raise
            days = sorted({r.ts.date() for r in rows})
            log.info("creating telemetry partitions for %d day(s) from %s", len(days), days[0])
            added = await self._write_tx(rows, events, ensure_days=days)
        ROWS_WRITTEN.inc(added)
        DUPLICATES.inc(len(rows) - added)
        EVENTS_WRITTEN.inc(len(events))

    async def _write_tx(self, rows: list[Accepted], events: list[QuarantineEvent], *,
                        ensure_days: list[date]) -> int:
        added = 0
        async with ingest_tx(self._engine) as sa_conn:
            conn = await driver_connection(sa_conn)
            # Batch statements over unnest()ed arrays: a generic plan (PostgreSQL's choice after five runs of a
            # prepared statement) cannot see the array sizes and hash-joins whole tables; plan each batch.
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            if ensure_days:
                await conn.execute("SELECT pulse_ensure_telemetry_partitions(d, d) FROM unnest($1::date[]) d",
                                   ensure_days)
            if rows:
                added = await write_telemetry(conn, rows)
                await upsert_device_state(conn, rows, self._clock.now())
                for payload in notify_payloads(rows):
                    await conn.execute("SELECT pg_notify($1, $2)", TELEMETRY_CHANNEL, payload)
            await write_quarantine(conn, events)
        return added


async def write_telemetry(conn: asyncpg.Connection, rows: list[Accepted]) -> int:
    """COPY the rows into a per-connection staging table, then move them into `telemetry`; returns rows added.

    A message already stored (same tenant, device, time, seq and msg_type: a QoS 1 redelivery after a lost
    PUBACK, or an HTTP retry) is skipped by the unique index, so redelivery never duplicates a row.

    COPY straight into `telemetry` is refused for pulse_ingest because the table has row-level security
    ("COPY FROM not supported with row-level security"); INSERT … SELECT from the staging table is allowed
    and keeps COPY's cheap row transfer. The staging table empties itself at commit.
    """
    await conn.execute(_STAGE_DDL)
    await conn.copy_records_to_table(
        "pulse_telemetry_stage", columns=_STAGE_COLUMNS,
        records=[(r.ts, r.tenant_id, r.device_id, r.site_id, r.msg_type, r.seq, _encode(r.metrics).decode())
                 for r in rows])
    status = await conn.execute(_FROM_STAGE)  # "INSERT 0 <n>"
    return int(status.rsplit(" ", 1)[-1])


async def upsert_device_state(conn: asyncpg.Connection, rows: list[Accepted], now: datetime) -> None:
    """device_state for the whole batch: a row per device, folded from its messages here; one UPDATE for the
    devices that have a state row; those that do not yet get a bare row, which the same UPDATE then fills."""
    by_device: dict[tuple[str, str], list[Accepted]] = {}
    for r in rows:
        by_device.setdefault((r.tenant_id, r.device_id), []).append(r)
    cols: list[list[object]] = [[] for _ in range(12)]
    for (tenant_id, device_id), msgs in by_device.items():
        msgs.sort(key=lambda m: m.ts)  # stable: equal timestamps keep arrival order
        newest = msgs[-1]
        metrics: dict[str, object] = {}
        metrics_at: dict[str, str] = {}
        for m in msgs:
            if m.msg_type != "telemetry":
                continue  # a heartbeat's metrics are stored, but rules see the latest values of telemetry only
            stamp = m.ts.isoformat()
            for key, value in m.metrics.items():
                metrics[key] = value
                metrics_at[key] = stamp
        positioned = [m for m in msgs if m.lat is not None]
        telemetry = [m.received_at for m in msgs if m.msg_type == "telemetry"]
        heartbeat = [m.received_at for m in msgs if m.msg_type == "heartbeat"]
        values = (tenant_id, device_id, max(m.received_at for m in msgs),
                  max(telemetry) if telemetry else None, max(heartbeat) if heartbeat else None,
                  newest.ts, newest.seq, _encode(metrics).decode(), _encode(metrics_at).decode(),
                  positioned[-1].lat if positioned else None, positioned[-1].lng if positioned else None,
                  msgs[0].ts)
        for col, column_value in zip(cols, values, strict=True):
            col.append(column_value)
    updated = {(r[0], r[1]) for r in await conn.fetch(_UPDATE_STATE, *cols, now)}
    if len(updated) == len(by_device):
        return
    missing = [i for i, key in enumerate(zip(cols[0], cols[1], strict=True)) if key not in updated]
    rest = [[col[i] for i in missing] for col in cols]
    await conn.execute(_ADD_STATE, rest[0], rest[1])
    await conn.execute(_UPDATE_STATE, *rest, now)


def notify_payloads(rows: list[Accepted]) -> list[str]:
    """JSON lists of distinct [tenant_id, device_id] pairs, each at most NOTIFY_PAYLOAD_LIMIT bytes."""
    seen: dict[tuple[str, str], None] = {}
    for r in rows:
        seen.setdefault((r.tenant_id, r.device_id), None)
    payloads: list[str] = []
    parts: list[str] = []
    size = 2  # the brackets
    for pair in seen:
        encoded = _encode(list(pair)).decode()
        extra = len(encoded.encode()) + (1 if parts else 0)
        if parts and size + extra > NOTIFY_PAYLOAD_LIMIT:
            payloads.append("[" + ",".join(parts) + "]")
            parts, size, extra = [], 2, extra - 1
        parts.append(encoded)
        size += extra
    if parts:
        payloads.append("[" + ",".join(parts) + "]")
    return payloads


def _refused(row: Accepted, exc: Exception) -> QuarantineEvent:
    payload = _encode({"ts": row.ts, "seq": row.seq, "metrics": row.metrics, "lat": row.lat, "lng": row.lng})
    return quarantine_event(
        tenant_id=row.tenant_id, device_id=row.device_id, received_at=row.received_at, transport=row.transport,
        reason=Reason.INVALID_ENVELOPE, detail=f"the database refused the message: {exc}",
        topic=f"tenant/{row.tenant_id}/device/{row.device_id}/{row.msg_type}", payload=payload)


def _is_missing_partition(exc: BaseException) -> bool:
    return sqlstate(exc) == "23514" and any("no partition" in str(e) for e in error_chain(exc))


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # HTTP rejections do not wait for their event; keep asyncio from warning about it
