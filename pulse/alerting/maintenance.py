"""Maintenance windows: when a tenant's devices are expected to misbehave, so the evaluator opens no alerts for them.

A window is ONCE (`starts_at` ≤ t < `ends_at`, at most 31 days) or WEEKLY (on each ISO weekday in `weekdays`,
1 = Monday … 7 = Sunday, from the local wall-clock `start_time` in `timezone` for `duration_minutes` of elapsed
time). Local times are converted with zoneinfo on the day itself, so a 02:00 window stays at 02:00 local across
daylight-saving changes; a start time that does not exist that day (spring forward) starts as many minutes later
as the clocks jumped, and one that exists twice (fall back) starts at the first.

Scopes narrow a window like they narrow a rule: an empty list means any, and every non-empty scope must match
(`site_ids`, `group_ids`, `device_types`, `device_ids`). A window with no scopes covers all devices of the tenant.

While a device is in an enabled window in progress, the evaluator raises nothing for it (no alert opens, an open
alert is not updated); conditions that clear still close alerts. A device that fell silent during a window and is
still silent when it ends gets its NO_HEARTBEAT alert then (`silent_since_maintenance`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.checks import check_aware, check_name, check_range, is_whole_number, parse_clock, parse_uuid
from pulse.errors import NotFound, ValidationError
from pulse.fleet.scopes import SCOPE_ID, check_group_ids, check_strings, require_scope
from pulse.sql import check_page, fetch_page

RECURRENCES: tuple[str, ...] = ("ONCE", "WEEKLY")
ONCE_MAX = timedelta(days=31)
DURATION_MAX_MINUTES = 7 * 24 * 60
NAME_MAX = 200
MAX_PAGE = 500
CACHE_TTL = timedelta(seconds=10)
"""How long the evaluator trusts the windows it loaded for a tenant (edits take effect within this)."""

_ONCE_FIELDS = ("starts_at", "ends_at")
_WEEKLY_FIELDS = ("weekdays", "start_time", "duration_minutes")
_FIELDS = ("name", "recurrence", "starts_at", "ends_at", "weekdays", "start_time", "duration_minutes", "timezone",
           "site_ids", "group_ids", "device_types", "device_ids", "is_enabled")
_COLUMNS = ("window_id::text, name, recurrence, starts_at, ends_at, weekdays::int[] AS weekdays, "
            "to_char(start_time, 'HH24:MI') AS start_time, duration_minutes, timezone, site_ids, "
            "group_ids::text[] AS group_ids, device_types, device_ids, is_enabled, created_at")
_LIST_KEYS = ("weekdays", "site_ids", "group_ids", "device_types", "device_ids")


class MaintenanceWindow(msgspec.Struct, kw_only=True):
    """A window as stored and shown by the API (`start_time` as "HH:MM")."""

    window_id: str
    name: str
    recurrence: str
    starts_at: datetime | None
    ends_at: datetime | None
    weekdays: list[int]
    start_time: str | None
    duration_minutes: int | None
    timezone: str
    site_ids: list[str]
    group_ids: list[str]
    device_types: list[str]
    device_ids: list[str]
    is_enabled: bool
    created_at: datetime


class MaintenanceWindowPage(msgspec.Struct, kw_only=True):
    items: list[MaintenanceWindow]
    total: int
    limit: int
    offset: int


class ActiveWindow(msgspec.Struct, kw_only=True):
    """A window in progress and when its current occurrence ends."""

    window_id: str
    name: str
    until: datetime


class DeviceMaintenance(msgspec.Struct, kw_only=True):
    """Whether a device is in maintenance now, and by which windows (`device_id` null: every window in progress,
    whatever its scopes, and `in_maintenance` null)."""

    device_id: str | None
    in_maintenance: bool | None
    windows: list[ActiveWindow]


@dataclass(frozen=True)
class MaintenanceDevice:
    """What a window's scopes look at."""

    device_id: str
    site_id: str | None = None
    device_type: str | None = None
    group_ids: frozenset[str] = frozenset()


# --- the pure part: is a window in progress, does it cover a device --------------------------------------------------

def _start_time(value: str) -> time:
    at = parse_clock(value)
    if at is None:
        raise ValueError(value)
    return at


