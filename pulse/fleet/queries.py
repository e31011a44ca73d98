"""Read side of the device registry for the API: filtered device pages, one device in detail, fleet summary.

Plain SQL over a tenant-scoped connection; row-level security already limits rows to the tenant and every
query also names the tenant, so isolation holds twice. Lists are built to use the registry's indexes on a
fleet of 100k devices: the primary key (tenant_id, device_id) for the default order and paging, devices_name
and devices_name_desc for sorting by name, devices_site for `site_id`, device_state_status for `state`.

Row-level security keeps `@>` and `LIKE` (not LEAKPROOF) out of index conditions, so tag and text filters
are applied by `pulse_device_ids_matching` (migrations 0007, 0008): the ids of the current tenant's devices with
those tags and that text, found through devices_tags and the trigram indexes on lower(device_id) and lower(name)
(text matches case-insensitively as `lower(column) LIKE lower(pattern)`); the rows are then read by id under
RLS. A page's ids are found first on narrow rows (index-only where the order allows) and only those rows are
read in full. Sorting by last_seen_at or state has no index: one on device_state's last_seen_at would cost
ingest its HOT updates, so the tenant's device_state rows are sorted instead. No Litestar here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.errors import NotFound, ValidationError
from pulse.fleet.service import DEVICE_ID_RE
from pulse.sql import like_pattern

DEVICE_STATES = ("ONLINE", "STALE", "OFFLINE", "UNKNOWN")
LIFECYCLE_STATUSES = ("ACTIVE", "DISABLED", "REVOKED", "DECOMMISSIONED")
SEVERITIES = (1, 2, 3, 4, 5)
DEVICE_SORTS = ("device_id", "name", "last_seen_at", "status")
STATE_HISTORY_LIMIT = 20
TRIGRAM_MIN_CHARS = 3
"""Shorter text has no trigram to look up; it is matched against each of the tenant's devices instead."""

# Sorting by status goes from most to least recently heard: ONLINE, STALE, OFFLINE, UNKNOWN (never heard).
_STATE_RANK = ("CASE coalesce(s.status, 'UNKNOWN') WHEN 'ONLINE' THEN 1 WHEN 'STALE' THEN 2 "
               "WHEN 'OFFLINE' THEN 3 ELSE 4 END")
_SORT_SQL = {
    "device_id": "",
    "name": "d.name {dir} NULLS LAST",
    "last_seen_at": "s.last_seen_at {dir} NULLS LAST",
    "status": _STATE_RANK + " {dir}",
}
_SORTED_BY_STATE = frozenset({"last_seen_at", "status"})

_DEVICE_COLUMNS = (
    "d.device_id, d.name, d.device_type, d.site_id, d.tags, d.attributes, d.status AS lifecycle, "
    "d.heartbeat_interval_s, d.lat, d.lng, d.created_at, d.updated_at, d.decommissioned_at"
)
_STATE_COLUMNS = (
    "coalesce(s.status, 'UNKNOWN') AS state_status, s.last_seen_at, s.last_state_change_at, "
    "coalesce(s.latest_metrics, '{}'::jsonb) AS latest_metrics"
)
_STATE_DETAIL_COLUMNS = (
    ", s.last_telemetry_at, s.last_heartbeat_at, s.last_message_ts, s.last_seq, "
    "coalesce(s.latest_metrics_at, '{}'::jsonb) AS latest_metrics_at, s.lat AS state_lat, s.lng AS state_lng"
)
_SOURCE = "devices d LEFT JOIN device_state s ON s.tenant_id = d.tenant_id AND s.device_id = d.device_id"
_FROM = f"FROM {_SOURCE}"


class DeviceState(msgspec.Struct, kw_only=True):
    """Connectivity as the liveness evaluator sees it, and the newest value of each metric."""

    status: str
    last_seen_at: datetime | None
    last_state_change_at: datetime | None
    latest_metrics: dict[str, Any]


class DeviceStateDetail(DeviceState, kw_only=True):
    last_telemetry_at: datetime | None
    last_heartbeat_at: datetime | None
    last_message_ts: datetime | None
    last_seq: int | None
    latest_metrics_at: dict[str, Any]
    lat: float | None
    lng: float | None


