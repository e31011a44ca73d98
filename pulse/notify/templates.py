"""Title and body templates: `{variable}` placeholders over a documented set of alert fields.

Templates are checked when a channel is saved (an unknown variable or a malformed brace is a 400 naming the field)
and rendered at send time. Only plain substitution is allowed: no attribute access, indexing or format specs, so a
template cannot reach anything but the variables below.
"""

from __future__ import annotations

import string
from typing import Any

from pulse.errors import ValidationError
from pulse.notify.schemas import SEVERITY_NAMES, AlertEventMessage

VARIABLES: dict[str, str] = {
    "event": "event kind: OPENED, UPDATED, ACKNOWLEDGED, ESCALATED, CLOSED or FLAPPING",
    "alert_id": "the alert's id",
    "alert_type": "THRESHOLD, NO_HEARTBEAT, …",
    "severity": "1-5",
    "severity_name": "info, low, medium, high or critical",
    "status": "the alert's status after this event",
    "title": "the alert's title",
    "summary": "the alert's summary",
    "device_id": "the device's id (empty when none)",
    "site_id": "the device's site (empty when none)",
    "rule_id": "the rule that opened the alert (empty when none)",
    "metric": "the metric the rule watches (empty when none)",
    "value": "the value that triggered the alert (empty when none)",
    "tenant_id": "the tenant's id",
    "opened_at": "when the alert opened (ISO-8601, UTC)",
    "occurred_at": "when this event happened (ISO-8601, UTC)",
    "link": "the alert's page in Pulse (empty when no public URL is configured)",
}

DEFAULT_TITLE = "[{severity_name}] {event}: {title}"
DEFAULT_BODY = ("{title}\nDevice: {device_id}\nSite: {site_id}\nRule: {rule_id}\nMetric: {metric} = {value}\n"
                "Severity: {severity_name} ({severity})\nStatus: {status}\nOpened: {opened_at}\n{link}")

_FORMATTER = string.Formatter()
MAX_TEMPLATE_CHARS = 4000


def check_template(template: Any, *, field: str) -> str:
    """Return the template if it only uses known variables; otherwise a ValidationError naming `field`."""
    if not isinstance(template, str):
        raise ValidationError("must be a string", field=field)
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValidationError(f"must be at most {MAX_TEMPLATE_CHARS} characters", field=field)
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValidationError(f"malformed template: {exc}", field=field) from exc
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in VARIABLES:
            raise ValidationError(f"unknown variable {{{name}}}; known: {', '.join(sorted(VARIABLES))}", field=field)
        if spec or conversion:
            raise ValidationError(f"{{{name}}} takes no format spec or conversion", field=field)
    return template


def variables(msg: AlertEventMessage) -> dict[str, str]:
    """The documented variables of one alert change, as strings."""
    def s(value: Any) -> str:
        return "" if value is None else str(value)

    return {
        "event": msg.event_kind, "alert_id": msg.alert_id, "alert_type": msg.alert_type,
        "severity": str(msg.severity), "severity_name": SEVERITY_NAMES.get(msg.severity, str(msg.severity)),
        "status": msg.status, "title": msg.title, "summary": msg.summary, "device_id": s(msg.device_id),
        "site_id": s(msg.site_id), "rule_id": s(msg.rule_id), "metric": s(msg.metric), "value": s(msg.value),
        "tenant_id": msg.tenant_id, "opened_at": msg.opened_at.isoformat(), "occurred_at": msg.occurred_at.isoformat(),
        "link": msg.links.get("alert", ""),
    }


def render(template: str, msg: AlertEventMessage) -> str:
    """Render a checked template. A template stored before a variable was removed renders it empty, never fails."""
    values = variables(msg)
    out: list[str] = []
    for literal, name, _spec, _conversion in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            out.append(values.get(name, ""))
    return "".join(out)