def occurrence_at(window: MaintenanceWindow, now: datetime) -> tuple[datetime, datetime] | None:
    """The occurrence of an enabled window in progress at `now` as (start, end), scopes aside; None if none.

    Of overlapping WEEKLY occurrences the one ending last is given.
    """
    if not window.is_enabled:
        return None
    if window.recurrence == "ONCE":
        if window.starts_at is not None and window.ends_at is not None and window.starts_at <= now < window.ends_at:
            return window.starts_at, window.ends_at
        return None
    if window.start_time is None or not window.duration_minutes or not window.weekdays:
        return None
    zone = ZoneInfo(window.timezone)
    duration = timedelta(minutes=window.duration_minutes)
    at = _start_time(window.start_time)
    today = now.astimezone(zone).date()
    best: tuple[datetime, datetime] | None = None
    for days_back in range(duration.days + 2):
        day = today - timedelta(days=days_back)
        if day.isoweekday() not in window.weekdays:
            continue
        start = datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
        end = start + duration
        if start <= now < end and (best is None or end > best[1]):
            best = (start, end)
    return best


def covers(window: MaintenanceWindow, device: MaintenanceDevice) -> bool:
    """Whether the window's scopes include the device (an empty scope means any; all given ones must match)."""
    if window.device_ids and device.device_id not in window.device_ids:
        return False
    if window.site_ids and device.site_id not in window.site_ids:
        return False
    if window.device_types and device.device_type not in window.device_types:
        return False
    return not (window.group_ids and device.group_ids.isdisjoint(window.group_ids))


def is_scoped(window: MaintenanceWindow) -> bool:
    return bool(window.site_ids or window.group_ids or window.device_types or window.device_ids)


def in_maintenance(window: MaintenanceWindow, device: MaintenanceDevice, now: datetime) -> bool:
    """Whether `device` is in maintenance under `window` at `now`."""
    return covers(window, device) and occurrence_at(window, now) is not None


# --- validation --------------------------------------------------------------------------------------------------

def _timezone(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise ValidationError("must be an IANA time zone name such as Europe/Berlin", field="timezone")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin",
                              field="timezone") from None
    return value


def _check_window(w: dict[str, Any]) -> dict[str, Any]:
    """A whole window checked and normalised (no database look-ups); errors name the field."""
    name = check_name(w["name"], "name", NAME_MAX)
    recurrence = w["recurrence"]
    if recurrence not in RECURRENCES:
        raise ValidationError(f"must be one of {', '.join(RECURRENCES)}", field="recurrence")
    out = {**w, "timezone": _timezone(w["timezone"])}
    if recurrence == "ONCE":
        for key in _WEEKLY_FIELDS:
            if w[key] not in (None, []):
                raise ValidationError("is only for WEEKLY windows", field=key)
        for key in _ONCE_FIELDS:
            value = w[key]
            if value is None:
                raise ValidationError("is required for a ONCE window", field=key)
            check_aware(value, key)
        check_range(w["starts_at"], w["ends_at"], start_field="starts_at", end_field="ends_at")
        if w["ends_at"] - w["starts_at"] > ONCE_MAX:
            raise ValidationError("a ONCE window may last at most 31 days", field="ends_at")
        out.update(weekdays=[], start_time=None, duration_minutes=None)
    else:
        for key in _ONCE_FIELDS:
            if w[key] is not None:
                raise ValidationError("is only for ONCE windows", field=key)
        weekdays = w["weekdays"]
        if not isinstance(weekdays, list) or not weekdays:
            raise ValidationError("give at least one ISO weekday (1 = Monday … 7 = Sunday)", field="weekdays")
        for i, day in enumerate(weekdays):
            if not is_whole_number(day, 1, 7):
                raise ValidationError("must be 1 (Monday) … 7 (Sunday)", field=f"weekdays[{i}]")
        start_time = w["start_time"]
        if start_time is None:
            raise ValidationError("is required for a WEEKLY window", field="start_time")
        if parse_clock(start_time) is None:
            raise ValidationError("must be a local time HH:MM (00:00-23:59)", field="start_time")
        duration = w["duration_minutes"]
        if duration is None:
            raise ValidationError("is required for a WEEKLY window", field="duration_minutes")
        if not is_whole_number(duration, 1, DURATION_MAX_MINUTES):
            raise ValidationError(f"must be 1-{DURATION_MAX_MINUTES} minutes", field="duration_minutes")
        out.update(weekdays=sorted(set(weekdays)), starts_at=None, ends_at=None)
    if not isinstance(w["is_enabled"], bool):
        raise ValidationError("must be true or false", field="is_enabled")
    out.update(
        name=name,
        group_ids=check_group_ids(w["group_ids"]),
        site_ids=check_strings(w["site_ids"], "site_ids", pattern=SCOPE_ID, max_len=128),
        device_ids=check_strings(w["device_ids"], "device_ids", pattern=SCOPE_ID, max_len=128),
        device_types=check_strings(w["device_types"], "device_types", pattern=None, max_len=64),
    )
    return out


