"""Slack, PagerDuty and Teams channels against a real local HTTP receiver, through the delivery pipeline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pulse.alerting.service import AlertSignal, acknowledge_alert, clear_alert, raise_alert
from pulse.clock import FrozenClock
from pulse.db import system_tx
from pulse.errors import ValidationError
from pulse.notify.routing import create_route
from pulse.notify.service import create_channel, get_channel_masked
from pulse.notify.worker import Deliverer
from pulse.settings import Settings
from tests.conftest import TenantRef, make_device, make_tenant
from tests.notify.test_delivery import FAST, Receiver, _alert, _attempts, _drain, _jobs, _settled

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
BASE_URL = "https://pulse.example.com"


@pytest.fixture
def answering() -> Iterator[Receiver]:
    """A receiver whose default answer is Teams' "1"; its script entries may carry a body."""
    r = Receiver(default_body=b"1")
    yield r
    r.server.shutdown()
    r.server.server_close()


async def _channel(engine: AsyncEngine, settings: Settings, kind: str, config: dict[str, Any],
                   secrets: dict[str, str], **route: Any) -> tuple[TenantRef, str, str]:
    tenant = await make_tenant(engine)
    device = await make_device(engine, tenant, tags=["cold-chain"])
    async with system_tx(engine) as conn:
        channel = await create_channel(conn, tenant.tenant_id, kind.lower(), kind, config, secrets, settings=settings,
                                       rate_limit_per_min=route.pop("rate_limit_per_min", None))
        await create_route(conn, tenant.tenant_id, name="all", channel_id=channel, **route)
    return tenant, device, channel


async def _raise(engine: AsyncEngine, tenant: TenantRef, device: str, *, title: str = "too warm", severity: int = 4,
                 fingerprint: str | None = None) -> str:
    """Open an alert the way an evaluator does, with a public URL so the Pulse link is present."""
    async with system_tx(engine) as conn:
        change = await raise_alert(conn, AlertSignal(
            tenant_id=tenant.tenant_id, fingerprint=fingerprint or f"RULE:r:{device}", alert_type="THRESHOLD",
            severity=severity, title=title, summary="temp_c 31 > 30", device_id=device, site_id="berlin-dc",
            metric="temp_c", value=31), now=datetime.now(UTC) - timedelta(seconds=1), base_url=BASE_URL)
    return change.alert_id


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


async def _shown_and_stored(engine: AsyncEngine, settings: Settings, tenant: TenantRef,
                            channel: str) -> tuple[dict[str, Any], str]:
    async with system_tx(engine) as conn:
        shown = await get_channel_masked(conn, tenant.tenant_id, channel, settings=settings)
        stored = (await conn.execute(text(
            "SELECT secrets_encrypted FROM notification_channels WHERE channel_id = CAST(:c AS uuid)"),
            {"c": channel})).scalar_one()
    return shown, stored


# --- Slack ---------------------------------------------------------------------------------------------------------

async def test_slack_message_has_severity_colour_facts_and_text(engine: AsyncEngine, settings: Settings,
                                                               receiver: Receiver) -> None:
    tenant, device, channel = await _channel(engine, settings, "SLACK",
                                             {"title_template": "{severity_name}: {title}", "channel": "#ops",
                                              "username": "Pulse"}, {"webhook_url": receiver.url})
    await _alert(engine, tenant, device, severity=5)
    [message] = await _deliver_until(engine, settings, receiver, 1)
    [attachment] = message["attachments"]
    assert message["text"].startswith("critical: too warm")
    assert message["channel"] == "#ops" and message["username"] == "Pulse"
    assert attachment["color"] == "#E01E5A"  # critical is red
    facts = {f["title"]: f["value"] for f in attachment["fields"]}
    assert facts["Device"] == device and facts["Value"] == "temp_c = 31" and facts["Severity"] == "critical (5)"
    assert facts["Status"] == "OPEN" and "Pulse" not in facts  # no public URL, no link
    shown, stored = await _shown_and_stored(engine, settings, tenant, channel)
    assert shown["secrets"] == {"webhook_url": "••••••"} and receiver.url not in stored


