"""Users' contact methods as channels: what each kind needs, checked, and the channel a page to it is sent through.

A contact method is a real channel owned by one person. Its credentials (signing secret, incoming-webhook URL,
PagerDuty routing key) live in its secrets, encrypted at rest; `address` is what the API shows and never holds a
credential. Email goes through the deployment's SMTP relay (PULSE_SMTP_URL), which the operator configures, so
it is not subject to the SSRF rules for tenant-supplied addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from pulse.errors import ValidationError
from pulse.notify.channels import email, pagerduty, slack, teams, webhook
from pulse.notify.ssrf import ADDRESS_CLASSES
from pulse.settings import Settings

CONTACT_KINDS = ("EMAIL", "WEBHOOK", "SLACK", "PAGERDUTY", "TEAMS")
SECRET_NAMES = {"EMAIL": (), "WEBHOOK": ("secret",), "SLACK": ("webhook_url",), "TEAMS": ("webhook_url",),
                "PAGERDUTY": ("routing_key",)}
_SMTP_SECURITY = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "tls"}


@dataclass(frozen=True)
class ContactChannel:
    """How to send to one contact method: a channel type of the registry, its config and secrets, the SSRF allowance."""

    channel_type: str
    config: dict[str, Any]
    secrets: dict[str, str]
    allow: tuple[str, ...]


def _smtp(settings: Settings, to: str) -> tuple[dict[str, Any], dict[str, str]]:
    if not settings.smtp_url:
        raise ValidationError("email contact methods need the deployment's SMTP relay; the operator sets "
                              "PULSE_SMTP_URL", field="kind")
    parts = urlsplit(settings.smtp_url)
    security = _SMTP_SECURITY[parts.scheme]
    config: dict[str, Any] = {"host": parts.hostname, "port": parts.port or email.DEFAULT_PORTS[security],
                              "security": security, "from": settings.smtp_from, "to": [to]}
    secrets: dict[str, str] = {}
    if parts.username:
        config["username"] = unquote(parts.username)
        secrets["password"] = unquote(parts.password or "")
    return config, secrets


def _channel(kind: str, address: str, secrets: dict[str, str], settings: Settings) -> ContactChannel:
    allow = settings.allow_private_urls
    if kind == "EMAIL":
        config, smtp_secrets = _smtp(settings, address)
        return ContactChannel("EMAIL", config, smtp_secrets, ADDRESS_CLASSES)
    if kind == "WEBHOOK":
        return ContactChannel("WEBHOOK", {"url": address, "method": "POST", "headers": {}}, secrets, allow)
    if kind == "PAGERDUTY":
        return ContactChannel("PAGERDUTY", {"url": settings.pagerduty_events_url}, secrets, ADDRESS_CLASSES)
    if kind in ("SLACK", "TEAMS"):
        return ContactChannel(kind, {}, secrets, allow)
    raise ValidationError(f"must be one of {', '.join(CONTACT_KINDS)}", field="kind")


_VALIDATORS = {"EMAIL": email.validate_config, "WEBHOOK": webhook.validate_config, "SLACK": slack.validate_config,
               "TEAMS": teams.validate_config, "PAGERDUTY": pagerduty.validate_config}


def _display_address(kind: str, address: str | None, secrets: dict[str, str]) -> str:
    if kind in ("EMAIL", "WEBHOOK"):
        if not isinstance(address, str) or not address:
            what = "an email address" if kind == "EMAIL" else "the webhook's https:// URL"
            raise ValidationError(f"{what} is required", field="address")
        return address
    if kind == "PAGERDUTY":
        return "PagerDuty routing key"
    host = urlsplit(secrets.get("webhook_url") or "").hostname or "incoming webhook"
    return f"{'Slack' if kind == 'SLACK' else 'Teams'} webhook on {host}"


def check_contact(kind: str, address: str | None, secrets: dict[str, str], settings: Settings) -> str:
    """Validate a contact method (SSRF checks on URLs included); returns the address to store and show.

    Errors name the field: `kind`, `address`, `secrets.<name>`, or `address` for email problems.
    """
    if kind not in CONTACT_KINDS:
        raise ValidationError(f"must be one of {', '.join(CONTACT_KINDS)}", field="kind")
    unknown = [name for name in secrets if name not in SECRET_NAMES[kind]]
    if unknown:
        raise ValidationError(f"is not a secret of a {kind} contact method; it takes "
                              f"{', '.join(SECRET_NAMES[kind]) or 'none'}", field=f"secrets.{unknown[0]}")
    shown = _display_address(kind, address, secrets)
    if kind == "PAGERDUTY":  # the endpoint is the deployment's (PULSE_PAGERDUTY_EVENTS_URL), not the user's to check
        key = secrets.get("routing_key")
        if not isinstance(key, str) or not 1 <= len(key) <= 64 or any(ch.isspace() for ch in key):
            raise ValidationError("the user's PagerDuty routing key (1-64 characters, no spaces) is required",
                                  field="secrets.routing_key")
        return shown
    target = _channel(kind, shown, secrets, settings)
    try:
        _VALIDATORS[kind](target.config, {**target.secrets}, target.allow)
    except ValidationError as exc:
        if kind == "EMAIL" and exc.field == "config.to[0]":
            raise ValidationError("must be an email address like oncall@example.com", field="address") from None
        if exc.field in ("config.url",):
            raise ValidationError(exc.message, field="address") from None
        raise
    return shown


def contact_channel(kind: str, address: str, secrets: dict[str, str], settings: Settings) -> ContactChannel:
    """The channel a page to this contact method is sent through (checked again at send time by the channel)."""
    target = _channel(kind, address, secrets, settings)
    clean = _VALIDATORS[kind](target.config, {**target.secrets}, target.allow)
    return ContactChannel(target.channel_type, clean, target.secrets, target.allow)
