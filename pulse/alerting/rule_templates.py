"""Built-in alert rule templates: common rules with a few parameters, turned into real rules on request.

Templates are static (part of Pulse, not stored). Instantiating one fills its parameters into a rule definition
and creates the rule through `rule_admin.create_rule`, so the result is validated like any other rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from pulse.alerting.rule_admin import FOR_SECONDS_MAX, create_rule
from pulse.alerting.rules import WINDOW_MAX_S, WINDOW_MIN_S
from pulse.errors import NotFound, ValidationError

ParameterType = Literal["number", "integer", "string"]
ParameterValue = float | int | str


class TemplateParameter(msgspec.Struct, kw_only=True):
    """One value a template asks for; `default` null means it must be given."""

    name: str
    type: ParameterType
    description: str
    default: ParameterValue | None = None
    minimum: float | None = None
    maximum: float | None = None


class RuleTemplate(msgspec.Struct, kw_only=True):
    """A template as the API lists it; `definition` shows the rule the defaults would make."""

    template_id: str
    name: str
    description: str
    rule_type: str
    severity: int
    parameters: list[TemplateParameter]
    definition: dict[str, Any]
    for_seconds: int


@dataclass(frozen=True)
class _Template:
    info: RuleTemplate
    build: Callable[[dict[str, Any]], tuple[dict[str, Any], int]]  # parameters -> (definition, for_seconds)


def _metric(default: str | None, what: str) -> TemplateParameter:
    return TemplateParameter(name="metric", type="string", default=default,
                             description=f"the telemetry metric {what}")


def _for(default: int) -> TemplateParameter:
    return TemplateParameter(name="for_seconds", type="integer", default=default, minimum=0, maximum=FOR_SECONDS_MAX,
                             description="how long the condition must hold before an alert opens (seconds)")


def _template(template_id: str, name: str, description: str, rule_type: str, severity: int,
              parameters: list[TemplateParameter],
              build: Callable[[dict[str, Any]], tuple[dict[str, Any], int]]) -> _Template:
    defaults = {p.name: p.default for p in parameters}
    definition, for_seconds = build(defaults)
    return _Template(RuleTemplate(template_id=template_id, name=name, description=description, rule_type=rule_type,
                                  severity=severity, parameters=parameters, definition=definition,
                                  for_seconds=for_seconds), build)


_TEMPLATES: list[_Template] = [
    _template(
        "high-temperature", "High temperature", "Temperature above a limit for a while.", "THRESHOLD", 4,
        [_metric("temp_c", "holding the temperature"),
         TemplateParameter(name="threshold", type="number", default=30, description="alert above this value"),
         _for(300)],
        lambda p: ({"metric": p["metric"], "op": "GT", "value": p["threshold"]}, p["for_seconds"])),
    _template(
        "battery-low", "Battery low", "Battery charge below a limit.", "THRESHOLD", 3,
        [_metric("battery_pct", "holding the battery charge in percent"),
         TemplateParameter(name="threshold", type="number", default=15, minimum=0, maximum=100,
                           description="alert below this value"),
         _for(0)],
        lambda p: ({"metric": p["metric"], "op": "LT", "value": p["threshold"]}, p["for_seconds"])),
    _template(
        "device-offline", "Device offline", "A metric the device reports in every message stops arriving "
        "(the device is offline or has stopped measuring).", "GAP", 4,
        [_metric(None, "every message of the device carries"),
         TemplateParameter(name="gap_seconds", type="integer", default=900, minimum=WINDOW_MIN_S,
                           maximum=WINDOW_MAX_S, description="alert after this long without the metric (seconds)")],
        lambda p: ({"metric": p["metric"], "gap_seconds": p["gap_seconds"]}, 0)),
    _template(
        "high-humidity", "High humidity", "Relative humidity above a limit for a while.", "THRESHOLD", 3,
        [_metric("humidity_pct", "holding the relative humidity in percent"),
         TemplateParameter(name="threshold", type="number", default=80, minimum=0, maximum=100,
                           description="alert above this value"),
         _for(600)],
        lambda p: ({"metric": p["metric"], "op": "GT", "value": p["threshold"]}, p["for_seconds"])),
    _template(
        "temperature-rising-fast", "Temperature rising fast", "Temperature climbing faster than a rate.", "RATE", 3,
        [_metric("temp_c", "holding the temperature"),
         TemplateParameter(name="per_minute", type="number", default=2, minimum=0,
                           description="alert when the value rises faster than this per minute"),
         TemplateParameter(name="window_seconds", type="integer", default=600, minimum=WINDOW_MIN_S,
                           maximum=WINDOW_MAX_S, description="the span the rate is measured over (seconds)")],
        lambda p: ({"metric": p["metric"], "op": "GT", "value": p["per_minute"],
                    "window_seconds": p["window_seconds"]}, 0)),
]
_BY_ID = {t.info.template_id: t for t in _TEMPLATES}


def list_templates() -> list[RuleTemplate]:
    """Every built-in template, in a stable order."""
    return [t.info for t in _TEMPLATES]


def require_template(template_id: str) -> RuleTemplate:
    """The template, or NotFound."""
    template = _BY_ID.get(template_id)
    if template is None:
        raise NotFound(f"no rule template {template_id!r}", details={"field": "template_id"})
    return template.info


def _value(spec: TemplateParameter, value: Any) -> ParameterValue:
    field = f"parameters.{spec.name}"
    if spec.type == "string":
        if not isinstance(value, str) or not 1 <= len(value) <= 128:
            raise ValidationError("must be a string of 1-128 characters", field=field)
        return value
    if spec.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be a whole number", field=field)
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError("must be a finite number", field=field)
    if spec.minimum is not None and value < spec.minimum:
        raise ValidationError(f"must be at least {spec.minimum:g}", field=field)
    if spec.maximum is not None and value > spec.maximum:
        raise ValidationError(f"must be at most {spec.maximum:g}", field=field)
    return value  # type: ignore[no-any-return]


def fill_parameters(template_id: str, parameters: dict[str, Any]) -> tuple[RuleTemplate, dict[str, Any], int]:
    """The template, the rule definition and for_seconds made from `parameters` (defaults fill the rest).

    Errors name the parameter as `parameters.<name>`.
    """
    template = _BY_ID.get(template_id)
    if template is None:
        raise NotFound(f"no rule template {template_id!r}", details={"field": "template_id"})
    specs = {p.name: p for p in template.info.parameters}
    for name in parameters:
        if name not in specs:
            raise ValidationError(f"is not a parameter of this template; use {', '.join(specs)}",
                                  field=f"parameters.{name}")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in parameters:
            values[name] = _value(spec, parameters[name])
        elif spec.default is None:
            raise ValidationError("is required by this template", field=f"parameters.{name}")
        else:
            values[name] = spec.default
    definition, for_seconds = template.build(values)
    return template.info, definition, for_seconds


async def instantiate_template(conn: AsyncConnection, tenant_id: str, template_id: str, *,
                               parameters: dict[str, Any], now: datetime, name: str | None = None,
                               severity: int | None = None, description: str | None = None,
                               is_enabled: bool = True, site_ids: list[str] | None = None,
                               group_ids: list[str] | None = None, tags: list[str] | None = None,
                               device_ids: list[str] | None = None,
                               escalation_policy_id: str | None = None) -> str:
    """Create a rule from a template; name, severity and description default to the template's. Returns its id."""
    template, definition, for_seconds = fill_parameters(template_id, parameters)
    return await create_rule(
        conn, tenant_id, name=template.name if name is None else name, rule_type=template.rule_type,
        severity=template.severity if severity is None else severity, definition=definition, now=now,
        description=template.description if description is None else description, for_seconds=for_seconds,
        is_enabled=is_enabled, site_ids=site_ids, group_ids=group_ids, tags=tags, device_ids=device_ids,
        escalation_policy_id=escalation_policy_id)
