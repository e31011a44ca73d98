"""Escalation steps: due levels fire once each, in order, and stop on acknowledgement."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, acknowledge_alert, raise_alert
from pulse.db import system_tx
from pulse.oncall.service import fire_due_escalations
from tests.conftest import TenantRef, make_device, make_tenant

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


async def _policy(engine: AsyncEngine, tenant: TenantRef, delays: list[int], *, repeat: int = 0) -> str:
    async with system_tx(engine) as conn:
        policy_id = (await conn.execute(text(
            "INSERT INTO escalation_policies (tenant_id, name, repeat_count, is_default) VALUES (:t, 'default', :r, true) "
            "RETURNING policy_id::text"), {"t": tenant.tenant_id, "r": repeat})).scalar_one()
        for i, delay in enumerate(delays, 1):
            await conn.execute(text(
                "INSERT INTO escalation_levels (tenant_id, policy_id, position, delay_minutes, targets) "
                "VALUES (:t, CAST(:p AS uuid), :i, :d, CAST(:targets AS jsonb))"),
                {"t": tenant.tenant_id, "p": policy_id, "i": i, "d": delay,
                 "targets": json.dumps([{"kind": "channel", "name": f"level-{i}"}])})
    return str(policy_id)


async def _open(engine: AsyncEngine, tenant: TenantRef, device: str) -> str:
    async with system_tx(engine) as conn:
        change = await raise_alert(conn, AlertSignal(
            tenant_id=tenant.tenant_id, fingerprint=f"RULE:test:{device}", alert_type="THRESHOLD", severity=5,
            title="boiler pressure", summary="pressure too high", device_id=device), now=T0)
    return change.alert_id


async def _escalations(engine: AsyncEngine, alert_id: str) -> list[Any]:
    async with system_tx(engine) as conn:
        return [r[0] for r in await conn.execute(text(
            "SELECT (details->>'level')::int FROM alert_events WHERE alert_id = CAST(:a AS uuid) AND kind = 'ESCALATED' "
            "ORDER BY event_id"), {"a": alert_id})]


async def _fire(engine: AsyncEngine, at: datetime) -> int:
    async with system_tx(engine) as conn:
        return await fire_due_escalations(conn, at)


async def test_levels_fire_in_order_at_their_delays(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await _policy(engine, tenant, [0, 5, 10])
    alert_id = await _open(engine, tenant, device)
    assert await _fire(engine, T0) >= 1
    assert await _escalations(engine, alert_id) == [1]
    await _fire(engine, T0 + timedelta(minutes=4, seconds=59))
    assert await _escalations(engine, alert_id) == [1]
    await _fire(engine, T0 + timedelta(minutes=5))
    assert await _escalations(engine, alert_id) == [1, 2]
    await _fire(engine, T0 + timedelta(minutes=15))
    assert await _escalations(engine, alert_id) == [1, 2, 3]
    await _fire(engine, T0 + timedelta(hours=5))
    assert await _escalations(engine, alert_id) == [1, 2, 3]  # no repeat configured


async def test_acknowledging_after_level_two_stops_level_three(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await _policy(engine, tenant, [0, 5, 10])
    alert_id = await _open(engine, tenant, device)
    await _fire(engine, T0)
    await _fire(engine, T0 + timedelta(minutes=5))
    async with system_tx(engine) as conn:
        await acknowledge_alert(conn, tenant.tenant_id, alert_id, actor="oncall@example.com",
                                now=T0 + timedelta(minutes=6))
    await _fire(engine, T0 + timedelta(minutes=30))
    assert await _escalations(engine, alert_id) == [1, 2]


async def test_two_escalators_racing_fire_each_level_once(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    devices = [await make_device(engine, tenant) for _ in range(10)]
    await _policy(engine, tenant, [0, 5])
    alert_ids = [await _open(engine, tenant, d) for d in devices]
    await asyncio.gather(*(_fire(engine, T0) for _ in range(4)))
    await asyncio.gather(*(_fire(engine, T0 + timedelta(minutes=5)) for _ in range(4)))
    for alert_id in alert_ids:
        assert await _escalations(engine, alert_id) == [1, 2]


async def test_policy_repeats_the_levels(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    await _policy(engine, tenant, [0, 5], repeat=1)
    alert_id = await _open(engine, tenant, device)
    for minutes in (0, 5, 5, 10, 15, 60):
        await _fire(engine, T0 + timedelta(minutes=minutes))
    assert await _escalations(engine, alert_id) == [1, 2, 1, 2]
