"""Devices and alerts of every tenant, as the operator lists them."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_no_nul
from pulse.errors import ValidationError
from pulse.fleet.operator import AlertPage, DevicePage, FleetAlert, FleetDevice
from pulse.fleet.operator.common import check_operator_page, member
from pulse.sql import fetch_page, like_pattern

DEVICE_STATES = ("UNKNOWN", "ONLINE", "STALE", "OFFLINE")
DEVICE_STATUSES = ("ACTIVE", "DISABLED", "REVOKED", "DECOMMISSIONED")
ALERT_STATUSES = ("OPEN", "ACKNOWLEDGED", "CLOSED")


async def list_fleet_devices(conn: AsyncConnection, *, tenant_id: str | None = None, state: str | None = None,
                             status: str | None = None, q: str | None = None, limit: int = 50,
                             offset: int = 0) -> DevicePage:
    """Devices of every tenant by (tenant, device); `q` matches part of the device id or name."""
    check_operator_page(limit, offset)
    tenant_id, q = check_no_nul(tenant_id, "tenant_id"), check_no_nul(q, "q")
    where: list[str] = []
    params: dict[str, Any] = {}
    if tenant_id is not None:
        where.append("d.tenant_id = :t")
        params["t"] = tenant_id
    if state is not None:
        where.append("coalesce(ds.status, 'UNKNOWN') = :state")
        params["state"] = member(state, DEVICE_STATES, "state")
    if status is not None:
        where.append("d.status = :status")
        params["status"] = member(status, DEVICE_STATUSES, "status")
    if q:
        where.append("(lower(d.device_id) LIKE lower(:q) ESCAPE '\\' OR lower(d.name) LIKE lower(:q) ESCAPE '\\')")
        params["q"] = like_pattern(q)
    total, rows = await fetch_page(
        conn, columns="d.tenant_id, d.device_id, d.name, d.device_type, d.site_id, CAST(d.subscription_id AS text) "
                      "AS subscription_id, d.status, coalesce(ds.status, 'UNKNOWN') AS state, ds.last_seen_at, "
                      "d.tags, d.created_at",
        source="devices d LEFT JOIN device_state ds USING (tenant_id, device_id)", where=where,
        order_by="d.tenant_id, d.device_id", params=params, limit=limit, offset=offset)
    return DevicePage(items=[msgspec.convert(dict(r._mapping), FleetDevice) for r in rows], total=total,
                      limit=limit, offset=offset)


async def list_fleet_alerts(conn: AsyncConnection, *, tenant_id: str | None = None, statuses: list[str] | None = None,
                            severity_min: int | None = None, limit: int = 50, offset: int = 0) -> AlertPage:
    """Alerts of every tenant, newest opened first."""
    check_operator_page(limit, offset)
    tenant_id = check_no_nul(tenant_id, "tenant_id")
    where: list[str] = []
    params: dict[str, Any] = {}
    if tenant_id is not None:
        where.append("tenant_id = :t")
        params["t"] = tenant_id
    if statuses:
        where.append("status = ANY(:statuses)")
        params["statuses"] = [member(s, ALERT_STATUSES, "status") for s in statuses]
    if severity_min is not None:
        if not 1 <= severity_min <= 5:
            raise ValidationError("must be 1 (info) to 5 (critical)", field="severity_min")
        where.append("severity >= :sev")
        params["sev"] = severity_min
    total, rows = await fetch_page(
        conn, columns="CAST(alert_id AS text) AS alert_id, tenant_id, alert_type, device_id, site_id, severity, "
                      "status, title, opened_at, last_seen_at, acknowledged_at, closed_at",
        source="alerts", where=where, order_by="opened_at DESC, alert_id", params=params, limit=limit, offset=offset)
    return AlertPage(items=[msgspec.convert(dict(r._mapping), FleetAlert) for r in rows], total=total, limit=limit,
                     offset=offset)
