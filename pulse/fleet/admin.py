"""Tenant device administration: devices and their lifecycle, credentials, tags, sites, groups and CSV import.

Every function acts inside one tenant (the caller's transaction is scoped to it) and never commits. Ids in a
path that do not exist in the tenant raise NotFound; ids referenced from a body (a site, a group, devices of a
bulk change) that do not exist raise ValidationError naming the field. Any change to a device's status, site
or credentials is announced with `notify_device_changed`, so ingest drops its cached registry record at commit.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import msgspec
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import Conflict, NotFound, PulseError, ValidationError
from pulse.fleet.schemas import DeviceCredentials
from pulse.fleet.service import (
    DEVICE_CHANGED_CHANNEL,
    DEVICE_ID_RE,
    _revoke_credentials,
    check_device_id,
    issue_credentials,
    notify_device_changed,
    register_device,
)

MAX_TAGS = 50
MAX_ATTRIBUTES_BYTES = 16_384
MAX_HEARTBEAT_INTERVAL_S = 86_400
MAX_BULK_DEVICES = 1000
MAX_IMPORT_ROWS = 5000
MAX_IMPORT_BYTES = 2 * 1024 * 1024
IMPORT_COLUMNS = ("device_id", "name", "site_id", "device_type", "tags", "heartbeat_interval_s")
SETTABLE_STATUSES = ("ACTIVE", "DISABLED")
RESERVED_DEVICE_IDS = frozenset({"tags", "import"})
"""Device ids the tenant API cannot address: /customer/devices/tags and /customer/devices/import are bulk calls."""


# --- what is returned --------------------------------------------------------------------------------------------

class Device(msgspec.Struct, kw_only=True):
    """A device as its tenant administers it; `credentials_issued_at` is when its live token was issued."""

    device_id: str
    name: str | None
    site_id: str | None
    device_type: str | None
    tags: list[str]
    attributes: dict[str, Any]
    heartbeat_interval_s: int | None
    status: str
    lat: float | None
    lng: float | None
    group_ids: list[str]
    credentials_issued_at: datetime | None
    created_at: datetime
    updated_at: datetime
    decommissioned_at: datetime | None


class Site(msgspec.Struct, kw_only=True):
    site_id: str
    name: str
    timezone: str
    address: str | None
    lat: float | None
    lng: float | None
    device_count: int
    created_at: datetime
    updated_at: datetime


class DeviceGroup(msgspec.Struct, kw_only=True):
    group_id: str
    name: str
    description: str | None
    device_ids: list[str]
    created_at: datetime


class TagChange(msgspec.Struct, kw_only=True):
    """The result of a bulk tag change: devices changed, and decommissioned ones left as they were."""

    updated: int
    skipped: list[str]


class RowError(msgspec.Struct, kw_only=True):
    field: str | None
    message: str


class ImportRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    row: int
    device_id: str | None
    status: str  # "created" | "error"
    error: RowError | None = None


class ImportResult(msgspec.Struct, kw_only=True):
    created: int
    failed: int
    results: list[ImportRow]


# --- checks ------------------------------------------------------------------------------------------------------

def _text(value: Any, field: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"must be 1-{max_len} characters", field=field)
    value = value.strip()
    if len(value) > max_len or not value.isprintable():
        raise ValidationError(f"must be 1-{max_len} printable characters on one line", field=field)
    return value


def _optional_text(value: Any, field: str, max_len: int) -> str | None:
    return None if value is None else _text(value, field, max_len)


def check_tags(value: Any, field: str = "tags") -> list[str]:
    """Tags as stored: trimmed, each 1-64 printable characters without ';' (the CSV separator), duplicates dropped."""
    if not isinstance(value, list | tuple):
        raise ValidationError("must be a list of strings", field=field)
    out: list[str] = []
    for tag in value:
        tag = tag.strip() if isinstance(tag, str) else None
        if not tag or len(tag) > 64 or not tag.isprintable() or ";" in tag:
            raise ValidationError("each tag must be 1-64 printable characters without ';'", field=field)
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ValidationError(f"at most {MAX_TAGS} tags", field=field)
    return out


def _heartbeat(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_HEARTBEAT_INTERVAL_S:
        raise ValidationError(f"must be a whole number of seconds from 1 to {MAX_HEARTBEAT_INTERVAL_S}",
                              field="heartbeat_interval_s")
    return value


def _coordinate(value: Any, field: str, bound: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not -bound <= value <= bound:
        raise ValidationError(f"must be a number from {-bound:g} to {bound:g}", field=field)
    return float(value)


def _check_position(lat: float | None, lng: float | None) -> None:
    if (lat is None) != (lng is None):
        raise ValidationError("lat and lng are given together or not at all", field="lng" if lng is None else "lat")


def _attributes(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("must be a JSON object", field="attributes")
    if len(msgspec.json.encode(value)) > MAX_ATTRIBUTES_BYTES:
        raise ValidationError(f"must encode to at most {MAX_ATTRIBUTES_BYTES} bytes of JSON", field="attributes")
    return value


def _new_device_id(device_id: Any) -> str:
    check_device_id(device_id)
    if device_id in RESERVED_DEVICE_IDS:
        raise ValidationError(f"'{device_id}' is reserved; choose another device id", field="device_id")
    return str(device_id)


def check_site_id(site_id: Any, field: str = "site_id") -> str:
    if not isinstance(site_id, str) or not DEVICE_ID_RE.match(site_id):
        raise ValidationError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'", field=field)
    return site_id


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def _timezone(name: Any) -> str:
    if not isinstance(name, str) or name not in _zones():
        raise ValidationError("must be an IANA time zone name such as Europe/Berlin or UTC", field="timezone")
    try:
        ZoneInfo(name)
    except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValidationError("must be an IANA time zone name such as Europe/Berlin or UTC",
                              field="timezone") from exc
    return name


def parse_group_id(value: Any, field: str = "group_id") -> str:
    """A canonical UUID string, or a 400 naming the field (never a cast error from the database)."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ValidationError("must be a UUID", field=field) from None