async def test_slack_resolved_message_is_grey_with_site_and_link(engine: AsyncEngine, settings: Settings,
                                                                 receiver: Receiver) -> None:
    tenant, device, _ = await _channel(engine, settings, "SLACK", {}, {"webhook_url": receiver.url})
    alert_id = await _raise(engine, tenant, device, severity=2)
    async with system_tx(engine) as conn:
        await clear_alert(conn, tenant.tenant_id, f"RULE:r:{device}", reason="back to normal", now=datetime.now(UTC),
                          base_url=BASE_URL)
    messages = await _deliver_until(engine, settings, receiver, 2)
    link = f"{BASE_URL}/app/alerts/{alert_id}"
    [opened] = [m for m in messages if "OPENED" in m["text"]]
    [closed] = [m for m in messages if "CLOSED" in m["text"]]
    assert opened["attachments"][0]["color"] == "#2EB67D"  # low is green
    attachment = closed["attachments"][0]
    facts = {f["title"]: f["value"] for f in attachment["fields"]}
    assert attachment["color"] == "#9E9E9E" and facts["Status"] == "RESOLVED" and attachment["footer"].endswith("RESOLVED")
    assert facts["Site"] == "berlin-dc" and facts["Pulse"] == f"<{link}|Open alert>"
    assert attachment["title_link"] == link and link in closed["text"]


async def test_slack_text_cannot_ping_the_channel(engine: AsyncEngine, settings: Settings,
                                                 receiver: Receiver) -> None:
    tenant, device, _ = await _channel(engine, settings, "SLACK", {"title_template": "{title}"},
                                       {"webhook_url": receiver.url})
    await _raise(engine, tenant, device, title="<!channel> door open & warm")
    [message] = await _deliver_until(engine, settings, receiver, 1)
    assert message["attachments"][0]["title"] == "&lt;!channel&gt; door open &amp; warm"
    assert "<!channel>" not in json.dumps(message)


# --- PagerDuty -----------------------------------------------------------------------------------------------------

async def test_pagerduty_trigger_acknowledge_resolve_share_one_dedup_key(engine: AsyncEngine, settings: Settings,
                                                                        receiver: Receiver) -> None:
    tenant, device, channel = await _channel(engine, settings, "PAGERDUTY", {"url": receiver.url},
                                             {"routing_key": ROUTING_KEY})
    d = Deliverer(engine, settings, retry=FAST)
    try:
        alert_id = await _raise(engine, tenant, device, severity=4)
        await _deliver_until(engine, settings, receiver, 1, d)
        async with system_tx(engine) as conn:
            await acknowledge_alert(conn, tenant.tenant_id, alert_id, actor="ops@example.com", now=datetime.now(UTC))
        await _deliver_until(engine, settings, receiver, 2, d)
        async with system_tx(engine) as conn:
            cleared = await clear_alert(conn, tenant.tenant_id, f"RULE:r:{device}", reason="back to normal",
                                        now=datetime.now(UTC))
        assert cleared == alert_id
        events = await _deliver_until(engine, settings, receiver, 3, d)
    finally:
        await d.aclose()
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {f"pulse-{alert_id}"}
    assert {e["routing_key"] for e in events} == {ROUTING_KEY}
    trigger, acknowledge, resolve = events
    assert set(acknowledge) == set(resolve) == {"routing_key", "event_action", "dedup_key"}
    payload = trigger["payload"]
    assert payload["severity"] == "error"  # Pulse 4 (high) is PagerDuty's error
    assert payload["source"] == device and payload["component"] == "temp_c" and payload["group"] == "berlin-dc"
    assert payload["class"] == "THRESHOLD" and payload["summary"] == "[high] OPENED: too warm"
    assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None
    details = payload["custom_details"]
    assert details["tenant_id"] == tenant.tenant_id and details["value"] == 31 and details["tags"] == ["cold-chain"]
    link = f"{BASE_URL}/app/alerts/{alert_id}"
    assert trigger["client"] == "Pulse" and trigger["client_url"] == link
    assert trigger["links"] == [{"href": link, "text": "Open in Pulse"}]
    shown, stored = await _shown_and_stored(engine, settings, tenant, channel)
    assert shown["secrets"] == {"routing_key": "••••••"} and ROUTING_KEY not in stored
    assert shown["rate_limit_per_min"] == 120 and shown["config"]["url"] == receiver.url


