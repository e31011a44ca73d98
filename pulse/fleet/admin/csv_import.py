"""Registering many devices from a CSV file, each row on its own: good rows are kept even when others fail."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import PulseError, ValidationError
from pulse.fleet.admin import ImportResult, ImportRow, RowError
from pulse.fleet.admin.devices import register_checked_device
from pulse.fleet.service import DEVICE_CHANGED_CHANNEL

MAX_IMPORT_ROWS = 5000
MAX_IMPORT_BYTES = 2 * 1024 * 1024
IMPORT_COLUMNS = ("device_id", "name", "site_id", "device_type", "tags", "heartbeat_interval_s")


def _csv_rows(body: bytes) -> tuple[list[str], list[list[str]]]:
    """Header (lower-cased, checked) and data records of a UTF-8 CSV document."""
    if len(body) > MAX_IMPORT_BYTES:
        raise ValidationError(f"the CSV must be at most {MAX_IMPORT_BYTES} bytes", field="body")
    try:
        content = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"the CSV is not UTF-8 (byte {exc.start})", field="body") from None
    try:
        records = [r for r in csv.reader(io.StringIO(content, newline="")) if any(cell.strip() for cell in r)]
    except csv.Error as exc:
        raise ValidationError(f"unreadable CSV: {exc}", field="body") from None
    if not records:
        raise ValidationError("the CSV is empty; the first line must be a header naming the columns", field="body")
    header = [h.strip().lower() for h in records[0]]
    unknown = [h for h in header if h not in IMPORT_COLUMNS]
    if unknown:
        raise ValidationError(f"unknown column {unknown[0]!r}; columns are {', '.join(IMPORT_COLUMNS)}",
                              field="header", details={"column": unknown[0]})
    duplicated = [h for h in IMPORT_COLUMNS if header.count(h) > 1]
    if duplicated:
        raise ValidationError(f"column {duplicated[0]!r} appears twice", field="header",
                              details={"column": duplicated[0]})
    if "device_id" not in header:
        raise ValidationError("the header must name a device_id column", field="header",
                              details={"column": "device_id"})
    data = records[1:]
    if len(data) > MAX_IMPORT_ROWS:
        raise ValidationError(f"at most {MAX_IMPORT_ROWS} devices per import, got {len(data)}", field="body")
    return header, data


def _row_fields(header: list[str], record: list[str]) -> dict[str, Any]:
    if len(record) > len(header):
        raise ValidationError(f"has {len(record)} cells but the header names {len(header)} columns", field=None)
    cells = {h: (record[i].strip() if i < len(record) else "") for i, h in enumerate(header)}
    fields: dict[str, Any] = {k: (v or None) for k, v in cells.items() if k not in ("tags", "heartbeat_interval_s")}
    fields["tags"] = [t.strip() for t in cells.get("tags", "").split(";") if t.strip()]
    heartbeat = cells.get("heartbeat_interval_s", "")
    if heartbeat:
        try:
            fields["heartbeat_interval_s"] = int(heartbeat)
        except ValueError:
            raise ValidationError("must be a whole number of seconds", field="heartbeat_interval_s") from None
    return fields


async def import_devices_csv(conn: AsyncConnection, tenant_id: str, body: bytes, *, now: datetime) -> ImportResult:
    """Create one device per CSV row, each in a savepoint: good rows are kept even when others fail. No
    credentials are issued here (issue them per device). A malformed document as a whole raises
    ValidationError; a bad row is reported in its result (`row` counts the header as row 1)."""
    header, records = _csv_rows(body)
    results: list[ImportRow] = []
    id_column = header.index("device_id")
    for index, record in enumerate(records, start=2):
        device_id = record[id_column].strip() if len(record) > id_column else ""
        try:
            fields = _row_fields(header, record)
            if not fields.get("device_id"):
                raise ValidationError("is required", field="device_id")
            async with conn.begin_nested():
                await register_checked_device(conn, tenant_id, fields.pop("device_id"), now=now, **fields)
        except PulseError as exc:
            results.append(ImportRow(row=index, device_id=device_id or None, status="error",
                                     error=RowError(field=exc.details.get("field"), message=exc.message)))
        except IntegrityError:  # a concurrent request registered the same id first
            results.append(ImportRow(row=index, device_id=device_id or None, status="error",
                                     error=RowError(field="device_id", message=f"device {device_id} already exists")))
        else:
            results.append(ImportRow(row=index, device_id=device_id, status="created"))
    created = [r.device_id for r in results if r.status == "created"]
    if created:  # ingest may hold "unknown device" records for these ids
        await conn.execute(text("SELECT pg_notify(:c, :t || '/' || d) FROM unnest(CAST(:ids AS text[])) AS d"),
                           {"c": DEVICE_CHANGED_CHANNEL, "t": tenant_id, "ids": created})
    return ImportResult(created=len(created), failed=len(results) - len(created), results=results)
