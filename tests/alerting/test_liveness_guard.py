"""The liveness guard: while no ingest instance can hear devices, no device is marked STALE or OFFLINE (no page
storm for a fault of ours); when ingest is back, every device gets its full interval to be heard again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.guard import guarded_liveness
from pulse.db import system_tx
from pulse.ingest.heartbeat import beat
from tests.conftest import TenantRef, make_device, make_tenant

T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


@pytest.fixture
async def fleet(engine: AsyncEngine) -> tuple[TenantRef, str]:
    async with system_tx(engine) as conn:
        await conn.execute(text("DELETE FROM service_heartbeats"))  # this test owns the ingest instances
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:  # heard at T0, heartbeat interval 30 s: STALE at +30 s, OFFLINE at +150 s
        await conn.execute(text(
            "INSERT INTO device_state (tenant_id, device_id, status, last_seen_at, last_state_change_at) "
            "VALUES (:t, :d, 'ONLINE', :at, :at) ON CONFLICT (tenant_id, device_id) DO UPDATE "
            "SET status = 'ONLINE', last_seen_at = :at, last_state_change_at = :at"),
            {"t": tenant.tenant_id, "d": device, "at": T0})
    return tenant, device


async def _beat_until(engine: AsyncEngine, start_s: int, end_s: int) -> int:
    """Instance 0 ready, beating every 5 s from T0+start_s to T0+end_s."""
    for at in [*range(start_s, end_s, 5), end_s]:
        await beat(engine, "ingest-0@test", "ingest", True, "", T0 + timedelta(seconds=at))
    return end_s


async def _run(engine: AsyncEngine, at: datetime) -> bool:
    async with system_tx(engine) as conn:
        state, transitions = await guarded_liveness(conn, at)
    assert (transitions is None) == state.paused
    return state.paused


async def _status(engine: AsyncEngine, tenant: TenantRef, device: str) -> tuple[str, int]:
    async with system_tx(engine) as conn:
        status = (await conn.execute(text("SELECT status FROM device_state WHERE tenant_id = :t AND device_id = :d"),
                                     {"t": tenant.tenant_id, "d": device})).scalar_one()
        alerts = (await conn.execute(text("SELECT count(*) FROM alerts WHERE tenant_id = :t AND device_id = :d "
                                          "AND alert_type = 'NO_HEARTBEAT'"),
                                     {"t": tenant.tenant_id, "d": device})).scalar_one()
    return status, alerts


async def test_no_device_goes_offline_while_ingest_is_down(engine: AsyncEngine, fleet: tuple[TenantRef, str]) -> None:
    tenant, device = fleet
    await beat(engine, "ingest-0@test", "ingest", True, "", T0)
    await beat(engine, "ingest-0@test", "ingest", False, "not connected to the broker", T0 + timedelta(seconds=5))
    assert await _run(engine, T0 + timedelta(seconds=200))  # the only instance is not ready: paused
    assert await _status(engine, tenant, device) == ("ONLINE", 0)
    # A worker that stopped beating altogether (killed, host lost) counts as down too.
    await beat(engine, "ingest-0@test", "ingest", True, "", T0 + timedelta(seconds=210))
    assert await _run(engine, T0 + timedelta(seconds=400))
    assert await _status(engine, tenant, device) == ("ONLINE", 0)


async def test_after_an_outage_devices_get_their_full_interval(engine: AsyncEngine,
                                                                fleet: tuple[TenantRef, str]) -> None:
    tenant, device = fleet
    await beat(engine, "ingest-0@test", "ingest", False, "not subscribed", T0 + timedelta(seconds=5))
    back = T0 + timedelta(seconds=300)
    await beat(engine, "ingest-0@test", "ingest", True, "", back)
    last = 300
    for seconds, expected in ((310, "ONLINE"), (329, "ONLINE"), (330, "STALE"), (449, "STALE")):
        last = await _beat_until(engine, last, seconds)
        assert not await _run(engine, T0 + timedelta(seconds=seconds))
        assert (await _status(engine, tenant, device))[0] == expected, seconds
    await _beat_until(engine, last, 450)
    assert not await _run(engine, T0 + timedelta(seconds=450))
    assert await _status(engine, tenant, device) == ("OFFLINE", 1)  # silent 150 s since ingest came back


async def test_one_ready_instance_is_enough(engine: AsyncEngine, fleet: tuple[TenantRef, str]) -> None:
    tenant, device = fleet
    await _beat_until(engine, -600, 195)  # instance 0 ready, beating every 5 s, since long before
    await beat(engine, "ingest-1@test", "ingest", False, "writer failing", T0 + timedelta(seconds=195))
    assert not await _run(engine, T0 + timedelta(seconds=200))
    assert await _status(engine, tenant, device) == ("OFFLINE", 1)


async def test_without_ingest_heartbeats_liveness_runs_as_before(engine: AsyncEngine,
                                                                  fleet: tuple[TenantRef, str]) -> None:
    tenant, device = fleet  # an HTTP-only fleet, or no ingest worker for 10 minutes
    assert not await _run(engine, T0 + timedelta(seconds=200))
    assert await _status(engine, tenant, device) == ("OFFLINE", 1)
