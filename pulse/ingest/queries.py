"""Read side of quarantine: rejected messages and per-minute counters, for operators (and tenants)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


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
             time_col: str) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = ["true"]
    params: dict[str, Any] = {}
    if tenant_id is not None:
        clauses.append("tenant_id = :tenant")
        params["tenant"] = tenant_id
    if reason is not None:
        clauses.append("reason = :reason")
        params["reason"] = reason
    if since is not None:
        clauses.append(f"{time_col} >= :since")
        params["since"] = since
    if until is not None:
        clauses.append(f"{time_col} < :until")
        params["until"] = until
    return " AND ".join(clauses), params


async def list_quarantine_events(conn: AsyncConnection, *, tenant_id: str | None = None, reason: str | None = None,
                                 since: datetime | None = None, until: datetime | None = None, limit: int = 50,
                                 offset: int = 0) -> tuple[list[QuarantineEvent], int]:
    """Newest first, with the total matching count."""
    where, params = _filters(tenant_id, reason, since, until, "received_at")
    total = (await conn.execute(text(f"SELECT count(*) FROM quarantine_events WHERE {where}"), params)).scalar_one()
    rows = (await conn.execute(text(
        f"SELECT quarantine_id, tenant_id, device_id, received_at, transport, reason, detail, topic, raw_payload, "
        f"payload_size FROM quarantine_events WHERE {where} ORDER BY received_at DESC, quarantine_id DESC "
        f"LIMIT :limit OFFSET :offset"), {**params, "limit": limit, "offset": offset})).mappings().all()
    return [msgspec.convert(dict(r), QuarantineEvent) for r in rows], int(total)


async def list_quarantine_counts(conn: AsyncConnection, *, tenant_id: str | None = None, reason: str | None = None,
                                 since: datetime | None = None, until: datetime | None = None,
                                 limit: int = 1440) -> list[QuarantineCount]:
    """Per-minute counters, newest first."""
    where, params = _filters(tenant_id, reason, since, until, "minute")
    rows = (await conn.execute(text(
        f"SELECT tenant_id, reason, minute, count FROM quarantine_counters WHERE {where} "
        f"ORDER BY minute DESC, tenant_id NULLS FIRST, reason LIMIT :limit"), {**params, "limit": limit})).mappings()
    return [msgspec.convert(dict(r), QuarantineCount) for r in rows]
