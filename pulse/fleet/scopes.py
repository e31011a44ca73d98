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


def _scope_list(values: Any, field: str, what: str) -> list[Any]:
    if not isinstance(values, list):
        raise ValidationError(f"must be a list of {what}", field=field)
    if len(values) > MAX_SCOPE:
        raise ValidationError(f"give at most {MAX_SCOPE} entries", field=field)
    return values


def check_strings(values: Any, field: str, *, pattern: re.Pattern[str] | None, max_len: int) -> list[str]:
    """A scope list: at most MAX_SCOPE strings, each well-formed."""
    out: list[str] = []
    for i, value in enumerate(_scope_list(values, field, "strings")):
        if not isinstance(value, str) or not 1 <= len(value) <= max_len:
            raise ValidationError(f"must be a string of 1-{max_len} characters", field=f"{field}[{i}]")
        if pattern is not None and not pattern.match(value):
            raise ValidationError("may contain only letters, digits and . _ : -", field=f"{field}[{i}]")
        if value not in out:
            out.append(value)
    return out


def check_group_ids(values: Any, field: str = "group_ids") -> list[str]:
    """A list of at most MAX_SCOPE device group UUIDs, canonical."""
    groups: list[str] = []
    for i, group_id in enumerate(_scope_list(values, field, "device group UUIDs")):
        canonical = parse_uuid(group_id, f"{field}[{i}]")
        if canonical not in groups:
            groups.append(canonical)
    return groups


_EXISTING = {
    "site_ids": ("site", "SELECT site_id FROM sites WHERE tenant_id = :t AND site_id = ANY(CAST(:ids AS text[]))"),
    "group_ids": ("device group", "SELECT group_id::text FROM device_groups WHERE tenant_id = :t "
                                  "AND group_id = ANY(CAST(:ids AS uuid[]))"),
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
        noun, sql = _EXISTING[field]
        found = set((await conn.execute(text(sql), {"t": tenant_id, "ids": ids})).scalars().all())
        for i, value in enumerate(ids):
            if value not in found:
                raise ValidationError(f"no {noun} {value} in this tenant", field=f"{field}[{i}]")
