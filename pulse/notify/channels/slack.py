"""Slack incoming webhook: a message with a severity-coloured attachment, the alert's facts and a link back."""

from __future__ import annotations

from typing import Any

import httpx

from pulse.errors import ValidationError
from pulse.notify.channels.http_common import (
    check_secret_url,
    check_templates,
    colour,
    http_result,
    post_json,
    title_and_body,
)
from pulse.notify.schemas import SEVERITY_NAMES, AlertEventMessage, SendResult


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
    status = "RESOLVED" if resolved else msg.status
    fields = [{"title": "Severity", "value": f"{SEVERITY_NAMES.get(msg.severity, msg.severity)} ({msg.severity})",
               "short": True},
              {"title": "Status", "value": status, "short": True}]
    for label, value in (("Device", msg.device_id), ("Site", msg.site_id), ("Rule", msg.rule_id),
                         ("Value", f"{msg.metric} = {msg.value}" if msg.metric else None)):
        if value:
            fields.append({"title": label, "value": escape(str(value)), "short": True})
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
    response = await post_json(http, secrets["webhook_url"], render_message(msg, config), allow,
                               field="secrets.webhook_url", delivery_id=delivery_id)
    return http_result(response)
