"""Per-channel rate limits: jobs over the limit stay queued until the 60 s window moves, across deliverers."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, raise_alert
from pulse.clock import FrozenClock
from pulse.db import system_tx
from pulse.notify.routing import create_route
from pulse.notify.schemas import AlertEventMessage
from pulse.notify.service import RetryPolicy, claim_jobs, create_channel
from pulse.notify.worker import Deliverer
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant
from tests.notify.test_delivery import SECRET, Receiver

FAST = RetryPolicy(base_s=0.05, cap_s=1.0, jitter=0.0)
LIMIT = 4


async def _limited_channel(engine: AsyncEngine, settings: Settings, url: str, *, alerts: int,
                           limit: int = LIMIT) -> tuple[TenantRef, str]:
    """A webhook channel limited to `limit` a minute, with one due job for each of `alerts` new alerts."""
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant)
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, "limited", "WEBHOOK", {"url": url},
                                       {"secret": SECRET}, settings=settings, rate_limit_per_min=limit)
        await create_route(conn, tenant.tenant_id, name="all", channel_id=channel)
    for n in range(alerts):
        async with system_tx(engine) as conn:
            await raise_alert(conn, AlertSignal(
                tenant_id=tenant.tenant_id, fingerprint=f"RULE:r{n}:{device}", alert_type="THRESHOLD", severity=4,
                title=f"too warm {n}", summary="temp_c 31 > 30", device_id=device, metric="temp_c", value=31),
                now=datetime.now(UTC) - timedelta(seconds=1))
    return tenant, channel


async def _statuses(engine: AsyncEngine, channel: str) -> dict[str, int]:
    async with system_tx(engine) as conn:
        rows = await conn.execute(text(
            "SELECT status, count(*) FROM notification_jobs WHERE channel_id = CAST(:c AS uuid) GROUP BY status"),
            {"c": channel})
        return {r[0]: r[1] for r in rows}


async def test_a_pass_sends_the_limit_and_the_rest_waits_for_the_window(engine: AsyncEngine, settings: Settings,
                                                                       receiver: Receiver) -> None:
    _tenant, channel = await _limited_channel(engine, settings, receiver.url, alerts=3 * LIMIT)
    clock = FrozenClock(datetime.now(UTC))
    d = Deliverer(engine, settings, retry=FAST, clock=clock)
    try:  # other tests' due jobs may be claimed too: count this channel's sends, not the claims
        await d.deliver_once()
        assert len(receiver.requests) == LIMIT
        assert await _statuses(engine, channel) == {"DELIVERED": LIMIT, "PENDING": 2 * LIMIT}  # queued, none DEAD

        await d.deliver_once()  # the same minute: nothing more goes out
        clock.advance(30)
        await d.deliver_once()  # the window slides; the first sends still count
        assert len(receiver.requests) == LIMIT

        clock.advance(31)  # 61 s after the first sends
        await d.deliver_once()
        assert await _statuses(engine, channel) == {"DELIVERED": 2 * LIMIT, "PENDING": LIMIT}
        clock.advance(61)
        await d.deliver_once()
        assert await _statuses(engine, channel) == {"DELIVERED": 3 * LIMIT}
    finally:
        await d.aclose()
    titles = sorted(body.decode() for _h, body in receiver.requests)
    assert len(titles) == len(set(titles)) == 3 * LIMIT  # each job sent once, none lost


async def test_failed_attempts_count_against_the_limit(engine: AsyncEngine, settings: Settings,
                                                       receiver: Receiver) -> None:
    receiver.script = [(503, {})]  # the first send fails and is retried
    _tenant, channel = await _limited_channel(engine, settings, receiver.url, alerts=LIMIT)
    clock = FrozenClock(datetime.now(UTC))
    d = Deliverer(engine, settings, retry=FAST, clock=clock)
    try:
        await d.deliver_once()  # other tests' due jobs may be claimed too: count this channel's sends
        assert await _statuses(engine, channel) == {"DELIVERED": LIMIT - 1, "PENDING": 1}
        clock.advance(5)  # the retry is due, but the minute's budget went on the four attempts
        await d.deliver_once()
        assert len(receiver.requests) == LIMIT
        clock.advance(56)
        await d.deliver_once()
    finally:
        await d.aclose()
    assert await _statuses(engine, channel) == {"DELIVERED": LIMIT}
    assert len(receiver.requests) == LIMIT + 1


async def test_concurrent_deliverers_together_keep_to_the_limit(engine: AsyncEngine, settings: Settings,
                                                                receiver: Receiver) -> None:
    _tenant, channel = await _limited_channel(engine, settings, receiver.url, alerts=3 * LIMIT)
    clock = FrozenClock(datetime.now(UTC))
    deliverers = [Deliverer(engine, settings, retry=FAST, clock=clock, batch=2, owner=f"twin-{n}") for n in range(2)]
    stop, wake = asyncio.Event(), asyncio.Event()
    pumps = [asyncio.create_task(d.pump(stop, wake, 0.01)) for d in deliverers]
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while len(receiver.requests) < LIMIT and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        # Both keep claiming for a while longer: the budget is spent, so nothing more may go out.
        for _ in range(20):
            wake.set()
            await asyncio.sleep(0.02)
        assert len(receiver.requests) == LIMIT
        assert await _statuses(engine, channel) == {"DELIVERED": LIMIT, "PENDING": 2 * LIMIT}
        # Many claims racing at once, some from fresh deliverers, still share one budget.
        clock.advance(61)
        racers = [Deliverer(engine, settings, retry=FAST, clock=clock, batch=3) for _ in range(4)]
        try:
            await asyncio.gather(*(r.deliver_once() for r in racers for _ in range(2)))
        finally:
            for r in racers:
                await r.aclose()
        for _ in range(10):
            wake.set()
            await asyncio.sleep(0.02)
        assert len(receiver.requests) == 2 * LIMIT
        assert await _statuses(engine, channel) == {"DELIVERED": 2 * LIMIT, "PENDING": LIMIT}
    finally:
        stop.set()
        await asyncio.gather(*pumps)
        for d in deliverers:
            await d.aclose()


async def _insert_jobs(engine: AsyncEngine, tenant: TenantRef, channel: str, count: int) -> None:
    """Due jobs written straight into the outbox (the claim, not routing, is under test)."""
    now = datetime.now(UTC) - timedelta(seconds=1)
    async with system_tx(engine) as conn:
        for n in range(count):
            msg = AlertEventMessage(tenant_id=tenant.tenant_id, alert_id=secrets.token_hex(16), event_id=n,
                                    event_kind="OPENED", fingerprint=f"fp-{n}", alert_type="THRESHOLD", severity=4,
                                    status="OPEN", title=f"alert {n}", opened_at=now, occurred_at=now)
            await conn.execute(text(
                "INSERT INTO notification_jobs (tenant_id, channel_id, event_kind, payload, idempotency_key, "
                "  next_attempt_at) VALUES (:t, CAST(:c AS uuid), 'OPENED', CAST(:p AS jsonb), :k, :now)"),
                {"t": tenant.tenant_id, "c": channel, "p": msgspec.json.encode(msg).decode(), "k": f"{channel}:{n}", "now": now})


async def test_pagerduty_channels_without_a_limit_keep_to_120_a_minute(engine: AsyncEngine,
                                                                       settings: Settings) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, "pd", "PAGERDUTY", {"url": "http://127.0.0.1:9/x"},
                                       {"routing_key": "R0UT1NGKEY"}, settings=settings)
        stored = (await conn.execute(text(
            "SELECT rate_limit_per_min FROM notification_channels WHERE channel_id = CAST(:c AS uuid)"),
            {"c": channel})).scalar_one()
        # A limit cleared by hand still falls back to PagerDuty's 120 a minute.
        await conn.execute(text(
            "UPDATE notification_channels SET rate_limit_per_min = NULL WHERE channel_id = CAST(:c AS uuid)"),
            {"c": channel})
    assert stored == 120
    await _insert_jobs(engine, tenant, channel, 130)
    now = datetime.now(UTC)
    claimed: list[Any] = []
    async with system_tx(engine) as conn:
        claimed += await claim_jobs(conn, owner="one", now=now, limit=500)
    async with system_tx(engine) as conn:
        claimed += await claim_jobs(conn, owner="two", now=now, limit=500)
    assert len(claimed) == 120
    assert await _statuses(engine, channel) == {"IN_PROGRESS": 120, "PENDING": 10}
