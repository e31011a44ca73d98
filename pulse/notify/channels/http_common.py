"""What the HTTP channel types share: a secret URL checked for SSRF, optional templates, one pinned JSON POST."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

import pulse
from pulse.errors import ValidationError
from pulse.notify.pinned_http import send_pinned
from pulse.notify.schemas import SEVERITY_NAMES, AlertEventMessage
from pulse.notify.ssrf import check_url
from pulse.notify.templates import DEFAULT_BODY, DEFAULT_TITLE, check_template, render

SEVERITY_COLOURS = {1: "#439FE0", 2: "#2EB67D", 3: "#ECB22E", 4: "#E8712B", 5: "#E01E5A"}
"""info blue, low green, medium yellow, high orange, critical red; a closed alert is grey."""
CLOSED_COLOUR = "#9E9E9E"


def colour(msg: AlertEventMessage) -> str:
    return CLOSED_COLOUR if msg.event_kind == "CLOSED" else SEVERITY_COLOURS.get(msg.severity, "#9E9E9E")


def check_secret_url(secrets: dict[str, str], allow: tuple[str, ...], key: str = "webhook_url") -> str:
    url = secrets.get(key)
    if not isinstance(url, str) or not url:
        raise ValidationError("the incoming-webhook URL is required (it is a secret: anyone with it can post)",
                              field=f"secrets.{key}")
    check_url(url, allow, field=f"secrets.{key}")
    return url


def check_templates(config: dict[str, Any]) -> dict[str, str]:
    """The optional `title_template` and `body_template` of a channel, checked."""
    out: dict[str, str] = {}
    for name in ("title_template", "body_template"):
        if config.get(name) is not None:
            out[name] = check_template(config[name], field=f"config.{name}")
    return out


def title_and_body(msg: AlertEventMessage, config: dict[str, Any]) -> tuple[str, str]:
    return (render(config.get("title_template") or DEFAULT_TITLE, msg),
            render(config.get("body_template") or DEFAULT_BODY, msg))


async def post_json(http: httpx.AsyncClient, url: str, payload: Any, allow: tuple[str, ...], *, field: str,
                    delivery_id: str) -> httpx.Response:
    """Checked again (DNS may have changed since the channel was saved) and sent to the address checked."""
    return await send_pinned(http, "POST", url, allow, field=field, content=msgspec.json.encode(payload), headers={
        "Content-Type": "application/json", "User-Agent": f"Pulse/{pulse.__version__}",
        "X-Pulse-Delivery": delivery_id})


async def post_to_webhook_url(http: httpx.AsyncClient, secrets: dict[str, str], payload: Any,
                              allow: tuple[str, ...], *, delivery_id: str) -> httpx.Response:
    """POST to the channel's secret incoming-webhook URL (Slack, Teams)."""
    return await post_json(http, secrets["webhook_url"], payload, allow, field="secrets.webhook_url",
                           delivery_id=delivery_id)


def severity_label(msg: AlertEventMessage) -> str:
    return f"{SEVERITY_NAMES.get(msg.severity, msg.severity)} ({msg.severity})"


def status_label(msg: AlertEventMessage) -> str:
    return "RESOLVED" if msg.event_kind == "CLOSED" else msg.status


def alert_facts(msg: AlertEventMessage) -> list[tuple[str, str]]:
    """Device, site, rule and `metric = value`, those the alert has."""
    facts = (("Device", msg.device_id), ("Site", msg.site_id), ("Rule", msg.rule_id),
             ("Value", f"{msg.metric} = {msg.value}" if msg.metric else None))
    return [(label, str(value)) for label, value in facts if value]