def _device_id_list(value: Any, field: str = "device_ids", *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list | tuple) or (not value and not allow_empty):
        raise ValidationError("must be a non-empty list of device ids" if not allow_empty
                              else "must be a list of device ids", field=field)
    if len(value) > MAX_BULK_DEVICES:
        raise ValidationError(f"at most {MAX_BULK_DEVICES} devices at once", field=field)
    return list(dict.fromkeys(check_device_id(d, field=field) for d in value))


async def _require_known_devices(conn: AsyncConnection, tenant_id: str, device_ids: list[str],
                                 field: str = "device_ids") -> dict[str, str]:
    """Each device's status; a ValidationError naming `field` (and the missing ids) if any is unknown."""
    rows = (await conn.execute(text(
        "SELECT device_id, status FROM devices WHERE tenant_id = :t AND device_id = ANY(:ids)"),
        {"t": tenant_id, "ids": device_ids})).all()
    found = {r.device_id: r.status for r in rows}
    missing = [d for d in device_ids if d not in found]
    if missing:
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        raise ValidationError(f"no such device: {shown}", field=field, details={"device_ids": missing[:100]})
    return found


async def _require_known_groups(conn: AsyncConnection, tenant_id: str, group_ids: Any) -> list[str]:
    if not isinstance(group_ids, list | tuple):
        raise ValidationError("must be a list of group ids", field="group_ids")
    ids = list(dict.fromkeys(parse_group_id(g, "group_ids") for g in group_ids))
    if not ids:
        return []
    found = {r[0] for r in (await conn.execute(text(
        "SELECT group_id::text FROM device_groups WHERE tenant_id = :t AND group_id = ANY(CAST(:ids AS uuid[]))"),
        {"t": tenant_id, "ids": ids})).all()}
    missing = [g for g in ids if g not in found]
    if missing:
        raise ValidationError(f"no such device group: {', '.join(missing)}", field="group_ids")
    return ids