# --- reading and writing -----------------------------------------------------------------------------------------

def _window(row: Any) -> MaintenanceWindow:
    data = dict(row._mapping)
    for key in _LIST_KEYS:
        data[key] = list(data[key] or [])
    return msgspec.convert(data, MaintenanceWindow)


async def list_windows(conn: AsyncConnection, tenant_id: str, *, limit: int = 100,
                       offset: int = 0) -> MaintenanceWindowPage:
    """The tenant's windows by name, with the total count."""
    check_page(limit, offset, max_limit=MAX_PAGE)
    total, rows = await fetch_page(conn, columns=_COLUMNS, source="maintenance_windows", where=["tenant_id = :t"],
                                   order_by="name, window_id", params={"t": tenant_id}, limit=limit, offset=offset)
    return MaintenanceWindowPage(items=[_window(r) for r in rows], total=total, limit=limit, offset=offset)


async def get_window(conn: AsyncConnection, tenant_id: str, window_id: str) -> MaintenanceWindow | None:
    row = (await conn.execute(text(
        f"SELECT {_COLUMNS} FROM maintenance_windows WHERE tenant_id = :t AND window_id = CAST(:w AS uuid)"),
        {"t": tenant_id, "w": parse_uuid(window_id, "window_id")})).first()
    return None if row is None else _window(row)


async def require_window(conn: AsyncConnection, tenant_id: str, window_id: str) -> MaintenanceWindow:
    """The window, or NotFound (also for another tenant's window id)."""
    window = await get_window(conn, tenant_id, window_id)
    if window is None:
        raise NotFound(f"maintenance window {window_id} not found", details={"field": "window_id"})
    return window


def _params(w: dict[str, Any]) -> dict[str, Any]:
    return {**{k: w[k] for k in _FIELDS},
            "start_time": _start_time(w["start_time"]) if w["start_time"] is not None else None}


_VALUES = ("name = :name, recurrence = :recurrence, starts_at = :starts_at, ends_at = :ends_at, "
           "weekdays = CAST(:weekdays AS smallint[]), start_time = :start_time, duration_minutes = :duration_minutes, "
           "timezone = :timezone, site_ids = :site_ids, group_ids = CAST(:group_ids AS uuid[]), "
           "device_types = :device_types, device_ids = :device_ids, is_enabled = :is_enabled")


async def create_window(conn: AsyncConnection, tenant_id: str, *, name: str, recurrence: str, now: datetime,
                        starts_at: datetime | None = None, ends_at: datetime | None = None,
                        weekdays: list[int] | None = None, start_time: str | None = None,
                        duration_minutes: int | None = None, timezone: str = "UTC",
                        site_ids: list[str] | None = None, group_ids: list[str] | None = None,
                        device_types: list[str] | None = None, device_ids: list[str] | None = None,
                        is_enabled: bool = True) -> str:
    """Add a window; errors name the field. Returns the new window id."""
    w = _check_window({
        "name": name, "recurrence": recurrence, "starts_at": starts_at, "ends_at": ends_at,
        "weekdays": weekdays or [], "start_time": start_time, "duration_minutes": duration_minutes,
        "timezone": timezone, "site_ids": site_ids or [], "group_ids": group_ids or [],
        "device_types": device_types or [], "device_ids": device_ids or [], "is_enabled": is_enabled})
    await require_scope(conn, tenant_id, w)
    return str((await conn.execute(text(
        "INSERT INTO maintenance_windows (tenant_id, name, recurrence, starts_at, ends_at, weekdays, start_time, "
        "  duration_minutes, timezone, site_ids, group_ids, device_types, device_ids, is_enabled, created_at) "
        "VALUES (:t, :name, :recurrence, :starts_at, :ends_at, CAST(:weekdays AS smallint[]), :start_time, "
        "  :duration_minutes, :timezone, :site_ids, CAST(:group_ids AS uuid[]), :device_types, :device_ids, "
        "  :is_enabled, :now) RETURNING window_id::text"), {**_params(w), "t": tenant_id, "now": now})).scalar_one())