class Device(msgspec.Struct, kw_only=True):
    """A registered device; `lifecycle` is its registry status, `state.status` its connectivity."""

    device_id: str
    name: str | None
    device_type: str | None
    site_id: str | None
    tags: list[str]
    attributes: dict[str, Any]
    lifecycle: str
    heartbeat_interval_s: int | None
    lat: float | None
    lng: float | None
    created_at: datetime
    updated_at: datetime
    decommissioned_at: datetime | None
    state: DeviceState


class DevicePage(msgspec.Struct, kw_only=True):
    items: list[Device]
    total: int
    limit: int
    offset: int


class DeviceGroupRef(msgspec.Struct, kw_only=True):
    group_id: uuid.UUID
    name: str


class StateChange(msgspec.Struct, kw_only=True):
    status: str
    previous_status: str | None
    changed_at: datetime


class DeviceDetail(Device, kw_only=True):
    state: DeviceStateDetail
    site_name: str | None
    groups: list[DeviceGroupRef]
    open_alert_count: int
    state_history: list[StateChange]
    """The last STATE_HISTORY_LIMIT connectivity changes, newest first."""


class StateCounts(msgspec.Struct, kw_only=True):
    ONLINE: int = 0
    STALE: int = 0
    OFFLINE: int = 0
    UNKNOWN: int = 0


class LifecycleCounts(msgspec.Struct, kw_only=True):
    ACTIVE: int = 0
    DISABLED: int = 0
    REVOKED: int = 0
    DECOMMISSIONED: int = 0


class SiteSummary(msgspec.Struct, kw_only=True):
    site_id: str | None
    """None for the devices that belong to no site."""
    name: str | None
    total: int
    by_state: StateCounts


class OpenAlerts(msgspec.Struct, kw_only=True):
    """Alerts not closed yet (OPEN and ACKNOWLEDGED); `by_severity` has the keys "1" (info) ... "5" (critical)."""

    total: int
    acknowledged: int
    by_severity: dict[str, int]


class FleetSummary(msgspec.Struct, kw_only=True):
    """Device counts; `by_state` counts ACTIVE devices only (the liveness evaluator watches no others)."""

    total: int
    by_state: StateCounts
    by_lifecycle: LifecycleCounts
    by_site: list[SiteSummary]
    open_alerts: OpenAlerts


def check_device_id(device_id: str) -> str:
    """A device id as the registry allows it, else a ValidationError naming `device_id`."""
    if not DEVICE_ID_RE.match(device_id):
        raise ValidationError("device_id must be 1-128 characters of A-Z a-z 0-9 . _ : -", field="device_id")
    return device_id


def _sort_key(sort: str) -> str:
    key = sort[1:] if sort.startswith("-") else sort
    if key not in DEVICE_SORTS:
        raise ValidationError(f"unknown sort {sort!r}; use {', '.join(DEVICE_SORTS)} (prefix - for descending)",
                              field="sort")
    return key


def _order_by(sort: str) -> str:
    key = _sort_key(sort)
    direction = "DESC" if sort.startswith("-") else "ASC"
    head = _SORT_SQL[key]
    parts = [head.format(dir=direction)] if head else []
    parts.append(f"d.device_id {direction}")  # the tie-breaker keeps pages stable
    return ", ".join(parts)


def _state(mapping: dict[str, Any]) -> dict[str, Any]:
    return {"status": mapping["state_status"], "last_seen_at": mapping["last_seen_at"],
            "last_state_change_at": mapping["last_state_change_at"], "latest_metrics": mapping["latest_metrics"]}