async def _require_known_site(conn: AsyncConnection, tenant_id: str, site_id: str) -> None:
    exists = (await conn.execute(text("SELECT 1 FROM sites WHERE tenant_id = :t AND site_id = :s"),
                                 {"t": tenant_id, "s": site_id})).first()
    if exists is None:
        raise ValidationError(f"site {site_id} does not exist", field="site_id")


# --- devices -----------------------------------------------------------------------------------------------------

_DEVICE_SQL = """
SELECT d.device_id, d.name, d.site_id, d.device_type, d.tags, d.attributes, d.heartbeat_interval_s, d.status,
       d.lat, d.lng, d.created_at, d.updated_at, d.decommissioned_at,
       ARRAY(SELECT m.group_id::text FROM device_group_members m
             WHERE m.tenant_id = d.tenant_id AND m.device_id = d.device_id
             ORDER BY m.added_at, m.group_id) AS group_ids,
       (SELECT max(c.created_at) FROM device_credentials c
        WHERE c.tenant_id = d.tenant_id AND c.device_id = d.device_id AND c.kind = 'PROVISION_TOKEN'
          AND c.revoked_at IS NULL) AS credentials_issued_at
FROM devices d WHERE d.tenant_id = :t AND d.device_id = :d
"""


async def get_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> Device | None:
    row = (await conn.execute(text(_DEVICE_SQL), {"t": tenant_id, "d": device_id})).first()
    if row is None:
        return None
    return Device(device_id=row.device_id, name=row.name, site_id=row.site_id, device_type=row.device_type,
                  tags=list(row.tags), attributes=dict(row.attributes), heartbeat_interval_s=row.heartbeat_interval_s,
                  status=row.status, lat=row.lat, lng=row.lng, group_ids=list(row.group_ids),
                  credentials_issued_at=row.credentials_issued_at, created_at=row.created_at,
                  updated_at=row.updated_at, decommissioned_at=row.decommissioned_at)


async def require_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> Device:
    device = await get_device(conn, tenant_id, device_id)
    if device is None:
        raise NotFound(f"device {device_id} not found", details={"field": "device_id"})
    return device


async def _lock_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> Any:
    row = (await conn.execute(text(
        "SELECT device_id, status, site_id, lat, lng FROM devices WHERE tenant_id = :t AND device_id = :d FOR UPDATE"),
        {"t": tenant_id, "d": device_id})).first()
    if row is None:
        raise NotFound(f"device {device_id} not found", details={"field": "device_id"})
    return row


async def create_device(conn: AsyncConnection, tenant_id: str, device_id: str, *, name: str | None = None,
                        site_id: str | None = None, device_type: str | None = None, tags: Sequence[str] = (),
                        attributes: dict[str, Any] | None = None, heartbeat_interval_s: int | None = None,
                        lat: float | None = None, lng: float | None = None, group_ids: Sequence[str] = (),
                        now: datetime, secret_key: bytes | None = None) -> tuple[Device, DeviceCredentials]:
    """Register an ACTIVE device within the subscription's device limit, put it in its groups and give it
    credentials at once (shown once: only their hashes are stored)."""
    device_id = await _register(conn, tenant_id, device_id, name=name, site_id=site_id, device_type=device_type,
                                tags=tags, attributes=attributes, heartbeat_interval_s=heartbeat_interval_s,
                                lat=lat, lng=lng, group_ids=group_ids, now=now)
    # Issuing also tells ingest, which may hold an "unknown device" record for this id.
    credentials = await issue_credentials(conn, tenant_id, device_id, now=now, secret_key=secret_key)
    return await require_device(conn, tenant_id, device_id), credentials


