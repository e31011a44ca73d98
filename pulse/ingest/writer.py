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

# Each batch is COPYed into a per-connection staging table first: telemetry is filled from it, and device_state is
# folded from it in SQL. The table name carries its shape: a pooled server connection may still hold an older one.
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS pulse_ingest_stage (
  time timestamptz, tenant_id text, device_id text, site_id text, msg_type text, seq bigint, metrics jsonb,
  received_at timestamptz, lat float8, lng float8, ord int
) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ("time", "tenant_id", "device_id", "site_id", "msg_type", "seq", "metrics", "received_at", "lat",
                  "lng", "ord")
_FROM_STAGE = """
INSERT INTO telemetry (time, tenant_id, device_id, site_id, msg_type, seq, metrics)
SELECT time, tenant_id, device_id, site_id, msg_type, seq, metrics FROM pulse_ingest_stage
ON CONFLICT DO NOTHING
"""

# One row per device, folded from the staged batch. A message's place is its time, then its arrival order `ord`:
# max() over [epoch, ord, …] arrays picks the newest message (its seq) and the newest one with a position; each
# telemetry metric's newest value in the batch is the one jsonb_object_agg keeps: fed in (time, ord) order, a key
# seen again takes its later value (heartbeats' metrics are stored, but rules see telemetry only). The plan has two
# relations, the folded batch and device_state, so no estimate of the unanalysed staging table can make it join the
# batch with itself row by row. Values only move forward: a late (older) message neither rewinds
# last_message_ts/last_seq nor overwrites a metric that already has a newer reading (per-key times in
# latest_metrics_at). When the batch's oldest message for a device is not older than anything stored (the usual
# case) every incoming metric is the newest, so the maps are simply merged; otherwise key by key.
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
  lat = coalesce(u.positioned[3], s.lat),
  lng = coalesce(u.positioned[4], s.lng),
  updated_at = $1
FROM (
  SELECT tenant_id, device_id, max(received_at) AS seen,
         max(received_at) FILTER (WHERE msg_type = 'telemetry') AS tel,
         max(received_at) FILTER (WHERE msg_type = 'heartbeat') AS hb,
         min(time) AS first_ts, max(time) AS ts,
         (max(ARRAY[extract(epoch FROM time), ord, seq]))[3]::bigint AS seq,
         max(ARRAY[extract(epoch FROM time)::float8, ord, lat, lng]) FILTER (WHERE lat IS NOT NULL) AS positioned,
         coalesce(jsonb_object_agg(key, value ORDER BY time, ord) FILTER (WHERE key IS NOT NULL), '{}') AS metrics,
         coalesce(jsonb_object_agg(key, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
                                   ORDER BY time, ord) FILTER (WHERE key IS NOT NULL), '{}') AS metrics_at
  FROM (
    SELECT st.tenant_id, st.device_id, st.msg_type, st.time, st.ord, st.seq, st.received_at, st.lat, st.lng,
           e.key, e.value
    FROM pulse_ingest_stage st
    LEFT JOIN LATERAL jsonb_each(CASE WHEN st.msg_type = 'telemetry' THEN st.metrics END) e ON true
    {only}) k
  GROUP BY tenant_id, device_id
) AS u
WHERE s.tenant_id = u.tenant_id AND s.device_id = u.device_id
"""
_UPDATE_ALL_STATE = _UPDATE_STATE.replace("{only}", "")
_UPDATE_ADDED_STATE = _UPDATE_STATE.replace(
    "{only}", "WHERE (st.tenant_id, st.device_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))")

# First state rows for the batch's devices that have none (registered devices only), which _UPDATE_ADDED_STATE
# then fills.
_ADD_STATE = """
INSERT INTO device_state (tenant_id, device_id)
SELECT DISTINCT st.tenant_id, st.device_id FROM pulse_ingest_stage st
JOIN devices d ON d.tenant_id = st.tenant_id AND d.device_id = st.device_id
ON CONFLICT (tenant_id, device_id) DO NOTHING
RETURNING tenant_id, device_id
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
                devices = distinct_devices(rows)
                await stage_rows(conn, rows)
                added = await write_telemetry(conn)
                await update_device_state(conn, len(devices), self._clock.now())
                for payload in notify_payloads(devices):
                    await conn.execute("SELECT pg_notify($1, $2)", TELEMETRY_CHANNEL, payload)
            await write_quarantine(conn, events)
        return added


async def stage_rows(conn: asyncpg.Connection, rows: list[Accepted]) -> None:
    """COPY the batch into the connection's staging table (emptied at commit), in arrival order."""
    await conn.execute(_STAGE_DDL)
    await conn.copy_records_to_table(
        "pulse_ingest_stage", columns=_STAGE_COLUMNS,
        records=[(r.ts, r.tenant_id, r.device_id, r.site_id, r.msg_type, r.seq, _encode(r.metrics).decode(),
                  r.received_at, r.lat, r.lng, i) for i, r in enumerate(rows)])


async def write_telemetry(conn: asyncpg.Connection) -> int:
    """Move the staged rows into `telemetry`; returns rows added.

    A message already stored (same tenant, device, time, seq and msg_type: a QoS 1 redelivery after a lost
    PUBACK, or an HTTP retry) is skipped by the unique index, so redelivery never duplicates a row.

    COPY straight into `telemetry` is refused for pulse_ingest because the table has row-level security
    ("COPY FROM not supported with row-level security"); INSERT … SELECT from the staging table is allowed
    and keeps COPY's cheap row transfer.
    """
    status = await conn.execute(_FROM_STAGE)  # "INSERT 0 <n>"
    return int(status.rsplit(" ", 1)[-1])


async def update_device_state(conn: asyncpg.Connection, devices: int, now: datetime) -> None:
    """device_state for the staged batch (`devices` distinct devices): one UPDATE folds it in for the devices that
    have a state row; those that do not yet get a bare row, which a second UPDATE limited to them then fills."""
    status = await conn.execute(_UPDATE_ALL_STATE, now)  # "UPDATE <n>"
    if int(status.rsplit(" ", 1)[-1]) == devices:
        return
    added = await conn.fetch(_ADD_STATE)
    if added:
        await conn.execute(_UPDATE_ADDED_STATE, now, [r[0] for r in added], [r[1] for r in added])


def distinct_devices(rows: list[Accepted]) -> list[tuple[str, str]]:
    """The batch's (tenant_id, device_id) pairs, each once, in order of first appearance."""
    return list(dict.fromkeys((r.tenant_id, r.device_id) for r in rows))


def notify_payloads(devices: list[tuple[str, str]]) -> list[str]:
    """JSON lists of [tenant_id, device_id] pairs, each at most NOTIFY_PAYLOAD_LIMIT bytes."""
    payloads: list[str] = []
    parts: list[str] = []
    size = 2  # the brackets
    for pair in devices:
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