def _device(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    out = {k: m[k] for k in ("device_id", "name", "device_type", "site_id", "tags", "attributes", "lifecycle",
                             "heartbeat_interval_s", "lat", "lng", "created_at", "updated_at", "decommissioned_at")}
    out["tags"] = list(out["tags"] or [])
    out["state"] = _state(m)
    return out


async def list_devices(conn: AsyncConnection, tenant_id: str, *, states: Sequence[str] = (),
                       lifecycles: Sequence[str] = (), site_id: str | None = None, tags: Sequence[str] = (),
                       group_id: uuid.UUID | None = None, query: str | None = None, sort: str = "device_id",
                       limit: int = 50, offset: int = 0) -> DevicePage:
    """One page of the tenant's devices with their state, and the total count of matches.

    Tags match when the device has all of them. `query` is a case-insensitive substring of the device id or
    name (so a prefix matches too); `%`, `_` and `\\` in it are literal characters.
    """
    order_by = _order_by(sort)
    where = ["d.tenant_id = :tenant"]
    params: dict[str, Any] = {"tenant": tenant_id}
    needs_state = False
    if states:
        # A plain equality on s.status makes the join inner, so device_state_status can drive it.
        where.append("s.status = ANY(:states)")
        params["states"] = list(states)
        needs_state = True
    if lifecycles:
        where.append("d.status = ANY(:lifecycles)")
        params["lifecycles"] = list(lifecycles)
    if site_id is not None:
        where.append("d.site_id = :site_id")
        params["site_id"] = site_id
    if group_id is not None:
        where.append("EXISTS (SELECT 1 FROM device_group_members m WHERE m.group_id = :group_id "
                     "AND m.tenant_id = d.tenant_id AND m.device_id = d.device_id)")
        params["group_id"] = group_id
    searchable = query is not None and len(query) >= TRIGRAM_MIN_CHARS
    if tags or searchable:
        # Index-backed narrowing (see the module docstring); it applies the tags and the text itself.
        where.append("d.device_id IN (SELECT pulse_device_ids_matching(CAST(:tags AS text[]), CAST(:pattern AS text)))")
        params.update(tags=list(tags) or None, pattern=like_pattern(query) if query and searchable else None)
    if query and not searchable:
        where.append("(lower(d.device_id) LIKE lower(:pattern) ESCAPE '\\' "
                     "OR lower(d.name) LIKE lower(:pattern) ESCAPE '\\')")
        params["pattern"] = like_pattern(query)
    condition = " AND ".join(where)
    bound = {**params, "limit": limit, "offset": offset}
    # One pass over narrow rows (index-only where the order allows) counts the matches and picks the page's ids;
    # only the page's rows are then read in full.
    narrow = _SOURCE if needs_state or _sort_key(sort) in _SORTED_BY_STATE else "devices d"
    rows = (await conn.execute(text(
        f"SELECT {_DEVICE_COLUMNS}, {_STATE_COLUMNS}, p.total FROM ("
        f"  SELECT d.device_id, count(*) OVER () AS total FROM {narrow} WHERE {condition} "
        f"  ORDER BY {order_by} LIMIT :limit OFFSET :offset) p "
        f"JOIN ({_SOURCE}) ON d.tenant_id = :tenant AND d.device_id = p.device_id ORDER BY {order_by}"),
        bound)).all()
    if rows:
        total = int(rows[0].total)
    elif offset:  # past the last match: the count still tells the client where the matches end
        total = int((await conn.execute(text(f"SELECT count(*) FROM {narrow} WHERE {condition}"), bound)).scalar_one())
    else:
        total = 0
    items = [msgspec.convert(_device(r), Device) for r in rows]
    return DevicePage(items=items, total=total, limit=limit, offset=offset)


async def device_exists(conn: AsyncConnection, tenant_id: str, device_id: str) -> bool:
    """Whether the tenant has this device (in any lifecycle status)."""
    found = (await conn.execute(text("SELECT 1 FROM devices WHERE tenant_id = :t AND device_id = :d"),
                                {"t": tenant_id, "d": device_id})).first()
    return found is not None


async def require_device(conn: AsyncConnection, tenant_id: str, device_id: str) -> None:
    """NotFound (naming `device_id`) unless the tenant has this device; another tenant's device is not found."""
    if not await device_exists(conn, tenant_id, device_id):
        raise NotFound(f"device {device_id} not found", details={"field": "device_id"})


async def get_device_detail(conn: AsyncConnection, tenant_id: str, device_id: str) -> DeviceDetail | None:
    """One device with its state, groups, count of alerts not closed and recent state changes; None if absent."""
    row = (await conn.execute(text(
        f"SELECT {_DEVICE_COLUMNS}, {_STATE_COLUMNS}{_STATE_DETAIL_COLUMNS}, si.name AS site_name {_FROM} "
        "LEFT JOIN sites si ON si.tenant_id = d.tenant_id AND si.site_id = d.site_id "
        "WHERE d.tenant_id = :t AND d.device_id = :d"), {"t": tenant_id, "d": device_id})).first()
    if row is None:
        return None
    m = dict(row._mapping)
    out = _device(row)
    out["state"].update({k: m[k] for k in ("last_telemetry_at", "last_heartbeat_at", "last_message_ts",
                                           "last_seq", "latest_metrics_at")})
    out["state"].update(lat=m["state_lat"], lng=m["state_lng"])
    out["site_name"] = m["site_name"]
    params = {"t": tenant_id, "d": device_id}
    groups = (await conn.execute(text(
        "SELECT g.group_id, g.name FROM device_group_members m JOIN device_groups g ON g.group_id = m.group_id "
        "WHERE m.tenant_id = :t AND m.device_id = :d ORDER BY g.name"), params)).all()
    out["groups"] = [dict(g._mapping) for g in groups]
    out["open_alert_count"] = int((await conn.execute(text(
        "SELECT count(*) FROM alerts WHERE tenant_id = :t AND device_id = :d "
        "AND status IN ('OPEN', 'ACKNOWLEDGED')"), params)).scalar_one())
    history = (await conn.execute(text(
        "SELECT status, previous_status, changed_at FROM device_state_history "
        "WHERE tenant_id = :t AND device_id = :d ORDER BY changed_at DESC, history_id DESC LIMIT :n"),
        {**params, "n": STATE_HISTORY_LIMIT})).all()
    out["state_history"] = [dict(h._mapping) for h in history]
    return msgspec.convert(out, DeviceDetail)


async def get_fleet_summary(conn: AsyncConnection, tenant_id: str) -> FleetSummary:
    """Counts by state, lifecycle and site (every site of the tenant, empty ones too) and alerts not closed."""
    rows = (await conn.execute(text(
        "SELECT d.site_id, d.status AS lifecycle, coalesce(s.status, 'UNKNOWN') AS state, count(*) AS n "
        f"{_FROM} WHERE d.tenant_id = :t GROUP BY 1, 2, 3"), {"t": tenant_id})).all()
    sites = (await conn.execute(text("SELECT site_id, name FROM sites WHERE tenant_id = :t ORDER BY site_id"),
                                {"t": tenant_id})).all()
    alerts = (await conn.execute(text(
        "SELECT severity, status, count(*) AS n FROM alerts WHERE tenant_id = :t "
        "AND status IN ('OPEN', 'ACKNOWLEDGED') GROUP BY 1, 2"), {"t": tenant_id})).all()

    by_state = StateCounts()
    by_lifecycle = LifecycleCounts()
    per_site: dict[str | None, SiteSummary] = {
        s.site_id: SiteSummary(site_id=s.site_id, name=s.name, total=0, by_state=StateCounts()) for s in sites}
    total = 0
    for r in rows:
        n = int(r.n)
        total += n
        setattr(by_lifecycle, r.lifecycle, getattr(by_lifecycle, r.lifecycle) + n)
        site = per_site.setdefault(r.site_id, SiteSummary(site_id=r.site_id, name=None, total=0,
                                                          by_state=StateCounts()))
        site.total += n
        if r.lifecycle == "ACTIVE":
            setattr(by_state, r.state, getattr(by_state, r.state) + n)
            setattr(site.by_state, r.state, getattr(site.by_state, r.state) + n)
    by_severity = {str(s): 0 for s in SEVERITIES}
    acknowledged = 0
    for a in alerts:
        by_severity[str(a.severity)] += int(a.n)
        if a.status == "ACKNOWLEDGED":
            acknowledged += int(a.n)
    ordered_sites = sorted(per_site.values(), key=lambda s: (s.site_id is None, s.site_id or ""))
    return FleetSummary(total=total, by_state=by_state, by_lifecycle=by_lifecycle, by_site=ordered_sites,
                        open_alerts=OpenAlerts(total=sum(by_severity.values()), acknowledged=acknowledged,
                                               by_severity=by_severity))
