"""Microsoft Teams incoming webhook: a MessageCard with a severity colour, the alert's facts and a link back."""

from __future__ import annotations

import re
from typing import Any

import httpx

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

_EMBEDDED_ERROR = re.compile(r"HTTP error (\d{3})")


def validate_config(config: dict[str, Any], secrets: dict[str, str], allow: tuple[str, ...]) -> dict[str, Any]:
    check_secret_url(secrets, allow)
    return check_templates(config)


def render_card(msg: AlertEventMessage, config: dict[str, Any]) -> dict[str, Any]:
    """The MessageCard (docs/channels-http.md)."""
    title, body = title_and_body(msg, config)
    facts = [{"name": "Severity", "value": severity_label(msg)}, {"name": "Status", "value": status_label(msg)},
             {"name": "Event", "value": msg.event_kind},
             *({"name": label, "value": value} for label, value in alert_facts(msg)),
             {"name": "Opened", "value": msg.opened_at.isoformat()}]
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
    return result_from_teams(await post_to_webhook_url(http, secrets, render_card(msg, config), allow,
                                                       delivery_id=delivery_id))


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
    return result_from_response(response)
