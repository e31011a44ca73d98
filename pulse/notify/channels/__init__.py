"""The channel registry: one sender per channel type, one interface for all of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from pulse.notify.channels import email, mqtt, pagerduty, slack, snmp, teams, webhook
from pulse.notify.schemas import AlertEventMessage, SendResult

Sender = Callable[..., Awaitable[SendResult]]
Validator = Callable[[dict[str, Any], dict[str, str], tuple[str, ...]], dict[str, Any]]


class ChannelType:
    """How one channel type validates its settings and sends a message."""

    def __init__(self, name: str, validate: Validator, send: Sender) -> None:
        self.name = name
        self.validate = validate
        self.send = send


REGISTRY: dict[str, ChannelType] = {
    "WEBHOOK": ChannelType("WEBHOOK", webhook.validate_config, webhook.send),
    "SLACK": ChannelType("SLACK", slack.validate_config, slack.send),
    "PAGERDUTY": ChannelType("PAGERDUTY", pagerduty.validate_config, pagerduty.send),
    "TEAMS": ChannelType("TEAMS", teams.validate_config, teams.send),
    "EMAIL": ChannelType("EMAIL", email.validate_config, email.send),
    "MQTT": ChannelType("MQTT", mqtt.validate_config, mqtt.send),
    "SNMP": ChannelType("SNMP", snmp.validate_config, snmp.send),
}


def get_channel_type(name: str) -> ChannelType | None:
    return REGISTRY.get(name)


async def send(channel_type: str, msg: AlertEventMessage, config: dict[str, Any], secrets: dict[str, str], *,
               delivery_id: str, http: httpx.AsyncClient, allow: tuple[str, ...]) -> SendResult:
    kind = REGISTRY.get(channel_type)
    if kind is None:
        return SendResult(delivered=False, retryable=False, error=f"channel type {channel_type} is not supported")
    return await kind.send(msg, config, secrets, delivery_id=delivery_id, http=http, allow=allow)