async def test_pagerduty_severity_mapping_and_summary_limit(engine: AsyncEngine, settings: Settings,
                                                            receiver: Receiver) -> None:
    tenant, device, _ = await _channel(engine, settings, "PAGERDUTY",
                                       {"url": receiver.url, "title_template": "x" * 1500 + " {title}"},
                                       {"routing_key": ROUTING_KEY})
    for severity in range(1, 6):
        await _raise(engine, tenant, device, severity=severity, fingerprint=f"RULE:sev{severity}:{device}")
    events = await _deliver_until(engine, settings, receiver, 5)
    mapped = {e["payload"]["custom_details"]["severity"]: e["payload"]["severity"] for e in events}
    assert mapped == {5: "critical", 4: "error", 3: "warning", 2: "warning", 1: "info"}
    assert {len(e["payload"]["summary"]) for e in events} == {1024}


async def test_pagerduty_400_is_dead_at_once(engine: AsyncEngine, settings: Settings,
                                             answering: Receiver) -> None:
    answering.script = [(400, {"Content-Type": "application/json"},
                         b'{"status":"invalid event","message":"Event object is invalid",'
                         b'"errors":["Length of \'routing_key\' is incorrect (should be 32 characters)"]}')]
    tenant, device, _ = await _channel(engine, settings, "PAGERDUTY", {"url": answering.url}, {"routing_key": "short"})
    await _raise(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await _drain(d, lambda: _settled(engine, tenant, "DEAD"))
    finally:
        await d.aclose()
    [job] = await _jobs(engine, tenant)
    assert len(answering.requests) == 1 and "Event object is invalid" in job.last_error
    assert [(a.outcome, a.status_code) for a in await _attempts(engine, job.job_id)] == [("FAILED", 400)]


async def test_pagerduty_429_and_5xx_are_retried_until_202(engine: AsyncEngine, settings: Settings,
                                                           answering: Receiver) -> None:
    answering.script = [(429, {"Retry-After": "0"}, b'{"status":"throttle event"}'), (503, {}, b"unavailable"),
                        (202, {}, b'{"status":"success","message":"Event processed"}')]
    tenant, device, _ = await _channel(engine, settings, "PAGERDUTY", {"url": answering.url},
                                       {"routing_key": ROUTING_KEY})
    await _raise(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await _drain(d, lambda: _settled(engine, tenant, "DELIVERED"))
    finally:
        await d.aclose()
    [job] = await _jobs(engine, tenant)
    assert [(a.outcome, a.status_code) for a in await _attempts(engine, job.job_id)] == [
        ("RETRY", 429), ("RETRY", 503), ("DELIVERED", 202)]
    assert len({json.loads(body)["dedup_key"] for _h, body in answering.requests}) == 1


# --- Teams ---------------------------------------------------------------------------------------------------------

async def test_teams_message_card(engine: AsyncEngine, settings: Settings, answering: Receiver) -> None:
    tenant, device, channel = await _channel(engine, settings, "TEAMS", {}, {"webhook_url": answering.url})
    alert_id = await _raise(engine, tenant, device, severity=3)
    [card] = await _deliver_until(engine, settings, answering, 1)
    assert card["@type"] == "MessageCard" and card["@context"] == "https://schema.org/extensions"
    assert card["themeColor"] == "ECB22E"  # medium is yellow
    assert card["summary"] == card["title"] == "[medium] OPENED: too warm"
    facts = {f["name"]: f["value"] for f in card["sections"][0]["facts"]}
    assert facts["Device"] == device and facts["Site"] == "berlin-dc" and facts["Value"] == "temp_c = 31"
    assert card["potentialAction"] == [{"@type": "OpenUri", "name": "Open in Pulse", "targets": [
        {"os": "default", "uri": f"{BASE_URL}/app/alerts/{alert_id}"}]}]
    assert [j.status for j in await _jobs(engine, tenant)] == ["DELIVERED"]
    shown, stored = await _shown_and_stored(engine, settings, tenant, channel)
    assert shown["secrets"] == {"webhook_url": "••••••"} and answering.url not in stored


async def test_teams_200_carrying_http_error_429_is_retried(engine: AsyncEngine, settings: Settings,
                                                            answering: Receiver) -> None:
    answering.script = [(200, {}, b"Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0")]
    tenant, device, _ = await _channel(engine, settings, "TEAMS", {}, {"webhook_url": answering.url})
    await _raise(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await _drain(d, lambda: _settled(engine, tenant, "DELIVERED"))
    finally:
        await d.aclose()
    [job] = await _jobs(engine, tenant)
    assert len(answering.requests) == 2
    assert [a.outcome for a in await _attempts(engine, job.job_id)] == ["RETRY", "DELIVERED"]


async def test_teams_200_carrying_a_client_error_is_not_a_delivery(engine: AsyncEngine, settings: Settings,
                                                                   answering: Receiver) -> None:
    answering.script = [(200, {}, b"Webhook message delivery failed with error: Microsoft Teams endpoint returned "
                                  b"HTTP error 413 with ContextId tcid=0")]
    tenant, device, _ = await _channel(engine, settings, "TEAMS", {}, {"webhook_url": answering.url})
    await _raise(engine, tenant, device)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await _drain(d, lambda: _settled(engine, tenant, "DEAD"))
    finally:
        await d.aclose()
    [job] = await _jobs(engine, tenant)
    assert len(answering.requests) == 1 and "HTTP error 413" in job.last_error


# --- shared --------------------------------------------------------------------------------------------------------

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
    ("PAGERDUTY", {}, {"routing_key": "has a space"}, "secrets.routing_key"),
    ("PAGERDUTY", {}, {"routing_key": "k" * 65}, "secrets.routing_key"),
    ("PAGERDUTY", {"url": "http://169.254.169.254/v2/enqueue"}, {"routing_key": ROUTING_KEY}, "config.url"),
    ("PAGERDUTY", {"url": "ftp://127.0.0.1/enqueue"}, {"routing_key": ROUTING_KEY}, "config.url"),
    ("SLACK", {}, {}, "secrets.webhook_url"),
    ("SLACK", {}, {"webhook_url": "http://10.0.0.1/hook"}, "secrets.webhook_url"),
    ("SLACK", {}, {"webhook_url": "http://169.254.169.254/latest/meta-data/"}, "secrets.webhook_url"),
    ("SLACK", {"title_template": "{hostname}"}, {"webhook_url": "http://127.0.0.1:9/x"}, "config.title_template"),
    ("SLACK", {"username": "u" * 81}, {"webhook_url": "http://127.0.0.1:9/x"}, "config.username"),
    ("TEAMS", {}, {}, "secrets.webhook_url"),
    ("TEAMS", {"body_template": "{device.name}"}, {"webhook_url": "http://127.0.0.1:9/x"}, "config.body_template"),
])
async def test_bad_channel_settings_name_the_field(engine: AsyncEngine, settings: Settings, kind: str,
                                                   config: dict[str, Any], secrets: dict[str, str], field: str) -> None:
    tenant = await make_tenant(engine)
    async with system_tx(engine) as conn:
        with pytest.raises(ValidationError) as caught:
            await create_channel(conn, tenant.tenant_id, "bad", kind, config, secrets, settings=settings)
    assert caught.value.field == field


async def test_an_alerts_events_reach_pagerduty_in_order_across_retries(engine: AsyncEngine, settings: Settings,
                                                                        receiver: Receiver) -> None:
    """The trigger is being retried when the alert is acknowledged and closed: acknowledge and resolve wait for
    it, so PagerDuty never sees a resolve before the trigger (which would leave an incident open forever)."""
    from pulse.alerting.service import close_alert

    tenant, device, _channel_id = await _channel(engine, settings, "PAGERDUTY", {"url": receiver.url},
                                                 {"routing_key": ROUTING_KEY})
    receiver.script = [(503, {})]
    alert_id = await _alert(engine, tenant, device, severity=5)
    d = Deliverer(engine, settings, retry=FAST)
    try:
        await d.deliver_once()  # the trigger fails once; it is due again in 50 ms
        now = datetime.now(UTC)
        async with system_tx(engine) as conn:
            await acknowledge_alert(conn, tenant.tenant_id, alert_id, actor="ops@example.com", now=now)
        async with system_tx(engine) as conn:
            await close_alert(conn, tenant.tenant_id, alert_id, actor="ops@example.com", reason="fixed", now=now)
        await d.deliver_once()  # acknowledge and resolve are due, but wait behind the trigger
        for _ in range(100):
            if len(receiver.requests) >= 4:
                break
            await asyncio.sleep(0.05)
            await d.deliver_once()
    finally:
        await d.aclose()
    actions = [json.loads(body)["event_action"] for _headers, body in receiver.requests]
    assert actions == ["trigger", "trigger", "acknowledge", "resolve"]
