"""Read side of quarantine: rejected messages and per-minute counters, for operators (and tenants)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.sql import add_filters, fetch_page


class QuarantineEvent(msgspec.Struct, kw_only=True):
    quarantine_id: int
    tenant_id: str | None
    device_id: str | None
    received_at: datetime
    transport: str
    reason: str
    detail: str | None
    topic: str | None
    raw_payload: str | None
    payload_size: int | None


class QuarantineCount(msgspec.Struct, kw_only=True):
    tenant_id: str | None
    reason: str
    minute: datetime
    count: int


def _filters(tenant_id: str | None, reason: str | None, since: datetime | None, until: datetime | None,
             time_col: str) -> tuple[list[str], dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    add_filters(clauses, params, equal={"tenant_id": tenant_id, "reason": reason}, time_column=time_col,
                since=since, until=until)
    return clauses, params


async def list_quarantine_events(conn: AsyncConnection, *, tenant_id: str | None = None, reason: str | None = None,
                                 since: datetime | None = None, until: datetime | None = None, limit: int = 50,
                                 offset: int = 0) -> tuple[list[QuarantineEvent], int]:
    """Newest first, with the total matching count."""
    where, params = _filters(tenant_id, reason, since, until, "received_at")
    total, rows = await fetch_page(
        conn, columns="quarantine_id, tenant_id, device_id, received_at, transport, reason, detail, topic, "
                      "raw_payload, payload_size",
        source="quarantine_events", where=where, order_by="received_at DESC, quarantine_id DESC", params=params,
        limit=limit, offset=offset)
    return [msgspec.convert(dict(r._mapping), QuarantineEvent) for r in rows], total


async def list_quarantine_counts(conn: AsyncConnection, *, tenant_id: str | None = None, reason: str | None = None,
                                 since: datetime | None = None, until: datetime | None = None,
                                 limit: int = 1440) -> list[QuarantineCount]:
    """Per-minute counters, newest first."""
    clauses, params = _filters(tenant_id, reason, since, until, "minute")
    where = " AND ".join(clauses) or "true"
    rows = (await conn.execute(text(
        f"SELECT tenant_id, reason, minute, count FROM quarantine_counters WHERE {where} "
        f"ORDER BY minute DESC, tenant_id NULLS FIRST, reason LIMIT :limit"), {**params, "limit": limit})).mappings()
    return [msgspec.convert(dict(r), QuarantineCount) for r in rows]