async def _register(conn: AsyncConnection, tenant_id: str, device_id: str, *, name: str | None = None,
                    site_id: str | None = None, device_type: str | None = None, tags: Sequence[str] = (),
                    attributes: dict[str, Any] | None = None, heartbeat_interval_s: int | None = None,
                    lat: float | None = None, lng: float | None = None, group_ids: Sequence[str] = (),
                    now: datetime) -> str:
    """Check every field, then register the device (fleet.service) with what registration does not cover."""
    device_id = _new_device_id(device_id)
    name = _optional_text(name, "name", 200)
    if site_id is not None:
        check_site_id(site_id)
    device_type = _optional_text(device_type, "device_type", 64)
    tag_list = check_tags(list(tags))
    attrs = _attributes(attributes)
    heartbeat = _heartbeat(heartbeat_interval_s)
    lat_v, lng_v = _coordinate(lat, "lat", 90), _coordinate(lng, "lng", 180)
    _check_position(lat_v, lng_v)
    groups = await _require_known_groups(conn, tenant_id, list(group_ids))
    await register_device(conn, tenant_id, device_id, name=name, device_type=device_type, site_id=site_id,
                          tags=tag_list, attributes=attrs, now=now)
    if heartbeat is not None or lat_v is not None:
        await conn.execute(text("UPDATE devices SET heartbeat_interval_s = :hb, lat = :lat, lng = :lng "
                                "WHERE tenant_id = :t AND device_id = :d"),
                           {"hb": heartbeat, "lat": lat_v, "lng": lng_v, "t": tenant_id, "d": device_id})
    await _add_members(conn, tenant_id, groups, [device_id], now)
    return device_id


_UPDATABLE = ("name", "site_id", "device_type", "tags", "attributes", "heartbeat_interval_s", "lat", "lng", "status")


async def update_device(conn: AsyncConnection, tenant_id: str, device_id: str, changes: dict[str, Any], *,
                        now: datetime) -> Device:
    """Change the given fields; `status` may be ACTIVE or DISABLED (a disabled device's messages are refused
    but it keeps its credentials). A decommissioned device cannot change (409)."""
    unknown = sorted(set(changes) - set(_UPDATABLE))
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]}", field=unknown[0])
    current = await _lock_device(conn, tenant_id, device_id)
    if current.status == "DECOMMISSIONED":
        raise Conflict(f"device {device_id} is decommissioned; it can only be deleted", details={"field": "status"})
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = _text(changes["name"], "name", 200)
    if "site_id" in changes:
        site_id = changes["site_id"]
        if site_id is not None:
            await _require_known_site(conn, tenant_id, check_site_id(site_id))
        values["site_id"] = site_id
    if "device_type" in changes:
        values["device_type"] = _optional_text(changes["device_type"], "device_type", 64)
    if "tags" in changes:
        values["tags"] = check_tags(changes["tags"])
    if "attributes" in changes:
        values["attributes"] = msgspec.json.encode(_attributes(changes["attributes"])).decode()
    if "heartbeat_interval_s" in changes:
        values["heartbeat_interval_s"] = _heartbeat(changes["heartbeat_interval_s"])
    if "lat" in changes:
        values["lat"] = _coordinate(changes["lat"], "lat", 90)
    if "lng" in changes:
        values["lng"] = _coordinate(changes["lng"], "lng", 180)
    if "lat" in values or "lng" in values:
        _check_position(values.get("lat", current.lat), values.get("lng", current.lng))
    if "status" in changes:
        status = changes["status"]
        if status not in SETTABLE_STATUSES:
            raise ValidationError("must be ACTIVE or DISABLED (decommission a device with POST …/decommission)",
                                  field="status")
        values["status"] = status
    if values:
        sets = ", ".join("attributes = CAST(:attributes AS jsonb)" if k == "attributes" else f"{k} = :{k}"
                         for k in values)
        await conn.execute(text(f"UPDATE devices SET {sets}, updated_at = :now "
                                "WHERE tenant_id = :t AND device_id = :d"),
                           {**values, "now": now, "t": tenant_id, "d": device_id})
        if "status" in values or "site_id" in values:
            await notify_device_changed(conn, tenant_id, device_id)
    return await require_device(conn, tenant_id, device_id)


