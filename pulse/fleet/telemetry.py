"""Read side of telemetry for the API: raw rows by time range with a cursor, latest values, downsampled
history of one metric, and a CSV export read in batches.

Every query is one device's rows inside a time range, so it walks the telemetry_device_time index
(tenant_id, device_id, time DESC, seq, msg_type) of the partitions the range touches. Callers check that the
device belongs to the tenant first (pulse.fleet.queries.require_device). No Litestar here.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import parse_iso_time
from pulse.csv_cells import safe_cell
from pulse.errors import ValidationError

RAW_DEFAULT_RANGE = timedelta(hours=1)
RAW_MAX_RANGE = timedelta(days=31)
RAW_DEFAULT_LIMIT = 1000
RAW_MAX_LIMIT = 5000
HISTORY_DEFAULT_RANGE = timedelta(hours=24)
HISTORY_MAX_RANGE = timedelta(days=400)
HISTORY_DEFAULT_POINTS = 500
HISTORY_MAX_POINTS = 2000
EXPORT_BATCH_ROWS = 2000
CSV_COLUMNS = ("time", "seq", "msg_type", "metric", "value")
MAX_METRIC_CHARS = 128

_MSG_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NULL_SEQ = 2**63 - 1  # rows without seq sort after every numbered row at the same time (NULLS LAST)


class TelemetryRow(msgspec.Struct, kw_only=True):
    time: datetime
    seq: int | None
    msg_type: str
    metrics: dict[str, Any]


class TelemetryPage(msgspec.Struct, kw_only=True):
    """Rows newest first; pass `next_cursor` back as `cursor` for the next (older) page, None when done."""

    device_id: str
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    items: list[TelemetryRow]
    next_cursor: str | None


class LatestMetric(msgspec.Struct, kw_only=True):
    value: Any
    time: datetime | None


class LatestTelemetry(msgspec.Struct, kw_only=True):
    device_id: str
    last_telemetry_at: datetime | None
    metrics: dict[str, LatestMetric]


class HistoryBucket(msgspec.Struct, kw_only=True):
    """One bucket that holds at least one numeric value; `time` is where the bucket starts."""

    time: datetime
    avg: float
    min: float
    max: float
    count: int


class MetricHistory(msgspec.Struct, kw_only=True):
    device_id: str
    metric: str
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    points: int
    bucket_seconds: float
    buckets: list[HistoryBucket]


class TelemetryCursor(msgspec.Struct, array_like=True):
    """The position after the last row of a page: (time, seq, msg_type), the order of the index."""

    time: datetime
    seq: int | None
    msg_type: str


def encode_cursor(cursor: TelemetryCursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).rstrip(b"=").decode()


def decode_cursor(value: str) -> TelemetryCursor:
    """The cursor a page returned, else a ValidationError naming `cursor`."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        cursor = msgspec.json.decode(raw, type=TelemetryCursor)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ValidationError("cursor is not one this API returned", field="cursor") from None
    if (cursor.time.tzinfo is None or (cursor.seq is not None and not -(2**63) <= cursor.seq < 2**63)
            or not _MSG_TYPE.match(cursor.msg_type)):
        raise ValidationError("cursor is not one this API returned", field="cursor")
    return cursor


def resolve_range(start: datetime | None, end: datetime | None, *, now: datetime, default: timedelta,
                  max_range: timedelta) -> tuple[datetime, datetime]:
    """[from, to): `to` defaults to now and `from` to `default` before `to`; from < to and at most `max_range`."""
    for value, name in ((start, "from"), (end, "to")):
        if value is not None and value.tzinfo is None:
            raise ValidationError(f"{name} needs a UTC offset (e.g. 2026-01-31T12:00:00Z)", field=name)
    end = end if end is not None else now
    try:
        start = start if start is not None else end - default
    except OverflowError:
        raise ValidationError("to is too early", field="to") from None
    if start >= end:
        raise ValidationError("from must be before to", field="from")
    if end - start > max_range:
        raise ValidationError(f"the range from {start.isoformat()} to {end.isoformat()} is longer than "
                              f"{max_range.days} days", field="from")
    return start, end


def check_metric(metric: str, field: str = "metric") -> str:
    if not metric or len(metric) > MAX_METRIC_CHARS:
        raise ValidationError(f"{field} must be 1-{MAX_METRIC_CHARS} characters", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in metric):
        raise ValidationError(f"{field} must not contain control characters", field=field)
    return metric


