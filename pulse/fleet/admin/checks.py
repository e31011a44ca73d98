"""Field checks and look-ups that device, site and group administration share; errors name the field."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import is_whole_number, parse_uuid
from pulse.errors import ValidationError
from pulse.fleet.service import DEVICE_ID_RE, check_device_id

MAX_TAGS = 50
MAX_ATTRIBUTES_BYTES = 16_384
MAX_HEARTBEAT_INTERVAL_S = 86_400
MAX_BULK_DEVICES = 1000
RESERVED_DEVICE_IDS = frozenset({"tags", "import"})
"""Device ids the tenant API cannot address: /customer/devices/tags and /customer/devices/import are bulk calls."""


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


def check_heartbeat_interval(value: Any) -> int | None:
    """A device's own heartbeat interval in seconds; None keeps the tenant default."""
    if value is None:
        return None
    if not is_whole_number(value, 1, MAX_HEARTBEAT_INTERVAL_S):
        raise ValidationError(f"must be a whole number of seconds from 1 to {MAX_HEARTBEAT_INTERVAL_S}",
                              field="heartbeat_interval_s")
    return value


def check_coordinate(value: Any, field: str, bound: float) -> float | None:
    """A latitude (bound 90) or longitude (bound 180), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not -bound <= value <= bound:
        raise ValidationError(f"must be a number from {-bound:g} to {bound:g}", field=field)
    return float(value)


def check_position(lat: float | None, lng: float | None) -> None:
    """A position has both coordinates or neither."""
    if (lat is None) != (lng is None):
        raise ValidationError("lat and lng are given together or not at all", field="lng" if lng is None else "lat")


def check_attributes(value: Any) -> dict[str, Any]:
    """A device's free-form attributes: a JSON object of at most MAX_ATTRIBUTES_BYTES."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("must be a JSON object", field="attributes")
    if len(msgspec.json.encode(value)) > MAX_ATTRIBUTES_BYTES:
        raise ValidationError(f"must encode to at most {MAX_ATTRIBUTES_BYTES} bytes of JSON", field="attributes")
    return value


def check_new_device_id(device_id: Any) -> str:
    """The id of a device to register: well-formed and not one the tenant API reserves."""
    check_device_id(device_id)
    if device_id in RESERVED_DEVICE_IDS:
        raise ValidationError(f"'{device_id}' is reserved; choose another device id", field="device_id")
    return str(device_id)


def check_site_id(site_id: Any, field: str = "site_id") -> str:
    """A site id: 1-128 letters, digits, '.', '_', ':' or '-'."""
    if not isinstance(site_id, str) or not DEVICE_ID_RE.match(site_id):
        raise ValidationError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'", field=field)
    return site_id


def check_device_ids(value: Any, field: str = "device_ids", *, allow_empty: bool = False) -> list[str]:
    """The device ids of a bulk change: at most MAX_BULK_DEVICES, well-formed, duplicates dropped."""
    if not isinstance(value, list | tuple) or (not value and not allow_empty):
        raise ValidationError("must be a non-empty list of device ids" if not allow_empty
                              else "must be a list of device ids", field=field)
    if len(value) > MAX_BULK_DEVICES:
        raise ValidationError(f"at most {MAX_BULK_DEVICES} devices at once", field=field)
    return list(dict.fromkeys(check_device_id(d, field=field) for d in value))


async def require_known_devices(conn: AsyncConnection, tenant_id: str, device_ids: list[str],
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


async def require_known_groups(conn: AsyncConnection, tenant_id: str, group_ids: Any) -> list[str]:
    """The group ids as canonical UUIDs; a ValidationError naming `group_ids` if any is not the tenant's."""
    if not isinstance(group_ids, list | tuple):
        raise ValidationError("must be a list of group ids", field="group_ids")
    ids = list(dict.fromkeys(parse_uuid(g, "group_ids") for g in group_ids))
    if not ids:
        return []
    found = {r[0] for r in (await conn.execute(text(
        "SELECT group_id::text FROM device_groups WHERE tenant_id = :t AND group_id = ANY(CAST(:ids AS uuid[]))"),
        {"t": tenant_id, "ids": ids})).all()}
    missing = [g for g in ids if g not in found]
    if missing:
        raise ValidationError(f"no such device group: {', '.join(missing)}", field="group_ids")
    return ids


async def require_known_site(conn: AsyncConnection, tenant_id: str, site_id: str) -> None:
    """A ValidationError naming `site_id` unless the tenant has this site."""
    exists = (await conn.execute(text("SELECT 1 FROM sites WHERE tenant_id = :t AND site_id = :s"),
                                 {"t": tenant_id, "s": site_id})).first()
    if exists is None:
        raise ValidationError(f"site {site_id} does not exist", field="site_id")