async def decommission_device(conn: AsyncConnection, tenant_id: str, device_id: str, *, now: datetime) -> Device:
    """Retire a device for good: status DECOMMISSIONED, every credential revoked, no longer counted against the
    device limit. Decommissioning a decommissioned device changes nothing."""
    current = await _lock_device(conn, tenant_id, device_id)
    if current.status != "DECOMMISSIONED":
        await conn.execute(text("UPDATE devices SET status = 'DECOMMISSIONED', decommissioned_at = :now, "
                                "updated_at = :now WHERE tenant_id = :t AND device_id = :d"),
                           {"now": now, "t": tenant_id, "d": device_id})
        await _revoke_credentials(conn, tenant_id, device_id, now)
        await notify_device_changed(conn, tenant_id, device_id)
    return await require_device(conn, tenant_id, device_id)


async def delete_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> None:
    """Remove a decommissioned device with its state, credentials and group memberships (409 otherwise).
    Telemetry already stored stays until the retention period drops it."""
    current = await _lock_device(conn, tenant_id, device_id)
    if current.status != "DECOMMISSIONED":
        raise Conflict(f"device {device_id} is {current.status}; decommission it before deleting it",
                       details={"field": "device_id", "status": current.status})
    await conn.execute(text("DELETE FROM devices WHERE tenant_id = :t AND device_id = :d"),
                       {"t": tenant_id, "d": device_id})
    await notify_device_changed(conn, tenant_id, device_id)


async def rotate_device_credentials(conn: AsyncConnection, tenant_id: str, device_id: str, *, now: datetime,
                                    secret_key: bytes | None = None) -> DeviceCredentials:
    """New provision token and MQTT password for an ACTIVE device; the old ones stop working at commit."""
    current = await _lock_device(conn, tenant_id, device_id)
    if current.status != "ACTIVE":
        raise Conflict(f"device {device_id} is {current.status}; credentials are issued to ACTIVE devices only",
                       details={"field": "status", "status": current.status})
    return await issue_credentials(conn, tenant_id, device_id, now=now, secret_key=secret_key)


async def revoke_device_credentials(conn: AsyncConnection, tenant_id: str, device_id: str, *, now: datetime) -> None:
    """Revoke every live credential of the device; its status stays (issue new credentials to let it send)."""
    await _lock_device(conn, tenant_id, device_id)
    await _revoke_credentials(conn, tenant_id, device_id, now)
    await notify_device_changed(conn, tenant_id, device_id)


async def change_tags(conn: AsyncConnection, tenant_id: str, device_ids: Any, *, add: Any = (), remove: Any = (),
                      now: datetime) -> TagChange:
    """Add and remove tags on many devices at once (a tag in both lists ends up removed); decommissioned devices
    are skipped. Unknown device ids refuse the whole change."""
    ids = _device_id_list(device_ids)
    add_tags, remove_tags = check_tags(add, "add"), check_tags(remove, "remove")
    if not add_tags and not remove_tags:
        raise ValidationError("give tags to add or to remove", field="add")
    statuses = await _require_known_devices(conn, tenant_id, ids)
    skipped = [d for d in ids if statuses[d] == "DECOMMISSIONED"]
    live = [d for d in ids if statuses[d] != "DECOMMISSIONED"]
    result = await conn.execute(text("""
        UPDATE devices d SET updated_at = :now, tags = ARRAY(
            SELECT u.tag FROM unnest(d.tags || CAST(:add AS text[])) WITH ORDINALITY AS u(tag, i)
            WHERE u.tag <> ALL(CAST(:remove AS text[])) GROUP BY u.tag ORDER BY min(u.i))
        WHERE d.tenant_id = :t AND d.device_id = ANY(:ids)
          AND cardinality(ARRAY(SELECT DISTINCT x FROM unnest(d.tags || CAST(:add AS text[])) AS x
                                WHERE x <> ALL(CAST(:remove AS text[])))) <= :max_tags"""),
        {"now": now, "add": add_tags, "remove": remove_tags, "t": tenant_id, "ids": live, "max_tags": MAX_TAGS})
    if result.rowcount != len(live):
        raise ValidationError(f"a device would have more than {MAX_TAGS} tags", field="add")
    return TagChange(updated=len(live), skipped=skipped)


