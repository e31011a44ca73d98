"""Slack incoming webhook: a message with a severity-coloured attachment, the alert's facts and a link back."""

from __future__ import annotations

from typing import Any

import httpx

from pulse.errors import ValidationError
from pulse.notify.channels.http_common import (
    alert_facts,
    check_secret_url,
    check_templates,
    colour,
    post_to_webhook_url,
    severity_label,
    status_label,
    title_and_body,
)
from pulse.notify.channels.webhook import result_from_response
from pulse.notify.schemas import AlertEventMessage, SendResult


def validate_config(config: dict[str, Any], secrets: dict[str, str], allow: tuple[str, ...]) -> dict[str, Any]:
    check_secret_url(secrets, allow)
    clean: dict[str, Any] = check_templates(config)
    for name in ("channel", "username"):
        value = config.get(name)
        if value is not None:
            if not isinstance(value, str) or not 1 <= len(value) <= 80:
                raise ValidationError("must be 1-80 characters", field=f"config.{name}")
            clean[name] = value
    return clean


def escape(text: str) -> str:
    """Slack's control characters: a device name or title must not become a link or an @channel ping."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_message(msg: AlertEventMessage, config: dict[str, Any]) -> dict[str, Any]:
    """The Slack message body (docs/channels-http.md); a CLOSED event reads RESOLVED."""
    title, body = (escape(part) for part in title_and_body(msg, config))
    link = msg.links.get("alert")
    resolved = msg.event_kind == "CLOSED"
    fields = [{"title": "Severity", "value": severity_label(msg), "short": True},
              {"title": "Status", "value": status_label(msg), "short": True},
              *({"title": label, "value": escape(value), "short": True} for label, value in alert_facts(msg))]
    if link:
        fields.append({"title": "Pulse", "value": f"<{link}|Open alert>", "short": False})
    attachment: dict[str, Any] = {"fallback": title, "color": colour(msg), "title": title, "text": body,
                                  "fields": fields, "footer": f"Pulse · {'RESOLVED' if resolved else msg.event_kind}",
                                  "ts": int(msg.occurred_at.timestamp())}
    if link:
        attachment["title_link"] = link
    message: dict[str, Any] = {"text": f"{title} <{link}|Open in Pulse>" if link else title,
                               "attachments": [attachment]}
    for name in ("channel", "username"):
        if config.get(name):
            message[name] = config[name]
    return message


async def send(msg: AlertEventMessage, config: dict[str, Any], secrets: dict[str, str], *, delivery_id: str,
               http: httpx.AsyncClient, allow: tuple[str, ...]) -> SendResult:
    return result_from_response(await post_to_webhook_url(http, secrets, render_message(msg, config), allow,
                                                          delivery_id=delivery_id))
