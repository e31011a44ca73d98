"""Read side of notifications for the API: channels (secrets masked), routing rules, the delivery log.

Plain SQL over a tenant-scoped connection; row-level security already limits rows to the tenant and
every query also names the tenant, so isolation holds twice. No Litestar here.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import parse_uuid
from pulse.errors import NotFound, ValidationError
from pulse.notify.service import MASK, open_secrets
from pulse.sql import check_page

JOB_STATUSES = ("PENDING", "IN_PROGRESS", "DELIVERED", "DEAD", "CANCELLED")
MAX_PAGE = 200


class Channel(msgspec.Struct, kw_only=True):
    """A channel as the API shows it: every secret value replaced by the mask."""

    channel_id: str
    name: str
    channel_type: str
    config: dict[str, Any]
    secrets: dict[str, str]
    is_enabled: bool
    rate_limit_per_min: int | None
    created_at: datetime
    updated_at: datetime


class RoutingRule(msgspec.Struct, kw_only=True):
    route_id: str
    name: str
    position: int
    channel_id: str
    min_severity: int
    alert_types: list[str]
    event_kinds: list[str]
    site_ids: list[str]
    group_ids: list[str]
    tags: list[str]
    device_id_prefix: str | None
    repeat_interval_s: int
    is_final: bool
    is_enabled: bool
    created_at: datetime
    updated_at: datetime


class Job(msgspec.Struct, kw_only=True):
    """One notification in the delivery log; `channel_id` is null once its channel was deleted."""

    job_id: str
    channel_id: str | None
    route_id: str | None
    alert_id: str | None
    event_id: int | None
    event_kind: str
    title: str | None
    severity: int | None
    status: str
    attempt_count: int
    max_attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class JobAttempt(msgspec.Struct, kw_only=True):
    attempt_no: int
    started_at: datetime
    finished_at: datetime
    latency_ms: int
    outcome: str
    status_code: int | None
    error: str | None


class JobWithAttempts(Job, kw_only=True):
    attempts: list[JobAttempt]


class JobPage(msgspec.Struct, kw_only=True):
    """Newest first; pass `next_cursor` back as `cursor` for the next page (null: no more)."""

    items: list[Job]
    limit: int
    next_cursor: str | None


_CHANNEL_COLUMNS = ("channel_id::text, name, channel_type, config, secrets_encrypted, is_enabled, rate_limit_per_min, "
                    "created_at, updated_at")
_ROUTE_COLUMNS = ("route_id::text, name, position, channel_id::text, min_severity, alert_types, event_kinds, site_ids, "
                  "group_ids::text[] AS group_ids, tags, device_id_prefix, repeat_interval_s, is_final, is_enabled, "
                  "created_at, updated_at")
_JOB_COLUMNS = ("j.job_id::text, j.channel_id::text, j.route_id::text, j.alert_id::text, j.event_id, j.event_kind, "
                "j.payload->>'title' AS title, (j.payload->>'severity')::int AS severity, j.status, j.attempt_count, "
                "j.max_attempts, j.next_attempt_at, j.last_error, j.created_at, j.updated_at, j.delivered_at")


def _channel(row: Any, key: bytes) -> Channel:
    names = open_secrets(key, row.channel_id, row.secrets_encrypted)
    return Channel(channel_id=row.channel_id, name=row.name, channel_type=row.channel_type, config=dict(row.config),
                   secrets={name: MASK for name in names}, is_enabled=row.is_enabled,
                   rate_limit_per_min=row.rate_limit_per_min, created_at=row.created_at, updated_at=row.updated_at)


async def list_channels(conn: AsyncConnection, tenant_id: str, *, secret_key: bytes) -> list[Channel]:
    rows = (await conn.execute(text(
        f"SELECT {_CHANNEL_COLUMNS} FROM notification_channels WHERE tenant_id = :t ORDER BY name"),
        {"t": tenant_id})).all()
    return [_channel(r, secret_key) for r in rows]


async def require_channel(conn: AsyncConnection, tenant_id: str, channel_id: str, *, secret_key: bytes) -> Channel:
    row = (await conn.execute(text(
        f"SELECT {_CHANNEL_COLUMNS} FROM notification_channels WHERE tenant_id = :t AND channel_id = CAST(:c AS uuid)"),
        {"t": tenant_id, "c": parse_uuid(channel_id, "channel_id")})).first()
    if row is None:
        raise NotFound(f"channel {channel_id} not found", details={"field": "channel_id"})
    return _channel(row, secret_key)


async def list_routes(conn: AsyncConnection, tenant_id: str) -> list[RoutingRule]:
    """In matching order: by position, then by age."""
    rows = (await conn.execute(text(
        f"SELECT {_ROUTE_COLUMNS} FROM notification_routing_rules WHERE tenant_id = :t "
        "ORDER BY position, created_at, route_id"), {"t": tenant_id})).all()
    return [msgspec.convert(dict(r._mapping), RoutingRule) for r in rows]


async def require_route(conn: AsyncConnection, tenant_id: str, route_id: str) -> RoutingRule:
    row = (await conn.execute(text(
        f"SELECT {_ROUTE_COLUMNS} FROM notification_routing_rules "
        "WHERE tenant_id = :t AND route_id = CAST(:r AS uuid)"),
        {"t": tenant_id, "r": parse_uuid(route_id, "route_id")})).first()
    if row is None:
        raise NotFound(f"routing rule {route_id} not found", details={"field": "route_id"})
    return msgspec.convert(dict(row._mapping), RoutingRule)


def encode_cursor(created_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, job_id = raw.split("|", 1)
        return datetime.fromisoformat(at), str(uuid.UUID(job_id))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationError("is not a cursor this API gave out", field="cursor") from None


async def list_jobs(conn: AsyncConnection, tenant_id: str, *, statuses: list[str] | None = None,
                    channel_id: str | None = None, alert_id: str | None = None, limit: int = 50,
                    cursor: str | None = None) -> JobPage:
    """The delivery log, newest first, paged by an opaque cursor (stable while new jobs arrive)."""
    check_page(limit, max_limit=MAX_PAGE)
    where = ["j.tenant_id = :t"]
    params: dict[str, Any] = {"t": tenant_id, "limit": limit + 1}
    if statuses:
        unknown = [s for s in statuses if s not in JOB_STATUSES]
        if unknown:
            raise ValidationError(f"unknown status {unknown[0]!r}; use {', '.join(JOB_STATUSES)}", field="status")
        where.append("j.status = ANY(:statuses)")
        params["statuses"] = statuses
    if channel_id is not None:
        where.append("j.channel_id = CAST(:c AS uuid)")
        params["c"] = parse_uuid(channel_id, "channel_id")
    if alert_id is not None:
        where.append("j.alert_id = CAST(:a AS uuid)")
        params["a"] = parse_uuid(alert_id, "alert_id")
    if cursor:
        params["cursor_at"], params["cursor_id"] = decode_cursor(cursor)
        where.append("(j.created_at, j.job_id) < (CAST(:cursor_at AS timestamptz), CAST(:cursor_id AS uuid))")
    rows = (await conn.execute(text(
        f"SELECT {_JOB_COLUMNS} FROM notification_jobs j WHERE {' AND '.join(where)} "
        "ORDER BY j.created_at DESC, j.job_id DESC LIMIT :limit"), params)).all()
    items = [msgspec.convert(dict(r._mapping), Job) for r in rows[:limit]]
    more = len(rows) > limit
    return JobPage(items=items, limit=limit,
                   next_cursor=encode_cursor(items[-1].created_at, items[-1].job_id) if more else None)


async def require_job(conn: AsyncConnection, tenant_id: str, job_id: str) -> JobWithAttempts:
    """One job and every attempt at it, oldest first."""
    params = {"t": tenant_id, "j": parse_uuid(job_id, "job_id")}
    row = (await conn.execute(text(
        f"SELECT {_JOB_COLUMNS} FROM notification_jobs j WHERE j.tenant_id = :t AND j.job_id = CAST(:j AS uuid)"),
        params)).first()
    if row is None:
        raise NotFound(f"job {job_id} not found", details={"field": "job_id"})
    attempts = (await conn.execute(text(
        "SELECT attempt_no, started_at, finished_at, latency_ms, outcome, status_code, error "
        "FROM notification_attempts WHERE tenant_id = :t AND job_id = CAST(:j AS uuid) "
        "ORDER BY attempt_no, attempt_id"), params)).all()
    return msgspec.convert({**dict(row._mapping), "attempts": [dict(a._mapping) for a in attempts]},
                           JobWithAttempts)
