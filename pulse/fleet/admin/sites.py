"""A tenant's sites: where devices are, with their time zone and position."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_line, check_optional_line, check_timezone
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.fleet.admin import Site
from pulse.fleet.admin.checks import check_coordinate, check_position, check_site_id
from pulse.fleet.service import notify_device_changed

_SITE_SQL = """
SELECT s.site_id, s.name, s.timezone, s.address, s.lat, s.lng, s.created_at, s.updated_at,
       (SELECT count(*) FROM devices d WHERE d.tenant_id = s.tenant_id AND d.site_id = s.site_id) AS device_count
FROM sites s WHERE s.tenant_id = :t
"""


def _site(row: Any) -> Site:
    return Site(site_id=row.site_id, name=row.name, timezone=row.timezone, address=row.address, lat=row.lat,
                lng=row.lng, device_count=row.device_count, created_at=row.created_at, updated_at=row.updated_at)


async def list_sites(conn: AsyncConnection, tenant_id: str) -> list[Site]:
    rows = (await conn.execute(text(_SITE_SQL + " ORDER BY s.name, s.site_id"), {"t": tenant_id})).all()
    return [_site(r) for r in rows]


async def require_site(conn: AsyncConnection, tenant_id: str, site_id: str) -> Site:
    row = (await conn.execute(text(_SITE_SQL + " AND s.site_id = :s"), {"t": tenant_id, "s": site_id})).first()
    if row is None:
        raise NotFound(f"site {site_id} not found", details={"field": "site_id"})
    return _site(row)


async def create_site(conn: AsyncConnection, tenant_id: str, site_id: str, name: str, *, timezone: str = "UTC",
                      address: str | None = None, lat: float | None = None, lng: float | None = None,
                      now: datetime) -> Site:
    check_site_id(site_id)
    lat_v, lng_v = check_coordinate(lat, "lat", 90), check_coordinate(lng, "lng", 180)
    check_position(lat_v, lng_v)
    values = {"name": check_line(name, "name", 200), "timezone": check_timezone(timezone).key,
              "address": check_optional_line(address, "address", 500), "lat": lat_v, "lng": lng_v}
    inserted = (await conn.execute(text(
        "INSERT INTO sites (tenant_id, site_id, name, timezone, address, lat, lng, created_at, updated_at) "
        "VALUES (:t, :s, :name, :timezone, :address, :lat, :lng, :now, :now) "
        "ON CONFLICT (tenant_id, site_id) DO NOTHING RETURNING site_id"),
        {"t": tenant_id, "s": site_id, "now": now, **values})).first()
    if inserted is None:
        raise Conflict(f"site {site_id} already exists", details={"field": "site_id"})
    return await require_site(conn, tenant_id, site_id)


async def update_site(conn: AsyncConnection, tenant_id: str, site_id: str, changes: dict[str, Any], *,
                      now: datetime) -> Site:
    """Change name, timezone, address or position; the site id is permanent (devices refer to it)."""
    current = (await conn.execute(text("SELECT lat, lng FROM sites WHERE tenant_id = :t AND site_id = :s FOR UPDATE"),
                                  {"t": tenant_id, "s": site_id})).first()
    if current is None:
        raise NotFound(f"site {site_id} not found", details={"field": "site_id"})
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "name":
            values[key] = check_line(value, "name", 200)
        elif key == "timezone":
            values[key] = check_timezone(value).key
        elif key == "address":
            values[key] = check_optional_line(value, "address", 500)
        elif key == "lat":
            values[key] = check_coordinate(value, "lat", 90)
        elif key == "lng":
            values[key] = check_coordinate(value, "lng", 180)
        else:
            raise ValidationError(f"unknown field {key}", field=key)
    if "lat" in values or "lng" in values:
        check_position(values.get("lat", current.lat), values.get("lng", current.lng))
    if values:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        await conn.execute(text(f"UPDATE sites SET {sets}, updated_at = :now WHERE tenant_id = :t AND site_id = :s"),
                           {**values, "now": now, "t": tenant_id, "s": site_id})
    return await require_site(conn, tenant_id, site_id)


async def delete_site(conn: AsyncConnection, tenant_id: str, site_id: str) -> list[str]:
    """Delete a site; its devices stay, with no site. Returns those devices' ids."""
    devices = [r[0] for r in (await conn.execute(text(
        "SELECT device_id FROM devices WHERE tenant_id = :t AND site_id = :s FOR UPDATE"),
        {"t": tenant_id, "s": site_id})).all()]
    deleted = (await conn.execute(text("DELETE FROM sites WHERE tenant_id = :t AND site_id = :s RETURNING site_id"),
                                  {"t": tenant_id, "s": site_id})).first()
    if deleted is None:
        raise NotFound(f"site {site_id} not found", details={"field": "site_id"})
    for device_id in devices:  # ingest compares a message's site_id with the registered one
        await notify_device_changed(conn, tenant_id, device_id)
    return devices
