"""Alert rule definitions and their pure evaluation against a device's latest metric values."""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec

from pulse.errors import ValidationError
from pulse.notify.schemas import SEVERITY_NAMES

Operator = Literal["GT", "GTE", "LT", "LTE", "EQ", "NEQ"]
OPERATORS: tuple[str, ...] = ("GT", "GTE", "LT", "LTE", "EQ", "NEQ")
__all__ = ["OPERATORS", "SEVERITY_NAMES", "Operator", "Rule", "ThresholdDefinition"]


class ThresholdDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`metric op value`; with `clear_value`, an open alert closes only once the value is back past it."""

    metric: str
    op: Operator
    value: float | bool | str
    clear_value: float | None = None


class Rule(msgspec.Struct, kw_only=True):
    """An enabled rule as the evaluator holds it in memory."""

    rule_id: str
    tenant_id: str
    name: str
    rule_type: str
    severity: int
    definition: ThresholdDefinition
    for_seconds: int = 0
    site_ids: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    escalation_policy_id: str | None = None

    @property
    def fingerprint_prefix(self) -> str:
        return f"RULE:{self.rule_id}:"

    def fingerprint(self, device_id: str) -> str:
        return f"RULE:{self.rule_id}:{device_id}"

    def applies_to(self, device_id: str, site_id: str | None, tags: frozenset[str], groups: frozenset[str]) -> bool:
        """Scopes narrow a rule; an empty scope list means 'any'. All given scopes must match."""
        if self.device_ids and device_id not in self.device_ids:
            return False
        if self.site_ids and site_id not in self.site_ids:
            return False
        if self.tags and not tags.intersection(self.tags):
            return False
        return not (self.group_ids and not groups.intersection(self.group_ids))


def parse_threshold(definition: Any) -> ThresholdDefinition:
    """Decode a stored or submitted definition; errors name the field."""
    try:
        d = msgspec.convert(definition, ThresholdDefinition)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid threshold definition: {exc}", field="definition") from None
    if not d.metric or len(d.metric) > 128:
        raise ValidationError("metric must be 1-128 characters", field="definition.metric")
    if isinstance(d.value, float) and not math.isfinite(d.value):
        raise ValidationError("value must be finite", field="definition.value")
    if d.op not in ("EQ", "NEQ") and not isinstance(d.value, int | float):
        raise ValidationError(f"{d.op} needs a numeric value", field="definition.value")
    return d


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def compare(op: str, observed: Any, threshold: Any) -> bool:
    """Apply `op`. A missing or non-comparable value never breaches."""
    if observed is None:
        return False
    if op in ("EQ", "NEQ"):
        if isinstance(threshold, bool) or isinstance(observed, bool) or isinstance(threshold, str):
            equal = observed == threshold
        else:
            a, b = _number(observed), _number(threshold)
            if a is None or b is None:
                return False
            equal = a == b
        return equal if op == "EQ" else not equal
    a, b = _number(observed), _number(threshold)
    if a is None or b is None:
        return False
    if op == "GT":
        return a > b
    if op == "GTE":
        return a >= b
    if op == "LT":
        return a < b
    if op == "LTE":
        return a <= b
    raise ValueError(f"unknown operator {op}")


def is_cleared(d: ThresholdDefinition, observed: Any) -> bool:
    """Whether an open alert's condition is over: not breaching, and past the clear threshold if one is set."""
    if observed is None:
        return False  # no fresh value of the metric: nothing to decide on
    if compare(d.op, observed, d.value):
        return False
    if d.clear_value is None:
        return True
    v = _number(observed)
    if v is None:
        return True
    if d.op in ("GT", "GTE"):
        return v <= d.clear_value
    if d.op in ("LT", "LTE"):
        return v >= d.clear_value
    return True


def describe(d: ThresholdDefinition) -> str:
    symbol = {"GT": ">", "GTE": ">=", "LT": "<", "LTE": "<=", "EQ": "==", "NEQ": "!="}[d.op]
    return f"{d.metric} {symbol} {d.value}"