async def update_window(conn: AsyncConnection, tenant_id: str, window_id: str, changes: dict[str, Any]) -> None:
    """Change the given fields (names as in create_window); the resulting window is validated as a whole.

    Changing `recurrence` drops the stored fields of the other kind unless they are sent as well.
    """
    unknown = [k for k in changes if k not in _FIELDS]
    if unknown:
        raise ValidationError("is not a field of a maintenance window", field=unknown[0])
    stored = await require_window(conn, tenant_id, window_id)
    merged = {k: getattr(stored, k) for k in _FIELDS}
    if changes.get("recurrence", stored.recurrence) != stored.recurrence:
        for key in _ONCE_FIELDS if stored.recurrence == "ONCE" else _WEEKLY_FIELDS:
            merged[key] = [] if key == "weekdays" else None
    merged.update(changes)
    for key in _LIST_KEYS:
        if merged[key] is None:
            merged[key] = []
    w = _check_window(merged)
    # Scope lists are checked when sent: a site deleted since does not block editing the window's other fields.
    await require_scope(conn, tenant_id, w, tuple(k for k in ("site_ids", "group_ids", "device_ids") if k in changes))
    await conn.execute(text(
        f"UPDATE maintenance_windows SET {_VALUES} WHERE tenant_id = :t AND window_id = CAST(:w AS uuid)"),
        {**_params(w), "t": tenant_id, "w": stored.window_id})


async def delete_window(conn: AsyncConnection, tenant_id: str, window_id: str) -> None:
    """Delete a window; alerts it held back open at the next evaluation if their condition still holds."""
    deleted = (await conn.execute(text(
        "DELETE FROM maintenance_windows WHERE tenant_id = :t AND window_id = CAST(:w AS uuid) RETURNING window_id"),
        {"t": tenant_id, "w": parse_uuid(window_id, "window_id")})).first()
    if deleted is None:
        raise NotFound(f"maintenance window {window_id} not found", details={"field": "window_id"})


async def enabled_windows(conn: AsyncConnection, tenant_id: str, now: datetime) -> list[MaintenanceWindow]:
    """The tenant's enabled windows that are in progress or may still begin (ONCE windows not yet over)."""
    rows = (await conn.execute(text(
        f"SELECT {_COLUMNS} FROM maintenance_windows WHERE tenant_id = :t AND is_enabled "
        f"AND (recurrence = 'WEEKLY' OR ends_at > :now)"), {"t": tenant_id, "now": now})).all()
    return [_window(r) for r in rows]


async def active_windows(conn: AsyncConnection, tenant_id: str, now: datetime) -> list[MaintenanceWindow]:
    """The tenant's enabled windows in progress at `now`, whatever their scopes."""
    return [w for w in await enabled_windows(conn, tenant_id, now) if occurrence_at(w, now) is not None]


async def load_devices(conn: AsyncConnection, tenant_id: str, device_ids: list[str]) -> dict[str, MaintenanceDevice]:
    """What the scopes of a window look at, for these devices (unknown ids are left out)."""
    rows = (await conn.execute(text(
        "SELECT d.device_id, d.site_id, d.device_type, "
        "  coalesce(array(SELECT m.group_id::text FROM device_group_members m "
        "    WHERE m.tenant_id = d.tenant_id AND m.device_id = d.device_id), '{}') AS groups "
        "FROM devices d WHERE d.tenant_id = :t AND d.device_id = ANY(:d)"), {"t": tenant_id, "d": device_ids})).all()
    return {r.device_id: MaintenanceDevice(r.device_id, r.site_id, r.device_type, frozenset(r.groups or ()))
            for r in rows}


async def devices_in_maintenance(conn: AsyncConnection, tenant_id: str, device_ids: list[str], now: datetime, *,
                                 windows: list[MaintenanceWindow] | None = None) -> set[str]:
    """Which of these devices are in maintenance at `now`; looks devices up only when a scoped window is active.

    `windows` are the tenant's enabled windows if the caller has them already (see MaintenanceCache).
    """
    if not device_ids:
        return set()
    if windows is None:
        windows = await enabled_windows(conn, tenant_id, now)
    active = [w for w in windows if occurrence_at(w, now) is not None]
    if not active:
        return set()
    if any(not is_scoped(w) for w in active):
        return set(device_ids)
    devices = await load_devices(conn, tenant_id, device_ids)
    return {d.device_id for d in devices.values() if any(covers(w, d) for w in active)}


async def device_maintenance(conn: AsyncConnection, tenant_id: str, device_id: str | None,
                             now: datetime) -> DeviceMaintenance:
    """Whether a device is in maintenance now and by which windows; without a device, every window in progress.

    An unknown device (or another tenant's) is NotFound.
    """
    windows = await enabled_windows(conn, tenant_id, now)
    in_progress = [(w, span) for w in windows if (span := occurrence_at(w, now)) is not None]
    if device_id is None:
        matching = in_progress
    else:
        device = (await load_devices(conn, tenant_id, [device_id])).get(device_id)
        if device is None:
            raise NotFound(f"device {device_id} not found", details={"field": "device_id"})
        matching = [(w, span) for w, span in in_progress if covers(w, device)]
    items = sorted((ActiveWindow(window_id=w.window_id, name=w.name, until=span[1]) for w, span in matching),
                   key=lambda a: (a.until, a.name))
    return DeviceMaintenance(device_id=device_id, in_maintenance=None if device_id is None else bool(items),
                             windows=items)