async def list_telemetry(conn: AsyncConnection, tenant_id: str, device_id: str, *, start: datetime,
                         end: datetime, metrics: Sequence[str] = (), limit: int = RAW_DEFAULT_LIMIT,
                         cursor: TelemetryCursor | None = None) -> TelemetryPage:
    """Stored rows with `start <= time < end`, newest first, `limit` at a time.

    With `metrics`, only rows holding at least one of them, each row showing only those metrics.
    """
    where = ["tenant_id = :t", "device_id = :d", "time >= :start", "time < :end"]
    params: dict[str, Any] = {"t": tenant_id, "d": device_id, "start": start, "end": end, "n": limit + 1}
    if metrics:
        where.append("metrics ?| CAST(:metrics AS text[])")
        params["metrics"] = list(metrics)
    if cursor is not None:
        where.append("time <= :ct")
        where.append(f"(time < :ct OR (time = :ct AND (coalesce(seq, {_NULL_SEQ}), msg_type) > (:cs, :cm)))")
        params.update(ct=cursor.time, cs=_NULL_SEQ if cursor.seq is None else cursor.seq, cm=cursor.msg_type)
    rows = (await conn.execute(text(
        f"SELECT time, seq, msg_type, metrics FROM telemetry WHERE {' AND '.join(where)} "
        "ORDER BY time DESC, seq ASC NULLS LAST, msg_type ASC LIMIT :n"), params)).all()
    wanted = set(metrics)
    items = [TelemetryRow(time=r.time, seq=r.seq, msg_type=r.msg_type,
                          metrics={k: v for k, v in r.metrics.items() if not wanted or k in wanted})
             for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(TelemetryCursor(time=last.time, seq=last.seq, msg_type=last.msg_type))
    return TelemetryPage(device_id=device_id, start=start, end=end, items=items, next_cursor=next_cursor)


async def get_latest_telemetry(conn: AsyncConnection, tenant_id: str, device_id: str) -> LatestTelemetry:
    """The newest value of each metric and when it was measured (from device_state, kept by ingest)."""
    row = (await conn.execute(text(
        "SELECT latest_metrics, latest_metrics_at, last_telemetry_at FROM device_state "
        "WHERE tenant_id = :t AND device_id = :d"), {"t": tenant_id, "d": device_id})).first()
    if row is None:
        return LatestTelemetry(device_id=device_id, last_telemetry_at=None, metrics={})
    times = row.latest_metrics_at or {}
    metrics = {key: LatestMetric(value=value, time=parse_iso_time(times.get(key)))
               for key, value in sorted((row.latest_metrics or {}).items())}
    return LatestTelemetry(device_id=device_id, last_telemetry_at=row.last_telemetry_at, metrics=metrics)


def bucket_width(start: datetime, end: datetime, points: int) -> timedelta:
    """(end - start) / points rounded up to a whole microsecond, so the range never needs more than `points`."""
    span_us = (end - start) // timedelta(microseconds=1)
    return timedelta(microseconds=max(1, math.ceil(span_us / points)))


async def get_metric_history(conn: AsyncConnection, tenant_id: str, device_id: str, metric: str, *,
                             start: datetime, end: datetime, points: int = HISTORY_DEFAULT_POINTS
                             ) -> MetricHistory:
    """Numeric values of `metric` in [start, end) in `points` equal buckets (date_bin from `start`).

    Each bucket has the avg, min, max and count of the numbers in it; strings and booleans are skipped and
    buckets without numbers are left out. Numbers are aggregated as numeric, so no sum overflows.
    """
    width = bucket_width(start, end, points)
    rows = (await conn.execute(text(
        "SELECT date_bin(:width, time, :start) AS bucket, avg(v)::float8 AS avg, min(v)::float8 AS min, "
        "max(v)::float8 AS max, count(v) AS n FROM ("
        "  SELECT time, CASE WHEN jsonb_typeof(metrics -> :m) = 'number' THEN (metrics -> :m)::numeric END AS v "
        "  FROM telemetry WHERE tenant_id = :t AND device_id = :d AND time >= :start AND time < :end "
        "  AND metrics ? :m) x "
        "WHERE v IS NOT NULL GROUP BY 1 ORDER BY 1"),
        {"width": width, "start": start, "end": end, "m": metric, "t": tenant_id, "d": device_id})).all()
    buckets = [HistoryBucket(time=r.bucket, avg=r.avg, min=r.min, max=r.max, count=int(r.n)) for r in rows]
    return MetricHistory(device_id=device_id, metric=metric, start=start, end=end, points=points,
                         bucket_seconds=width.total_seconds(), buckets=buckets)


async def iter_telemetry_csv(conn: AsyncConnection, tenant_id: str, device_id: str, *, start: datetime,
                             end: datetime, batch_rows: int = EXPORT_BATCH_ROWS) -> AsyncIterator[str]:
    """CSV text: a header, then one line per metric of each row in [start, end), oldest first.

    Rows come through a server-side cursor `batch_rows` at a time, so memory stays flat however long the
    range; the caller holds `conn`'s transaction open until the iterator is exhausted. A row without
    metrics (a bare heartbeat) is one line with empty metric and value. Numbers, booleans, objects and arrays
    are written as JSON; every text cell (msg_type, metric, string values) goes through `safe_cell`, so a
    string value such as `=HYPERLINK(...)` or `-5` reaches a spreadsheet as text, never as a formula.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield _drain(buffer)
    result = await conn.stream(text(
        "SELECT t.time, t.seq, t.msg_type, m.key, m.value #>> '{}' AS value, jsonb_typeof(m.value) AS value_type "
        "FROM telemetry t "
        "LEFT JOIN LATERAL jsonb_each(t.metrics) m ON true "
        "WHERE t.tenant_id = :t AND t.device_id = :d AND t.time >= :start AND t.time < :end "
        "ORDER BY t.time, t.seq NULLS LAST, t.msg_type, m.key").execution_options(yield_per=batch_rows),
        {"t": tenant_id, "d": device_id, "start": start, "end": end})
    async for batch in result.partitions(batch_rows):
        writer.writerows((r.time.isoformat(), "" if r.seq is None else r.seq, safe_cell(r.msg_type),
                          safe_cell(r.key), safe_cell(r.value) if r.value_type == "string" else r.value or "")
                         for r in batch)
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    chunk = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return chunk
