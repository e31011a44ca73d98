"""Microsoft Teams incoming webhook: a MessageCard with a severity colour, the alert's facts and a link back."""

from __future__ import annotations

import re
from typing import Any

import httpx

from pulse.notify.channels.http_common import (
    check_secret_url,
    check_templates,
    colour,
    http_result,
    post_json,
    title_and_body,
)
from pulse.notify.schemas import SEVERITY_NAMES, AlertEventMessage, SendResult

_EMBEDDED_ERROR = re.compile(r"HTTP error (\d{3})")


def validate_config(config: dict[str, Any], secrets: dict[str, str], allow: tuple[str, ...]) -> dict[str, Any]:
    check_secret_url(secrets, allow)
    return check_templates(config)


def render_card(msg: AlertEventMessage, config: dict[str, Any]) -> dict[str, Any]:
    """The MessageCard (docs/channels-http.md)."""
    title, body = title_and_body(msg, config)
    facts = [{"name": "Severity", "value": f"{SEVERITY_NAMES.get(msg.severity, msg.severity)} ({msg.severity})"},
             {"name": "Status", "value": "RESOLVED" if msg.event_kind == "CLOSED" else msg.status},
             {"name": "Event", "value": msg.event_kind}]
    for label, value in (("Device", msg.device_id), ("Site", msg.site_id), ("Rule", msg.rule_id),
                         ("Value", f"{msg.metric} = {msg.value}" if msg.metric else None),
                         ("Opened", msg.opened_at.isoformat())):
        if value:
            facts.append({"name": label, "value": str(value)})
    card: dict[str, Any] = {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                            "themeColor": colour(msg).lstrip("#"), "summary": title, "title": title,
                            "sections": [{"text": body.replace("\n", "  \n"), "facts": facts}]}
    link = msg.links.get("alert")
    if link:
        card["potentialAction"] = [{"@type": "OpenUri", "name": "Open in Pulse",
                                    "targets": [{"os": "default", "uri": link}]}]
    return card


async def send(msg: AlertEventMessage, config: dict[str, Any], secrets: dict[str, str], *, delivery_id: str,
               http: httpx.AsyncClient, allow: tuple[str, ...]) -> SendResult:
    response = await post_json(http, secrets["webhook_url"], render_card(msg, config), allow,
                               field="secrets.webhook_url", delivery_id=delivery_id)
    return result_from_teams(response)


def result_from_teams(response: httpx.Response) -> SendResult:
    """Like any webhook answer, except that Teams reports its own upstream failures inside a 2xx body.

    A 2xx whose body names `HTTP error 429` (Teams throttled the post) or a 5xx is retried; another
    `HTTP error 4xx` in the body (e.g. 413, the card is too large) is a failure that retrying cannot fix.
    """
    code = response.status_code
    if 200 <= code < 300:
        found = _EMBEDDED_ERROR.search(response.text)
        if found:
            inner = int(found.group(1))
            return SendResult(delivered=False, status_code=code, retryable=inner == 429 or inner >= 500,
                              error=f"Teams answered {code} with: {response.text[:200]}")
    return http_result(response)
