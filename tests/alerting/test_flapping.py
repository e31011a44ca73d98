"""Flap detection: an alert that keeps opening and closing is held open, marked flapping once, and closes only
after its condition stayed clear for the hold time. Silence keeps updates from notifying, not from recording."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, clear_alert, raise_alert, silence_alert
from pulse.db import system_tx
from pulse.notify.routing import create_route
from pulse.notify.service import create_channel
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _signal(tenant: TenantRef, device: str) -> AlertSignal:
    return AlertSignal(tenant_id=tenant.tenant_id, fingerprint=f"RULE:flap:{device}", alert_type="THRESHOLD",
                       severity=3, title="pressure", summary="pressure 5.1 > 5", device_id=device, value=5.1)


async def _breach(engine: AsyncEngine, tenant: TenantRef, device: str, at: datetime) -> None:
    async with system_tx(engine) as conn:
        await raise_alert(conn, _signal(tenant, device), now=at)


async def _clear(engine: AsyncEngine, tenant: TenantRef, device: str, at: datetime) -> str | None:
    async with system_tx(engine) as conn:
        return await clear_alert(conn, tenant.tenant_id, f"RULE:flap:{device}", reason="condition cleared", now=at)


async def _alerts(engine: AsyncEngine, tenant: TenantRef) -> list[Any]:
    async with system_tx(engine) as conn:
        return list((await conn.execute(text(
            "SELECT alert_id, status, is_flapping, close_reason, "
            "  (SELECT count(*) FROM alert_events e WHERE e.alert_id = a.alert_id AND e.kind = 'FLAPPING') AS flaps "
            "FROM alerts a WHERE tenant_id = :t ORDER BY opened_at"), {"t": tenant.tenant_id})).all())


async def test_the_fourth_close_in_30_minutes_holds_the_alert_open_until_clear_for_10_minutes(
        engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    at = T0
    for _ in range(3):  # three ordinary open/close cycles
        await _breach(engine, tenant, device, at)
        assert await _clear(engine, tenant, device, at + timedelta(minutes=1)) is not None
        at += timedelta(minutes=5)
    await _breach(engine, tenant, device, at)
    assert await _clear(engine, tenant, device, at + timedelta(minutes=1)) is None  # flapping: held open
    alerts = await _alerts(engine, tenant)
    assert len(alerts) == 4 and alerts[-1].status == "OPEN" and alerts[-1].is_flapping and alerts[-1].flaps == 1

    await _clear(engine, tenant, device, at + timedelta(minutes=6))  # clear for 5 of 10 minutes
    await _breach(engine, tenant, device, at + timedelta(minutes=7))  # breaches again: the hold starts over
    assert await _clear(engine, tenant, device, at + timedelta(minutes=8)) is None
    assert await _clear(engine, tenant, device, at + timedelta(minutes=17, seconds=59)) is None
    closed = await _clear(engine, tenant, device, at + timedelta(minutes=18))
    alerts = await _alerts(engine, tenant)
    assert closed == str(alerts[-1].alert_id) and alerts[-1].status == "CLOSED"
    assert "after flapping" in alerts[-1].close_reason and alerts[-1].flaps == 1
    assert len(alerts) == 4  # one alert for the whole flapping episode


async def test_closes_spread_out_do_not_flap_and_tenant_settings_apply(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    at = T0
    for _ in range(6):  # a close every 20 minutes: never 3 within 30 minutes
        await _breach(engine, tenant, device, at)
        assert await _clear(engine, tenant, device, at + timedelta(minutes=1)) is not None
        at += timedelta(minutes=20)
    async with system_tx(engine) as conn:
        await conn.execute(text("UPDATE tenants SET settings = settings || '{\"flap_closes\": 1, "
                                "\"flap_window_minutes\": 120}' WHERE tenant_id = :t"), {"t": tenant.tenant_id})
    await _breach(engine, tenant, device, at)
    assert await _clear(engine, tenant, device, at + timedelta(minutes=1)) is None
    assert (await _alerts(engine, tenant))[-1].is_flapping


async def test_a_silenced_alert_records_updates_without_notifying(engine: AsyncEngine, settings: Settings,
                                                                  receiver: Any) -> None:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, "hook", "WEBHOOK", {"url": receiver.url},
                                       {"secret": "s" * 20}, settings=settings)
        await create_route(conn, tenant.tenant_id, name="all", channel_id=channel,
                           event_kinds=["OPENED", "UPDATED"], repeat_interval_s=1)
    await _breach(engine, tenant, device, T0)
    async with system_tx(engine) as conn:
        alert_id = str((await conn.execute(text("SELECT alert_id FROM alerts WHERE tenant_id = :t"),
                                           {"t": tenant.tenant_id})).scalar_one())
        await silence_alert(conn, tenant.tenant_id, alert_id, until=T0 + timedelta(hours=1), actor="ops", now=T0)
    await _breach(engine, tenant, device, T0 + timedelta(minutes=2))
    async with system_tx(engine) as conn:
        kinds = [r[0] for r in await conn.execute(text(
            "SELECT event_kind FROM notification_jobs WHERE tenant_id = :t ORDER BY created_at"),
            {"t": tenant.tenant_id})]
        updates = (await conn.execute(text(
            "SELECT count(*) FROM alert_events WHERE alert_id = CAST(:a AS uuid) AND kind = 'UPDATED'"),
            {"a": alert_id})).scalar_one()
    assert kinds == ["OPENED"] and updates == 1
    await _breach(engine, tenant, device, T0 + timedelta(hours=2))  # after the silence: notifies again
    async with system_tx(engine) as conn:
        kinds = [r[0] for r in await conn.execute(text(
            "SELECT event_kind FROM notification_jobs WHERE tenant_id = :t ORDER BY created_at"),
            {"t": tenant.tenant_id})]
    assert kinds == ["OPENED", "UPDATED"]
