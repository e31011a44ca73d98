"""On-call schedules through the storage service against real PostgreSQL: what is saved loads back for the
rotation math, who is on call (layer or override) and until when, and a weekly timeline across a DST change."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.db import system_tx, tenant_tx
from pulse.errors import Conflict, NotFound, ValidationError
from pulse.oncall.rotation import Restriction
from pulse.oncall.schedules.common import load_schedule
from pulse.oncall.schedules.layers import create_layer, delete_layer, update_layer
from pulse.oncall.schedules.on_call import timeline, who_is_on_call
from pulse.oncall.schedules.overrides import create_override
from pulse.oncall.schedules.schedule import create_schedule, require_schedule
from tests.conftest import TenantRef, make_tenant

NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)  # a Wednesday


async def _user(engine: AsyncEngine, tenant: TenantRef, name: str) -> str:
    async with system_tx(engine) as conn:
        return str((await conn.execute(text(
            "INSERT INTO users (tenant_id, email, display_name) VALUES (:t, :e, :n) RETURNING user_id::text"),
            {"t": tenant.tenant_id, "e": f"{name}-{secrets.token_hex(3)}@example.test", "n": name})).scalar_one())


async def _weekly(engine: AsyncEngine, tenant: TenantRef, people: list[str], *, tz: str = "Europe/Berlin",
                  start: date = date(2026, 3, 16), **layer: object) -> str:
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        schedule_id = await create_schedule(conn, tenant.tenant_id, name=f"ops-{secrets.token_hex(3)}", timezone=tz,
                                            now=NOW)
        await create_layer(conn, tenant.tenant_id, schedule_id, name="Primary", rotation_type="WEEKLY",
                           rotation_start=start, handoff_time="09:00", participants=people, now=NOW,
                           **layer)  # type: ignore[arg-type]
    return schedule_id


async def test_a_saved_schedule_loads_back_for_the_rotation_math(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    alice, bob, carol = [await _user(engine, tenant, n) for n in ("alice", "bob", "carol")]
    schedule_id = await _weekly(engine, tenant, [alice, bob])
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        await create_layer(conn, tenant.tenant_id, schedule_id, name="Business hours", rotation_type="CUSTOM",
                           rotation_hours=12, rotation_start=date(2026, 3, 16), handoff_time="08:30",
                           participants=[carol], now=NOW,
                           restrictions=[{"days": [5, 1, 2, 3, 4], "start": "08:00", "end": "18:00"}],
                           starts_at=datetime(2026, 3, 1, tzinfo=UTC))
        near = await create_override(conn, tenant.tenant_id, schedule_id, user_id=bob, created_by="lead@example.test",
                                     starts_at=NOW, ends_at=NOW + timedelta(hours=4), reason="swap", now=NOW)
        await create_override(conn, tenant.tenant_id, schedule_id, user_id=carol, created_by="lead@example.test",
                              starts_at=NOW + timedelta(days=500), ends_at=NOW + timedelta(days=501), now=NOW)

    async with tenant_tx(engine, tenant.tenant_id) as conn:
        loaded = await load_schedule(conn, tenant.tenant_id, schedule_id, around=NOW)
        everything = await load_schedule(conn, tenant.tenant_id, schedule_id)
        assert await load_schedule(conn, tenant.tenant_id, "not-a-uuid") is None
    other = await make_tenant(engine)
    async with tenant_tx(engine, other.tenant_id) as conn:
        assert await load_schedule(conn, other.tenant_id, schedule_id) is None

    assert loaded is not None and everything is not None
    assert loaded.schedule_id == schedule_id and loaded.timezone.key == "Europe/Berlin"
    primary, hours = loaded.layers
    assert (primary.position, primary.rotation_type, primary.participants) == (1, "WEEKLY", (alice, bob))
    assert primary.handoff_time == time(9, 0) and primary.rotation_start == date(2026, 3, 16)
    assert (hours.position, hours.rotation_hours, hours.handoff_time) == (2, 12, time(8, 30))
    assert hours.restrictions == (Restriction(days=(1, 2, 3, 4, 5), start=time(8), end=time(18)),)
    assert hours.starts_at == datetime(2026, 3, 1, tzinfo=UTC) and hours.ends_at is None
    [override] = loaded.overrides  # the one 500 days out is beyond the window around NOW
    assert (override.override_id, override.user_id, override.reason) == (near, bob, "swap")
    assert override.starts_at == NOW and override.ends_at == NOW + timedelta(hours=4)
    assert len(everything.overrides) == 2


async def test_who_is_on_call_says_layer_or_override_and_until_when(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    alice, bob = await _user(engine, tenant, "alice"), await _user(engine, tenant, "bob")
    schedule_id = await _weekly(engine, tenant, [alice, bob])

    async with tenant_tx(engine, tenant.tenant_id) as conn:
        by_layer = await who_is_on_call(conn, tenant.tenant_id, schedule_id, NOW)
        await create_override(conn, tenant.tenant_id, schedule_id, user_id=bob, created_by="lead@example.test",
                              starts_at=NOW - timedelta(hours=1), ends_at=NOW + timedelta(hours=3),
                              reason="alice at the dentist", now=NOW)
        by_override = await who_is_on_call(conn, tenant.tenant_id, schedule_id, NOW)
        after = await who_is_on_call(conn, tenant.tenant_id, schedule_id, NOW + timedelta(hours=3))

    person = by_layer.on_call
    assert person is not None and person.user_id == alice and person.user_name == "alice"
    assert person.user_email and person.user_email.startswith("alice-")
    assert person.source == "LAYER" and person.layer_name == "Primary" and "weekly" in person.reason
    # Monday 2026-03-16 09:00 CET until Monday 2026-03-23 09:00 CET
    assert person.since == datetime(2026, 3, 16, 8, tzinfo=UTC)
    assert person.until == datetime(2026, 3, 23, 8, tzinfo=UTC)

    swapped = by_override.on_call
    assert swapped is not None and swapped.user_id == bob and swapped.source == "OVERRIDE"
    assert swapped.layer_name is None and "alice at the dentist" in swapped.reason
    assert swapped.since == NOW - timedelta(hours=1) and swapped.until == NOW + timedelta(hours=3)
    assert after.on_call is not None and after.on_call.user_id == alice and after.on_call.source == "LAYER"


async def test_a_weekly_rotation_keeps_its_local_handoff_across_the_dst_change(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    alice, bob = await _user(engine, tenant, "alice"), await _user(engine, tenant, "bob")
    schedule_id = await _weekly(engine, tenant, [alice, bob])  # Europe/Berlin: CEST begins 2026-03-29

    async with tenant_tx(engine, tenant.tenant_id) as conn:
        seen = await timeline(conn, tenant.tenant_id, schedule_id, datetime(2026, 3, 16, 8, tzinfo=UTC), 21)

    assert seen.timezone == "Europe/Berlin"
    assert [(s.user_id, s.starts_at, s.ends_at) for s in seen.shifts] == [
        (alice, datetime(2026, 3, 16, 8, tzinfo=UTC), datetime(2026, 3, 23, 8, tzinfo=UTC)),   # 09:00 CET
        (bob, datetime(2026, 3, 23, 8, tzinfo=UTC), datetime(2026, 3, 30, 7, tzinfo=UTC)),     # 09:00 CEST
        (alice, datetime(2026, 3, 30, 7, tzinfo=UTC), datetime(2026, 4, 6, 7, tzinfo=UTC)),
        (bob, datetime(2026, 4, 6, 7, tzinfo=UTC), datetime(2026, 4, 6, 8, tzinfo=UTC)),       # cut at the end
    ]
    assert seen.end == datetime(2026, 4, 6, 8, tzinfo=UTC)
    assert seen.shifts[1].ends_at - seen.shifts[1].starts_at == timedelta(days=7, hours=-1)
    assert {s.user_name for s in seen.shifts} == {"alice", "bob"}


async def test_layers_keep_positions_one_to_n_when_moved_and_removed(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    alice = await _user(engine, tenant, "alice")
    schedule_id = await _weekly(engine, tenant, [alice])
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        second = await create_layer(conn, tenant.tenant_id, schedule_id, name="Second", rotation_type="DAILY",
                                    rotation_start=date(2026, 3, 16), participants=[alice], now=NOW)
        first = await create_layer(conn, tenant.tenant_id, schedule_id, name="First", rotation_type="DAILY",
                                   rotation_start=date(2026, 3, 16), participants=[alice], position=1, now=NOW)
        assert [x.name for x in (await require_schedule(conn, tenant.tenant_id, schedule_id)).layers] == [
            "First", "Primary", "Second"]
        await update_layer(conn, tenant.tenant_id, schedule_id, second, {"position": 1}, now=NOW)
        assert [x.name for x in (await require_schedule(conn, tenant.tenant_id, schedule_id)).layers] == [
            "Second", "First", "Primary"]
        await delete_layer(conn, tenant.tenant_id, schedule_id, first, now=NOW)
        layers = (await require_schedule(conn, tenant.tenant_id, schedule_id)).layers
        assert [(x.name, x.position) for x in layers] == [("Second", 1), ("Primary", 2)]
        with pytest.raises(ValidationError) as bad:
            await update_layer(conn, tenant.tenant_id, schedule_id, second, {"position": 3}, now=NOW)
        assert bad.value.field == "position"


async def test_schedule_names_are_unique_and_unknown_ids_are_not_found(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with tenant_tx(engine, tenant.tenant_id) as conn:
        await create_schedule(conn, tenant.tenant_id, name="ops", timezone="UTC", now=NOW)
        with pytest.raises(Conflict) as taken:
            await create_schedule(conn, tenant.tenant_id, name="ops", timezone="UTC", now=NOW)
        assert taken.value.details["field"] == "name"
        with pytest.raises(NotFound):
            await who_is_on_call(conn, tenant.tenant_id, "00000000-0000-0000-0000-000000000000", NOW)
