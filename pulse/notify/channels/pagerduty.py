"""PagerDuty Events API v2: trigger on open (and escalation, flapping, updates), acknowledge, resolve on close,
one dedup_key per alert so PagerDuty keeps one incident per Pulse alert."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import httpx

from pulse.errors import ValidationError
from pulse.notify.channels.http_common import check_templates, post_json, title_and_body
from pulse.notify.channels.webhook import result_from_response
from pulse.notify.schemas import AlertEventMessage, SendResult
from pulse.notify.ssrf import check_url

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"

SEVERITIES = {5: "critical", 4: "error", 3: "warning", 2: "warning", 1: "info"}
ACTIONS = {"OPENED": "trigger", "UPDATED": "trigger", "ESCALATED": "trigger", "FLAPPING": "trigger",
           "ACKNOWLEDGED": "acknowledge", "CLOSED": "resolve"}


def validate_config(config: dict[str, Any], secrets: dict[str, str], allow: tuple[str, ...]) -> dict[str, Any]:
    key = secrets.get("routing_key")
    if not isinstance(key, str) or not 1 <= len(key) <= 64 or any(ch.isspace() for ch in key):
        raise ValidationError("the integration's routing key (1-64 characters, no spaces) is required",
                              field="secrets.routing_key")
    url = config.get("url") or DEFAULT_URL
    check_url(url, allow, field="config.url")
    return {"url": url, **check_templates(config)}


def dedup_key(msg: AlertEventMessage) -> str:
    return f"pulse-{msg.alert_id}"


def render_event(msg: AlertEventMessage, config: dict[str, Any], routing_key: str) -> dict[str, Any]:
    """The Events API v2 body (docs/channels-http.md)."""
    action = ACTIONS.get(msg.event_kind, "trigger")
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key(msg)}
    if action != "trigger":
        return event
    title, _body = title_and_body(msg, config)
    link = msg.links.get("alert")
    payload: dict[str, Any] = {
        "summary": title[:1024], "source": msg.device_id or "pulse", "severity": SEVERITIES.get(msg.severity, "info"),
        "timestamp": msg.occurred_at.astimezone(UTC).isoformat(), "class": msg.alert_type,
        "custom_details": {"tenant_id": msg.tenant_id, "alert_id": msg.alert_id, "rule_id": msg.rule_id,
                           "metric": msg.metric, "value": msg.value, "summary": msg.summary, "tags": msg.tags,
                           "event": msg.event_kind, "severity": msg.severity}}
    if msg.metric:
        payload["component"] = msg.metric
    if msg.site_id:
        payload["group"] = msg.site_id
    event.update({"payload": payload, "client": "Pulse"})
    if link:
        event["client_url"] = link
        event["links"] = [{"href": link, "text": "Open in Pulse"}]
    return event


async def send(msg: AlertEventMessage, config: dict[str, Any], secrets: dict[str, str], *, delivery_id: str,
               http: httpx.AsyncClient, allow: tuple[str, ...]) -> SendResult:
    response = await post_json(http, config.get("url") or DEFAULT_URL,
                               render_event(msg, config, secrets["routing_key"]), allow, field="config.url",
                               delivery_id=delivery_id)
    return result_from_response(response)