# --- sites -------------------------------------------------------------------------------------------------------

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
    lat_v, lng_v = _coordinate(lat, "lat", 90), _coordinate(lng, "lng", 180)
    _check_position(lat_v, lng_v)
    values = {"name": _text(name, "name", 200), "timezone": _timezone(timezone),
              "address": _optional_text(address, "address", 500), "lat": lat_v, "lng": lng_v}
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
            values[key] = _text(value, "name", 200)
        elif key == "timezone":
            values[key] = _timezone(value)
        elif key == "address":
            values[key] = _optional_text(value, "address", 500)
        elif key == "lat":
            values[key] = _coordinate(value, "lat", 90)
        elif key == "lng":
            values[key] = _coordinate(value, "lng", 180)
        else:
            raise ValidationError(f"unknown field {key}", field=key)
    if "lat" in values or "lng" in values:
        _check_position(values.get("lat", current.lat), values.get("lng", current.lng))
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


# --- device groups -----------------------------------------------------------------------------------------------

_GROUP_SQL = """
SELECT g.group_id::text AS group_id, g.name, g.description, g.created_at,
       ARRAY(SELECT m.device_id FROM device_group_members m WHERE m.group_id = g.group_id
             ORDER BY m.device_id) AS device_ids
FROM device_groups g WHERE g.tenant_id = :t
"""


def _group(row: Any) -> DeviceGroup:
    return DeviceGroup(group_id=row.group_id, name=row.name, description=row.description,
                       device_ids=list(row.device_ids), created_at=row.created_at)


async def list_groups(conn: AsyncConnection, tenant_id: str) -> list[DeviceGroup]:
    rows = (await conn.execute(text(_GROUP_SQL + " ORDER BY g.name"), {"t": tenant_id})).all()
    return [_group(r) for r in rows]


async def require_group(conn: AsyncConnection, tenant_id: str, group_id: str) -> DeviceGroup:
    group_id = parse_group_id(group_id)
    row = (await conn.execute(text(_GROUP_SQL + " AND g.group_id = CAST(:g AS uuid)"),
                              {"t": tenant_id, "g": group_id})).first()
    if row is None:
        raise NotFound(f"device group {group_id} not found", details={"field": "group_id"})
    return _group(row)


async def _name_free(conn: AsyncConnection, tenant_id: str, name: str, group_id: str | None = None) -> None:
    taken = (await conn.execute(text(
        "SELECT 1 FROM device_groups WHERE tenant_id = :t AND name = :n "
        "AND (CAST(:g AS uuid) IS NULL OR group_id <> CAST(:g AS uuid))"),
        {"t": tenant_id, "n": name, "g": group_id})).first()
    if taken:
        raise Conflict(f"a device group named {name!r} already exists", details={"field": "name"})