@dataclass
class MaintenanceCache:
    """The evaluator's copy of each tenant's enabled windows, loaded at most every CACHE_TTL (one query per tenant,
    never per device). Whether a window is in progress is judged at each call's `now`, so window edges are exact;
    only edits to windows take up to CACHE_TTL to be seen."""

    ttl: timedelta = CACHE_TTL
    _by_tenant: dict[str, tuple[datetime, list[MaintenanceWindow]]] = field(default_factory=dict)

    async def windows(self, conn: AsyncConnection, tenant_id: str, now: datetime) -> list[MaintenanceWindow]:
        cached = self._by_tenant.get(tenant_id)
        if cached is not None and cached[0] <= now < cached[0] + self.ttl:
            return cached[1]
        windows = await enabled_windows(conn, tenant_id, now)
        self._by_tenant[tenant_id] = (now, windows)
        return windows

    async def devices_in_maintenance(self, conn: AsyncConnection, tenant_id: str, device_ids: list[str],
                                     now: datetime) -> set[str]:
        if not device_ids:
            return set()
        return await devices_in_maintenance(conn, tenant_id, device_ids, now,
                                            windows=await self.windows(conn, tenant_id, now))


# --- silence that outlasted a window -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SilentDevice:
    """A STALE/OFFLINE device whose NO_HEARTBEAT alert a maintenance window held back."""

    tenant_id: str
    device_id: str
    site_id: str | None
    status: str
    last_seen_at: datetime
    iv: int


async def silent_since_maintenance(conn: AsyncConnection, now: datetime) -> list[SilentDevice]:
    """Devices that went STALE/OFFLINE inside a maintenance window covering them, are still silent, are no longer
    in maintenance, and had no NO_HEARTBEAT alert opened since: their alert is due now.

    Only tenants with enabled windows are looked at. Runs as a platform role across tenants (the liveness pass).
    """
    rows = (await conn.execute(text(
        "SELECT ds.tenant_id, ds.device_id, d.site_id, d.device_type, ds.status, ds.last_seen_at, "
        "  ds.last_state_change_at, coalesce(d.heartbeat_interval_s, t.heartbeat_interval_s) AS iv, "
        "  coalesce(array(SELECT m.group_id::text FROM device_group_members m "
        "    WHERE m.tenant_id = d.tenant_id AND m.device_id = d.device_id), '{}') AS groups "
        "FROM device_state ds JOIN devices d USING (tenant_id, device_id) JOIN tenants t USING (tenant_id) "
        "WHERE d.status = 'ACTIVE' AND ds.status IN ('STALE', 'OFFLINE') AND ds.last_seen_at IS NOT NULL "
        "  AND ds.last_state_change_at > CAST(:now AS timestamptz) - interval '32 days' "
        "  AND t.no_heartbeat_alert_on <> 'NEVER' AND (t.no_heartbeat_alert_on <> 'OFFLINE' OR ds.status = 'OFFLINE') "
        "  AND EXISTS (SELECT 1 FROM maintenance_windows w WHERE w.tenant_id = ds.tenant_id AND w.is_enabled) "
        "  AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.tenant_id = ds.tenant_id "
        "    AND a.fingerprint = 'NO_HEARTBEAT:' || ds.device_id AND a.opened_at >= ds.last_state_change_at)"),
        {"now": now})).all()
    windows_of: dict[str, list[MaintenanceWindow]] = {}
    due: list[SilentDevice] = []
    for r in rows:
        if r.tenant_id not in windows_of:
            windows_of[r.tenant_id] = [_window(w) for w in (await conn.execute(text(
                f"SELECT {_COLUMNS} FROM maintenance_windows WHERE tenant_id = :t AND is_enabled"),
                {"t": r.tenant_id})).all()]
        windows = windows_of[r.tenant_id]
        device = MaintenanceDevice(r.device_id, r.site_id, r.device_type, frozenset(r.groups or ()))
        went_silent_in = any(in_maintenance(w, device, r.last_state_change_at) for w in windows)
        if went_silent_in and not any(in_maintenance(w, device, now) for w in windows):
            due.append(SilentDevice(r.tenant_id, r.device_id, r.site_id, r.status, r.last_seen_at, r.iv))
    return due
