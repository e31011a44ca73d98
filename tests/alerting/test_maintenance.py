"""Maintenance windows: when a window is in progress (ONCE, WEEKLY across DST in Europe/Berlin), which devices it
covers, and the evaluator opening no alerts for a device in a window (rules and NO_HEARTBEAT)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.evaluator import Evaluator, liveness_pass
from pulse.alerting.maintenance import (
    MaintenanceDevice,
    MaintenanceWindow,
    active_windows,
    covers,
    create_window,
    in_maintenance,
    occurrence_at,
)
from pulse.db import system_tx
from pulse.errors import ValidationError
from tests.alerting.test_rule_types import _send as send_through_ingest
from tests.conftest import TenantRef, make_device, make_tenant

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
ANY = MaintenanceDevice("dev-1", site_id="berlin", device_type="sensor", group_ids=frozenset({"g-1"}))


def window(**fields: Any) -> MaintenanceWindow:
    base: dict[str, Any] = {
        "window_id": "w", "name": "w", "recurrence": "WEEKLY", "starts_at": None, "ends_at": None, "weekdays": [],
        "start_time": None, "duration_minutes": None, "timezone": "UTC", "site_ids": [], "group_ids": [],
        "device_types": [], "device_ids": [], "is_enabled": True, "created_at": T0}
    return MaintenanceWindow(**{**base, **fields})


def berlin(y: int, mo: int, d: int, h: int, mi: int = 0, *, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BERLIN, fold=fold).astimezone(UTC)


# --- WEEKLY across daylight-saving changes ---------------------------------------------------------------------

def test_weekly_window_keeps_its_local_time_across_both_dst_changes() -> None:
    """Every day 09:00-10:00 Berlin time: 08:00Z in winter, 07:00Z in summer, on the change days too."""
    daily = window(weekdays=[1, 2, 3, 4, 5, 6, 7], start_time="09:00", duration_minutes=60, timezone="Europe/Berlin")
    for day in (date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30), date(2026, 10, 24), date(2026, 10, 25),
                date(2026, 10, 26)):
        assert in_maintenance(daily, ANY, berlin(day.year, day.month, day.day, 9, 0)), day
        assert in_maintenance(daily, ANY, berlin(day.year, day.month, day.day, 9, 59)), day
        assert not in_maintenance(daily, ANY, berlin(day.year, day.month, day.day, 10, 0)), day
        assert not in_maintenance(daily, ANY, berlin(day.year, day.month, day.day, 8, 59)), day
    assert in_maintenance(daily, ANY, datetime(2026, 1, 15, 8, 30, tzinfo=UTC))  # CET: 09:30 local
    assert not in_maintenance(daily, ANY, datetime(2026, 1, 15, 7, 30, tzinfo=UTC))
    assert in_maintenance(daily, ANY, datetime(2026, 7, 15, 7, 30, tzinfo=UTC))  # CEST: 09:30 local
    assert not in_maintenance(daily, ANY, datetime(2026, 7, 15, 8, 30, tzinfo=UTC))


def test_weekly_duration_is_elapsed_time_over_the_spring_forward_night() -> None:
    """Sunday 01:00 for 3 h on 29 March 2026 (02:00 -> 03:00): ends 05:00 CEST, three real hours later."""
    sunday = window(weekdays=[7], start_time="01:00", duration_minutes=180, timezone="Europe/Berlin")
    assert occurrence_at(sunday, berlin(2026, 3, 29, 1, 30)) == (datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
                                                                  datetime(2026, 3, 29, 3, 0, tzinfo=UTC))
    assert in_maintenance(sunday, ANY, berlin(2026, 3, 29, 4, 59))
    assert not in_maintenance(sunday, ANY, berlin(2026, 3, 29, 5, 0))
    assert not in_maintenance(sunday, ANY, berlin(2026, 3, 30, 1, 30))  # Monday


def test_weekly_start_that_does_not_exist_or_exists_twice() -> None:
    """02:30 does not exist on 29 March 2026 in Berlin (starts 03:30 CEST); on 25 October it exists twice (the
    first, CEST, is used)."""
    spring = window(weekdays=[7], start_time="02:30", duration_minutes=30, timezone="Europe/Berlin")
    assert not in_maintenance(spring, ANY, datetime(2026, 3, 29, 1, 15, tzinfo=UTC))  # 03:15 CEST
    assert in_maintenance(spring, ANY, datetime(2026, 3, 29, 1, 30, tzinfo=UTC))  # 03:30 CEST
    autumn = window(weekdays=[7], start_time="02:30", duration_minutes=30, timezone="Europe/Berlin")
    assert in_maintenance(autumn, ANY, berlin(2026, 10, 25, 2, 45, fold=0))  # 00:45Z, first 02:45
    assert not in_maintenance(autumn, ANY, berlin(2026, 10, 25, 2, 45, fold=1))  # 01:45Z, second 02:45


def test_weekly_window_over_midnight_and_the_end_of_the_week() -> None:
    sunday_night = window(weekdays=[7], start_time="23:00", duration_minutes=120, timezone="Europe/Berlin")
    assert in_maintenance(sunday_night, ANY, berlin(2026, 6, 14, 23, 30))  # Sunday
    assert in_maintenance(sunday_night, ANY, berlin(2026, 6, 15, 0, 59))  # Monday
    assert not in_maintenance(sunday_night, ANY, berlin(2026, 6, 15, 1, 0))
    assert not in_maintenance(sunday_night, ANY, berlin(2026, 6, 13, 23, 30))  # Saturday


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
       st.sets(st.integers(1, 7), min_size=1), st.integers(0, 23), st.integers(0, 59), st.integers(1, 10080))
def test_a_reported_occurrence_starts_on_a_listed_day_at_the_local_time(now: datetime, days: set[int], hour: int,
                                                                       minute: int, duration: int) -> None:
    w = window(weekdays=sorted(days), start_time=f"{hour:02}:{minute:02}", duration_minutes=duration,
               timezone="Europe/Berlin")
    span = occurrence_at(w, now)
    if span is None:
        return
    start, end = span
    local = start.astimezone(BERLIN)
    assert start <= now < end and end - start == timedelta(minutes=duration)
    assert local.isoweekday() in days
    wall = datetime.combine(local.date(), time(hour, minute))
    exists = wall.replace(tzinfo=BERLIN).astimezone(UTC).astimezone(BERLIN).replace(tzinfo=None) == wall
    if exists:  # the local wall-clock start; else later by the clocks' jump that night
        assert (local.hour, local.minute) == (hour, minute)
    else:
        assert timedelta(0) < local.replace(tzinfo=None) - wall <= timedelta(hours=1)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)))
def test_every_day_for_over_25_hours_is_always_in_progress(now: datetime) -> None:
    w = window(weekdays=[1, 2, 3, 4, 5, 6, 7], start_time="02:30", duration_minutes=25 * 60 + 1,
               timezone="Europe/Berlin")
    assert occurrence_at(w, now) is not None


# --- ONCE, scopes, disabled ------------------------------------------------------------------------------------

def test_once_window_is_in_progress_from_start_to_just_before_end() -> None:
    once = window(recurrence="ONCE", starts_at=T0, ends_at=T0 + timedelta(hours=2))
    assert not in_maintenance(once, ANY, T0 - timedelta(microseconds=1))
    assert in_maintenance(once, ANY, T0)
    assert in_maintenance(once, ANY, T0 + timedelta(hours=2) - timedelta(microseconds=1))
    assert not in_maintenance(once, ANY, T0 + timedelta(hours=2))
    assert not in_maintenance(window(recurrence="ONCE", starts_at=T0, ends_at=T0 + timedelta(hours=2),
                                     is_enabled=False), ANY, T0 + timedelta(hours=1))


@pytest.mark.parametrize(("scopes", "expected"), [
    ({}, True),
    ({"device_ids": ["dev-1"]}, True), ({"device_ids": ["dev-2"]}, False),
    ({"site_ids": ["berlin", "paris"]}, True), ({"site_ids": ["paris"]}, False),
    ({"device_types": ["sensor"]}, True), ({"device_types": ["gateway"]}, False),
    ({"group_ids": ["g-2", "g-1"]}, True), ({"group_ids": ["g-2"]}, False),
    ({"site_ids": ["berlin"], "device_types": ["sensor"]}, True),
    ({"site_ids": ["berlin"], "device_types": ["gateway"]}, False),  # every given scope must match
])
def test_scopes(scopes: dict[str, list[str]], expected: bool) -> None:
    assert covers(window(**scopes), ANY) is expected
    once = window(recurrence="ONCE", starts_at=T0, ends_at=T0 + timedelta(hours=1), **scopes)
    assert in_maintenance(once, ANY, T0) is expected


def test_a_device_without_site_or_type_is_outside_scoped_windows() -> None:
    bare = MaintenanceDevice("dev-1")
    assert not covers(window(site_ids=["berlin"]), bare)
    assert covers(window(device_ids=["dev-1"]), bare)


# --- the service -----------------------------------------------------------------------------------------------

async def test_create_window_checks_fields_and_active_windows_lists_those_in_progress(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        with pytest.raises(ValidationError) as bad:
            await create_window(conn, tenant.tenant_id, name="x", recurrence="ONCE", now=T0, starts_at=T0,
                                ends_at=T0 + timedelta(days=32))
        assert bad.value.field == "ends_at"
        with pytest.raises(ValidationError) as bad:
            await create_window(conn, tenant.tenant_id, name="x", recurrence="WEEKLY", now=T0, weekdays=[1],
                                start_time="09:00", duration_minutes=60, timezone="Europe/Bärlin")
        assert bad.value.field == "timezone"
        await create_window(conn, tenant.tenant_id, name="now", recurrence="ONCE", now=T0,
                            starts_at=T0 - timedelta(hours=1), ends_at=T0 + timedelta(hours=1))
        await create_window(conn, tenant.tenant_id, name="later", recurrence="ONCE", now=T0,
                            starts_at=T0 + timedelta(hours=2), ends_at=T0 + timedelta(hours=3))
        await create_window(conn, tenant.tenant_id, name="off", recurrence="ONCE", now=T0, is_enabled=False,
                            starts_at=T0 - timedelta(hours=1), ends_at=T0 + timedelta(hours=1))
        assert [w.name for w in await active_windows(conn, tenant.tenant_id, T0)] == ["now"]
        assert [w.name for w in await active_windows(conn, tenant.tenant_id, T0 + timedelta(hours=2))] == ["later"]


# --- the evaluator ---------------------------------------------------------------------------------------------

async def _rule(engine: AsyncEngine, tenant: TenantRef, definition: dict[str, Any], rule_type: str = "THRESHOLD",
                for_seconds: int = 0) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text(
            "INSERT INTO alert_rules (tenant_id, name, rule_type, severity, definition, for_seconds) "
            "VALUES (:t, 'hot', :rt, 4, CAST(:d AS jsonb), :f) RETURNING rule_id"),
            {"t": tenant.tenant_id, "rt": rule_type, "d": json.dumps(definition), "f": for_seconds})).scalar_one())


async def _report(engine: AsyncEngine, tenant: TenantRef, device: str, at: datetime, **metrics: Any) -> None:
    async with system_tx(engine) as conn:
        await conn.execute(text(
            "UPDATE device_state SET latest_metrics = latest_metrics || CAST(:m AS jsonb), last_seen_at = :at, "
            "last_telemetry_at = :at, updated_at = :at WHERE tenant_id = :t AND device_id = :d"),
            {"m": json.dumps(metrics), "at": at, "t": tenant.tenant_id, "d": device})


async def _window(engine: AsyncEngine, tenant: TenantRef, start: datetime, end: datetime, **scopes: Any) -> str:
    async with system_tx(engine) as conn:
        return await create_window(conn, tenant.tenant_id, name=f"w{start:%H%M}", recurrence="ONCE", now=start,
                                   starts_at=start, ends_at=end, **scopes)


async def _alerts(engine: AsyncEngine, tenant: TenantRef) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT a.alert_id::text, a.device_id, a.alert_type, a.status, a.occurrence_count, "
            "  (SELECT count(*) FROM alert_events e WHERE e.alert_id = a.alert_id) AS events "
            "FROM alerts a WHERE a.tenant_id = :t ORDER BY a.opened_at, a.device_id"), {"t": tenant.tenant_id})).all())


async def test_a_breaching_device_in_a_window_opens_no_alert_and_does_after_it(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant, device_type="freezer")
    other = await make_device(engine, tenant, device_type="sensor")
    await _rule(engine, tenant, {"metric": "temp_c", "op": "GT", "value": 30})
    await _window(engine, tenant, T0 - timedelta(minutes=5), T0 + timedelta(hours=1), device_types=["freezer"])
    ev = Evaluator(engine)
    await ev.load_rules()
    keys = [(tenant.tenant_id, device), (tenant.tenant_id, other)]
    for d in (device, other):
        await _report(engine, tenant, d, T0, temp_c=40)
    await ev.evaluate_devices(keys, T0)
    [alert] = await _alerts(engine, tenant)  # only the device outside the window's scope
    assert alert.device_id == other

    later = T0 + timedelta(hours=1)  # the window has just ended
    await _report(engine, tenant, device, later, temp_c=41)
    await ev.evaluate_devices(keys, later)
    assert sorted(a.device_id for a in await _alerts(engine, tenant)) == sorted([device, other])


async def test_an_alert_open_before_the_window_stays_as_it_is(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await _rule(engine, tenant, {"metric": "temp_c", "op": "GT", "value": 30})
    ev = Evaluator(engine)
    await ev.load_rules()
    key = [(tenant.tenant_id, device)]
    await _report(engine, tenant, device, T0, temp_c=40)
    await ev.evaluate_devices(key, T0)
    [before] = await _alerts(engine, tenant)
    await _window(engine, tenant, T0 + timedelta(seconds=30), T0 + timedelta(hours=1), device_ids=[device])
    for minutes in (1, 5, 10):
        at = T0 + timedelta(minutes=minutes)
        await _report(engine, tenant, device, at, temp_c=45)
        await ev.evaluate_devices(key, at)
    [during] = await _alerts(engine, tenant)
    assert (during.status, during.occurrence_count, during.events) == ("OPEN", before.occurrence_count, 1)
    await _report(engine, tenant, device, T0 + timedelta(minutes=20), temp_c=20)
    await ev.evaluate_devices(key, T0 + timedelta(minutes=20))
    [cleared] = await _alerts(engine, tenant)
    assert cleared.status == "CLOSED"  # a condition that is over still closes its alert


async def test_for_seconds_starts_counting_only_after_the_window(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await _rule(engine, tenant, {"metric": "temp_c", "op": "GT", "value": 30}, for_seconds=60)
    await _window(engine, tenant, T0, T0 + timedelta(minutes=10))
    ev = Evaluator(engine)
    await ev.load_rules()
    key = [(tenant.tenant_id, device)]
    for minutes in (0, 5, 10, 10.5):
        at = T0 + timedelta(minutes=minutes)
        await _report(engine, tenant, device, at, temp_c=40)
        await ev.evaluate_devices(key, at)
    assert await _alerts(engine, tenant) == []
    await ev.evaluate_devices(key, T0 + timedelta(minutes=11))
    assert len(await _alerts(engine, tenant)) == 1


async def test_no_heartbeat_is_held_during_a_window_and_raised_if_still_silent_after(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine, heartbeat_interval_s=30)
    device = await make_device(engine, tenant)
    await _window(engine, tenant, T0, T0 + timedelta(minutes=10), device_ids=[device])
    ev = Evaluator(engine)
    await _report(engine, tenant, device, T0, temp_c=21)
    await ev.evaluate_devices([(tenant.tenant_id, device)], T0)
    for seconds in (30, 150, 300):  # STALE, then OFFLINE, inside the window
        async with system_tx(engine) as conn:
            await liveness_pass(conn, T0 + timedelta(seconds=seconds))
    async with system_tx(engine) as conn:
        status = (await conn.execute(text("SELECT status FROM device_state WHERE tenant_id = :t AND device_id = :d"),
                                     {"t": tenant.tenant_id, "d": device})).scalar_one()
    assert status == "OFFLINE"
    assert await _alerts(engine, tenant) == []
    for seconds in (600, 630):  # the window is over and the device is still silent: one alert
        async with system_tx(engine) as conn:
            await liveness_pass(conn, T0 + timedelta(seconds=seconds))
    [alert] = await _alerts(engine, tenant)
    assert (alert.alert_type, alert.status, alert.events) == ("NO_HEARTBEAT", "OPEN", 1)


async def test_a_device_that_spoke_again_during_the_window_gets_no_late_alert(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine, heartbeat_interval_s=30)
    device = await make_device(engine, tenant)
    await _window(engine, tenant, T0, T0 + timedelta(minutes=10))
    ev = Evaluator(engine)
    await _report(engine, tenant, device, T0, temp_c=21)
    await ev.evaluate_devices([(tenant.tenant_id, device)], T0)
    async with system_tx(engine) as conn:
        await liveness_pass(conn, T0 + timedelta(seconds=200))
    for at in (T0 + timedelta(minutes=5), T0 + timedelta(minutes=9, seconds=55)):  # back, and speaking
        await _report(engine, tenant, device, at, temp_c=21)
        await ev.evaluate_devices([(tenant.tenant_id, device)], at)
    async with system_tx(engine) as conn:
        await liveness_pass(conn, T0 + timedelta(minutes=5, seconds=10))
        await liveness_pass(conn, T0 + timedelta(minutes=10, seconds=1))
    assert await _alerts(engine, tenant) == []


async def test_gap_alert_is_not_opened_in_a_window(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await _rule(engine, tenant, {"metric": "temp_c", "gap_seconds": 60}, rule_type="GAP")
    await send_through_ingest(engine, tenant, device, [(T0, {"temp_c": 21})])
    await _window(engine, tenant, T0, T0 + timedelta(minutes=10))
    ev = Evaluator(engine)
    await ev.load_rules()
    await ev.check_gaps(T0 + timedelta(minutes=5))
    assert await _alerts(engine, tenant) == []
    await ev.check_gaps(T0 + timedelta(minutes=11))
    [alert] = await _alerts(engine, tenant)
    assert alert.alert_type == "NO_TELEMETRY"
