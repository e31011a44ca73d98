"""Scopes of alert rules, maintenance windows and routing rules: lists of sites, device groups, device types,
devices and tags.

An empty list means any; the lists are checked alike wherever they appear, duplicates dropped and order kept. Sites,
device groups and devices named in a scope must exist in the tenant when the scope is written (require_scope): a
mistyped id would otherwise make a rule that never fires or a window that never holds anything.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import parse_uuid
from pulse.errors import ValidationError
from pulse.fleet.service import DEVICE_ID_RE

MAX_SCOPE = 1000
SCOPE_ID = DEVICE_ID_RE
"""What a site or device id in a scope looks like."""


def check_strings(values: Any, field: str, *, pattern: re.Pattern[str] | None, max_len: int) -> list[str]:
    """A scope list: at most MAX_SCOPE strings, each well-formed."""
    if not isinstance(values, list):
        raise ValidationError("must be a list of strings", field=field)
    if len(values) > MAX_SCOPE:
        raise ValidationError(f"give at most {MAX_SCOPE} entries", field=field)
    out: list[str] = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not 1 <= len(value) <= max_len:
            raise ValidationError(f"must be a string of 1-{max_len} characters", field=f"{field}[{i}]")
        if pattern is not None and not pattern.match(value):
            raise ValidationError("may contain only letters, digits and . _ : -", field=f"{field}[{i}]")
        if value not in out:
            out.append(value)
    return out


def check_group_ids(values: Any, field: str = "group_ids") -> list[str]:
    """A list of at most MAX_SCOPE device group UUIDs, canonical."""
    if not isinstance(values, list):
        raise ValidationError("must be a list of device group UUIDs", field=field)
    if len(values) > MAX_SCOPE:
        raise ValidationError(f"give at most {MAX_SCOPE} entries", field=field)
    groups: list[str] = []
    for i, group_id in enumerate(values):
        canonical = parse_uuid(group_id, f"{field}[{i}]")
        if canonical not in groups:
            groups.append(canonical)
    return groups


async def require_groups(conn: AsyncConnection, tenant_id: str, group_ids: list[str],
                         field: str = "group_ids") -> None:
    """Every group must be one of the tenant's device groups; the error names the first that is not."""
    if not group_ids:
        return
    found = set((await conn.execute(text(
        "SELECT group_id::text FROM device_groups WHERE tenant_id = :t AND group_id = ANY(CAST(:g AS uuid[]))"),
        {"t": tenant_id, "g": group_ids})).scalars().all())
    for i, group_id in enumerate(group_ids):
        if group_id not in found:
            raise ValidationError(f"no device group {group_id} in this tenant", field=f"{field}[{i}]")


_EXISTING = {
    "site_ids": ("site", "SELECT site_id FROM sites WHERE tenant_id = :t AND site_id = ANY(CAST(:ids AS text[]))"),
    "device_ids": ("device", "SELECT device_id FROM devices WHERE tenant_id = :t "
                             "AND device_id = ANY(CAST(:ids AS text[]))"),
}


async def require_scope(conn: AsyncConnection, tenant_id: str, scope: dict[str, Any],
                        fields: tuple[str, ...] = ("site_ids", "group_ids", "device_ids")) -> None:
    """Every site, device group and device the scope names (of `fields`) must be the tenant's; the error names the
    first that is not (`site_ids[2]`)."""
    for field in fields:
        ids = scope.get(field) or []
        if not ids:
            continue
        if field == "group_ids":
            await require_groups(conn, tenant_id, ids, field)
            continue
        noun, sql = _EXISTING[field]
        found = set((await conn.execute(text(sql), {"t": tenant_id, "ids": ids})).scalars().all())
        for i, value in enumerate(ids):
            if value not in found:
                raise ValidationError(f"no {noun} {value} in this tenant", field=f"{field}[{i}]")
