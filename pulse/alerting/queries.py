"""Read side of alerts for the API: filtered pages and one alert with its event history.

Plain SQL over a tenant-scoped connection; row-level security already limits rows to the tenant and
every query also names the tenant, so isolation holds twice. No Litestar here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.sql import fetch_page

ALERT_STATUSES = ("OPEN", "ACKNOWLEDGED", "CLOSED")

_COLUMNS = (
    "alert_id, fingerprint, alert_type, rule_id, device_id, site_id, severity, status, title, summary, metric, "
    "trigger_value, last_value, occurrence_count, opened_at, last_seen_at, acknowledged_at, acknowledged_by, "
    "closed_at, closed_by, close_reason, silenced_until, is_flapping, triggered_at, detected_at"
)


class Alert(msgspec.Struct, kw_only=True):
    alert_id: uuid.UUID
    fingerprint: str
    alert_type: str
    rule_id: uuid.UUID | None
    device_id: str | None
    site_id: str | None
    severity: int
    status: str
    title: str
    summary: str | None
    metric: str | None
    trigger_value: Any
    last_value: Any
    occurrence_count: int
    opened_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    close_reason: str | None
    silenced_until: datetime | None
    is_flapping: bool
    triggered_at: datetime | None
    detected_at: datetime


class AlertEvent(msgspec.Struct, kw_only=True):
    event_id: int
    kind: str
    actor: str
    reason: str | None
    details: dict[str, Any]
    created_at: datetime


class AlertWithEvents(Alert, kw_only=True):
    events: list[AlertEvent]


class AlertPage(msgspec.Struct, kw_only=True):
    items: list[Alert]
    total: int
    limit: int
    offset: int


def _alert(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


async def list_alerts(conn: AsyncConnection, tenant_id: str, *, statuses: Sequence[str] = (),
                      severity_min: int | None = None, device_id: str | None = None, limit: int = 50,
                      offset: int = 0) -> AlertPage:
    """Newest first (opened_at), with the total matching count for paging."""
    where = ["tenant_id = :tenant"]
    params: dict[str, Any] = {"tenant": tenant_id}
    if statuses:
        where.append("status = ANY(:statuses)")
        params["statuses"] = list(statuses)
    if severity_min is not None:
        where.append("severity >= :severity_min")
        params["severity_min"] = severity_min
    if device_id is not None:
        where.append("device_id = :device_id")
        params["device_id"] = device_id
    total, rows = await fetch_page(conn, columns=_COLUMNS, source="alerts", where=where,
                                   order_by="opened_at DESC, alert_id", params=params, limit=limit, offset=offset)
    items = [msgspec.convert(_alert(r), Alert) for r in rows]
    return AlertPage(items=items, total=total, limit=limit, offset=offset)


async def get_alert_with_events(conn: AsyncConnection, tenant_id: str, alert_id: uuid.UUID) -> AlertWithEvents | None:
    """One alert and its events in the order they happened; None when the tenant has no such alert."""
    row = (await conn.execute(text(f"SELECT {_COLUMNS} FROM alerts WHERE tenant_id = :t AND alert_id = :a"),
                              {"t": tenant_id, "a": alert_id})).first()
    if row is None:
        return None
    events = (await conn.execute(text(
        "SELECT event_id, kind, actor, reason, details, created_at FROM alert_events "
        "WHERE tenant_id = :t AND alert_id = :a ORDER BY created_at, event_id"), {"t": tenant_id, "a": alert_id})).all()
    return msgspec.convert({**_alert(row), "events": [dict(e._mapping) for e in events]}, AlertWithEvents)
