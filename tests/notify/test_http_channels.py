"""Slack, PagerDuty and Teams channels against a real local HTTP receiver, through the delivery pipeline."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import acknowledge_alert, close_alert
from pulse.clock import FrozenClock
from pulse.db import system_tx
from pulse.errors import ValidationError
from pulse.notify.routing import create_route
from pulse.notify.service import create_channel, get_channel_masked
from pulse.notify.worker import Deliverer
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant
from tests.notify.test_delivery import FAST, Receiver, _alert

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"


async def _channel(engine: AsyncEngine, settings: Settings, kind: str, config: dict[str, Any],
                   secrets: dict[str, str], **route: Any) -> tuple[TenantRef, str, str]:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant, site_id=None)
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, kind.lower(), kind, config, secrets, settings=settings,
                                       rate_limit_per_min=route.pop("rate_limit_per_min", None))
        await create_route(conn, tenant.tenant_id, name="all", channel_id=channel, **route)
    return tenant, device, channel


async def _deliver_until(engine: AsyncEngine, settings: Settings, receiver: Receiver, n: int,
                         deliverer: Deliverer | None = None) -> list[dict[str, Any]]:
    d = deliverer or Deliverer(engine, settings, retry=FAST)
    try:
        for _ in range(200):
            await d.deliver_once()
            if len(receiver.requests) >= n:
                break
            await asyncio.sleep(0.05)
    finally:
        if deliverer is None:
            await d.aclose()
    return [json.loads(body) for _headers, body in receiver.requests]


async def test_slack_message_has_severity_colour_facts_and_text(engine: AsyncEngine, settings: Settings,
                                                               receiver: Receiver) -> None:
    tenant, device, _ = await _channel(engine, settings, "SLACK", {"title_template": "{severity_name}: {title}"},
                                       {"webhook_url": receiver.url})
    await _alert(engine, tenant, device, severity=5)
    [message] = await _deliver_until(engine, settings, receiver, 1)
    [attachment] = message["attachments"]
    assert message["text"].startswith("critical: too warm")
    assert attachment["color"] == "#E01E5A"  # critical is red
    facts = {f["title"]: f["value"] for f in attachment["fields"]}
    assert facts["Device"] == device and facts["Value"] == "temp_c = 31" and facts["Severity"] == "critical (5)"


async def test_pagerduty_trigger_acknowledge_resolve_share_one_dedup_key(engine: AsyncEngine, settings: Settings,
                                                                        receiver: Receiver) -> None:
    tenant, device, channel = await _channel(engine, settings, "PAGERDUTY", {"url": receiver.url},
                                             {"routing_key": ROUTING_KEY})
    alert_id = await _alert(engine, tenant, device, severity=4)
    now = datetime.now(UTC)
    async with system_tx(engine) as conn:
        await acknowledge_alert(conn, tenant.tenant_id, alert_id, actor="ops@example.com", now=now)
    async with system_tx(engine) as conn:
        await close_alert(conn, tenant.tenant_id, alert_id, actor="ops@example.com", reason="fixed", now=now)
    events = await _deliver_until(engine, settings, receiver, 3)
    assert sorted(e["event_action"] for e in events) == ["acknowledge", "resolve", "trigger"]
    assert {e["dedup_key"] for e in events} == {f"pulse-{alert_id}"}
    assert {e["routing_key"] for e in events} == {ROUTING_KEY}
    [trigger] = [e for e in events if e["event_action"] == "trigger"]
    assert trigger["payload"]["severity"] == "error"  # Pulse 4 (high) is PagerDuty's error
    assert trigger["payload"]["source"] == device and trigger["payload"]["component"] == "temp_c"
    assert trigger["client"] == "Pulse"
    async with system_tx(engine) as conn:
        shown = await get_channel_masked(conn, tenant.tenant_id, channel, settings=settings)
    assert shown["secrets"] == {"routing_key": "••••••"} and shown["rate_limit_per_min"] == 120


async def test_teams_message_card(engine: AsyncEngine, settings: Settings, receiver: Receiver) -> None:
    tenant, device, _ = await _channel(engine, settings, "TEAMS", {}, {"webhook_url": receiver.url})
    await _alert(engine, tenant, device, severity=3)
    [card] = await _deliver_until(engine, settings, receiver, 1)
    assert card["@type"] == "MessageCard" and card["themeColor"] == "ECB22E"  # medium is yellow
    assert {f["name"]: f["value"] for f in card["sections"][0]["facts"]}["Device"] == device


async def test_rate_limited_channel_queues_and_never_drops(engine: AsyncEngine, settings: Settings,
                                                           receiver: Receiver) -> None:
    tenant, _device, channel = await _channel(engine, settings, "PAGERDUTY", {"url": receiver.url},
                                              {"routing_key": ROUTING_KEY}, rate_limit_per_min=3)
    devices = [await make_device(engine, tenant) for _ in range(7)]
    for device in devices:
        await _alert(engine, tenant, device, severity=4)
    clock = FrozenClock(datetime.now(UTC))
    first, second = (Deliverer(engine, settings, retry=FAST, clock=clock) for _ in range(2))
    try:
        await asyncio.gather(first.deliver_once(), second.deliver_once(), first.deliver_once())
        assert len(receiver.requests) == 3  # two deliverers together keep to 3 a minute

        async def statuses() -> dict[str, int]:
            async with system_tx(engine) as conn:
                rows = await conn.execute(text(
                    "SELECT status, count(*) FROM notification_jobs WHERE channel_id = CAST(:c AS uuid) "
                    "GROUP BY status"), {"c": channel})
                return {r[0]: r[1] for r in rows}

        assert await statuses() == {"DELIVERED": 3, "PENDING": 4}  # queued, not failed
        clock.advance(61)
        await asyncio.gather(first.deliver_once(), second.deliver_once())
        assert len(receiver.requests) == 6
        clock.advance(61)
        await first.deliver_once()
        assert await statuses() == {"DELIVERED": 7}
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.parametrize(("kind", "config", "secrets", "field"), [
    ("PAGERDUTY", {}, {}, "secrets.routing_key"),
    ("PAGERDUTY", {"url": "http://169.254.169.254/v2/enqueue"}, {"routing_key": ROUTING_KEY}, "config.url"),
    ("SLACK", {}, {"webhook_url": "http://10.0.0.1/hook"}, "secrets.webhook_url"),
    ("SLACK", {"title_template": "{hostname}"}, {"webhook_url": "http://127.0.0.1:9/x"}, "config.title_template"),
    ("TEAMS", {}, {}, "secrets.webhook_url"),
])
async def test_bad_channel_settings_name_the_field(engine: AsyncEngine, settings: Settings, kind: str,
                                                   config: dict[str, Any], secrets: dict[str, str], field: str) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        with pytest.raises(ValidationError) as caught:
            await create_channel(conn, tenant.tenant_id, "bad", kind, config, secrets, settings=settings)
    assert caught.value.field == field


async def test_alert_link_reaches_slack_when_a_public_url_is_set(engine: AsyncEngine, settings: Settings,
                                                                 receiver: Receiver) -> None:
    from pulse.alerting.service import AlertSignal, raise_alert

    tenant, device, _ = await _channel(engine, settings, "SLACK", {}, {"webhook_url": receiver.url})
    async with system_tx(engine) as conn:
        change = await raise_alert(conn, AlertSignal(
            tenant_id=tenant.tenant_id, fingerprint=f"RULE:link:{device}", alert_type="THRESHOLD", severity=2,
            title="low battery", summary="battery 9 %", device_id=device), now=datetime.now(UTC) - timedelta(seconds=1),
            base_url="https://pulse.example.com")
    [message] = await _deliver_until(engine, settings, receiver, 1)
    link = f"https://pulse.example.com/app/alerts/{change.alert_id}"
    assert message["attachments"][0]["title_link"] == link and link in message["text"]