async def create_group(conn: AsyncConnection, tenant_id: str, name: str, *, description: str | None = None,
                       device_ids: Any = (), now: datetime) -> DeviceGroup:
    name = _text(name, "name", 100)
    description = _optional_text(description, "description", 500)
    members = _device_id_list(list(device_ids), allow_empty=True)
    if members:
        await _require_known_devices(conn, tenant_id, members)
    await _name_free(conn, tenant_id, name)
    group_id = (await conn.execute(text(
        "INSERT INTO device_groups (tenant_id, name, description, created_at) VALUES (:t, :n, :d, :now) "
        "RETURNING group_id::text"), {"t": tenant_id, "n": name, "d": description, "now": now})).scalar_one()
    await _add_members(conn, tenant_id, [group_id], members, now)
    return await require_group(conn, tenant_id, group_id)


async def update_group(conn: AsyncConnection, tenant_id: str, group_id: str, changes: dict[str, Any]) -> DeviceGroup:
    group = await require_group(conn, tenant_id, group_id)
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "name":
            values[key] = _text(value, "name", 100)
            await _name_free(conn, tenant_id, values[key], group.group_id)
        elif key == "description":
            values[key] = _optional_text(value, "description", 500)
        else:
            raise ValidationError(f"unknown field {key}", field=key)
    if values:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        await conn.execute(text(f"UPDATE device_groups SET {sets} "
                                "WHERE tenant_id = :t AND group_id = CAST(:g AS uuid)"),
                           {**values, "t": tenant_id, "g": group.group_id})
    return await require_group(conn, tenant_id, group.group_id)


async def delete_group(conn: AsyncConnection, tenant_id: str, group_id: str) -> None:
    """Delete a group (its devices stay). Alert and routing rules naming it no longer match through it."""
    group_id = parse_group_id(group_id)
    deleted = (await conn.execute(text(
        "DELETE FROM device_groups WHERE tenant_id = :t AND group_id = CAST(:g AS uuid) RETURNING group_id"),
        {"t": tenant_id, "g": group_id})).first()
    if deleted is None:
        raise NotFound(f"device group {group_id} not found", details={"field": "group_id"})


async def _add_members(conn: AsyncConnection, tenant_id: str, group_ids: Iterable[str], device_ids: list[str],
                       now: datetime) -> None:
    groups = list(group_ids)
    if not groups or not device_ids:
        return
    await conn.execute(text(
        "INSERT INTO device_group_members (tenant_id, group_id, device_id, added_at) "
        "SELECT :t, g, d, :now FROM unnest(CAST(:groups AS uuid[])) AS g, unnest(CAST(:devices AS text[])) AS d "
        "ON CONFLICT (group_id, device_id) DO NOTHING"),
        {"t": tenant_id, "groups": groups, "devices": device_ids, "now": now})


async def add_group_members(conn: AsyncConnection, tenant_id: str, group_id: str, device_ids: Any, *,
                            now: datetime) -> DeviceGroup:
    """Add devices to a group (those already in it stay as they are)."""
    group = await require_group(conn, tenant_id, group_id)
    members = _device_id_list(device_ids)
    await _require_known_devices(conn, tenant_id, members)
    await _add_members(conn, tenant_id, [group.group_id], members, now)
    return await require_group(conn, tenant_id, group.group_id)


async def set_group_members(conn: AsyncConnection, tenant_id: str, group_id: str, device_ids: Any, *,
                            now: datetime) -> DeviceGroup:
    """Make exactly these devices the group's members (an empty list empties it)."""
    group = await require_group(conn, tenant_id, group_id)
    members = _device_id_list(device_ids, allow_empty=True)
    if members:
        await _require_known_devices(conn, tenant_id, members)
    await conn.execute(text("DELETE FROM device_group_members WHERE tenant_id = :t AND group_id = CAST(:g AS uuid) "
                            "AND device_id <> ALL(:ids)"), {"t": tenant_id, "g": group.group_id, "ids": members})
    await _add_members(conn, tenant_id, [group.group_id], members, now)
    return await require_group(conn, tenant_id, group.group_id)


# --- CSV import --------------------------------------------------------------------------------------------------

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
                await _register(conn, tenant_id, fields.pop("device_id"), now=now, **fields)
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
