"""Alert rule definitions (THRESHOLD, MULTI, RATE, ANOMALY, GAP), their validation, and their pure verdicts.

A verdict says what a rule makes of one device now: BREACH (the condition holds), CLEAR (an open alert's
condition is over, past any hysteresis) or HOLD (in between, or not enough data to decide: nothing changes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import msgspec

from pulse.errors import ValidationError
from pulse.notify.schemas import SEVERITY_NAMES

Operator = Literal["GT", "GTE", "LT", "LTE", "EQ", "NEQ"]
Ordering = Literal["GT", "GTE", "LT", "LTE"]
OPERATORS: tuple[str, ...] = ("GT", "GTE", "LT", "LTE", "EQ", "NEQ")
RULE_TYPES: tuple[str, ...] = ("THRESHOLD", "MULTI", "RATE", "ANOMALY", "GAP")
ALERT_TYPES: dict[str, str] = {"THRESHOLD": "THRESHOLD", "MULTI": "THRESHOLD", "RATE": "RATE", "ANOMALY": "ANOMALY",
                               "GAP": "NO_TELEMETRY"}
"""The `alert_type` of the alerts each rule type opens."""

WINDOW_MIN_S = 60
WINDOW_MAX_S = 24 * 3600
MAX_CONDITIONS = 10
MAX_MIN_SAMPLES = 100_000
ZERO_VARIANCE = 1e-9
"""A baseline whose standard deviation is at most this (relative to its mean, at least absolute) has none."""

VerdictState = Literal["BREACH", "CLEAR", "HOLD"]
T = TypeVar("T")

__all__ = [
    "ALERT_TYPES", "OPERATORS", "RULE_TYPES", "SEVERITY_NAMES", "AnomalyDefinition", "AnomalySample", "Definition",
    "GapDefinition", "MultiDefinition", "Operator", "RateDefinition", "RateSample", "Rule", "ThresholdDefinition",
    "Verdict",
]


class ThresholdDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`metric op value`; with `clear_value`, an open alert closes only once the value is back past it."""

    metric: str
    op: Operator
    value: float | bool | str
    clear_value: float | None = None


class MultiDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Threshold conditions combined: `all` (AND) or `any` (OR). A metric the device never reported is false."""

    conditions: list[ThresholdDefinition]
    match: Literal["all", "any"] = "all"


class RateDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Change per minute of `metric` over the telemetry of the last `window_seconds`, compared with `op value`."""

    metric: str
    op: Ordering
    value: float
    window_seconds: int
    clear_value: float | None = None


class AnomalyDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The latest value's z-score against the window's earlier samples; |z| >= z_threshold breaches."""

    metric: str
    window_seconds: int
    z_threshold: float = 3.0
    min_samples: int = 10
    clear_z: float | None = None


class GapDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """No telemetry carrying `metric` for `gap_seconds`."""

    metric: str
    gap_seconds: int


Definition = ThresholdDefinition | MultiDefinition | RateDefinition | AnomalyDefinition | GapDefinition


class Rule(msgspec.Struct, kw_only=True):
    """An enabled rule as the evaluator holds it in memory."""

    rule_id: str
    tenant_id: str
    name: str
    rule_type: str
    severity: int
    definition: Definition
    for_seconds: int = 0
    site_ids: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    escalation_policy_id: str | None = None

    @property
    def fingerprint_prefix(self) -> str:
        return f"RULE:{self.rule_id}:"

    @property
    def alert_type(self) -> str:
        return ALERT_TYPES[self.rule_type]

    def fingerprint(self, device_id: str) -> str:
        return f"RULE:{self.rule_id}:{device_id}"

    @property
    def unscoped(self) -> bool:
        """No scope: the rule applies to every device of the tenant."""
        return not (self.device_ids or self.site_ids or self.tags or self.group_ids)

    def applies_to(self, device_id: str, site_id: str | None, tags: frozenset[str], groups: frozenset[str]) -> bool:
        """Scopes narrow a rule; an empty scope list means 'any'. All given scopes must match."""
        if self.device_ids and device_id not in self.device_ids:
            return False
        if self.site_ids and site_id not in self.site_ids:
            return False
        if self.tags and not tags.intersection(self.tags):
            return False
        return not (self.group_ids and not groups.intersection(self.group_ids))


# --- validation -------------------------------------------------------------------------------------------------

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"(?:missing required field|unknown field) `(?P<name>[^`]+)`")


def _convert(definition: Any, kind: type[T], rule_type: str) -> T:
    """msgspec.convert whose error names the offending field as `definition.<path>`."""
    try:
        return msgspec.convert(definition, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = "definition"
        at = _AT.search(message)
        if at:
            field += at.group("path")
            message = message[:at.start()]
        named = _NAMED.search(message)
        if named:
            field += f".{named.group('name')}"
        raise ValidationError(f"invalid {rule_type} definition: {message}", field=field) from None


def _check_metric(metric: str, field: str) -> None:
    if not metric or len(metric) > 128:
        raise ValidationError("metric must be 1-128 characters", field=field)


def _check_finite(value: float | None, field: str) -> None:
    if value is not None and not math.isfinite(value):
        raise ValidationError("must be a finite number", field=field)


def _check_window(seconds: int, field: str) -> None:
    if not WINDOW_MIN_S <= seconds <= WINDOW_MAX_S:
        raise ValidationError(f"must be between {WINDOW_MIN_S} and {WINDOW_MAX_S} seconds", field=field)


def _check_threshold(d: ThresholdDefinition, prefix: str) -> None:
    _check_metric(d.metric, f"{prefix}.metric")
    if isinstance(d.value, float):
        _check_finite(d.value, f"{prefix}.value")
    if d.op not in ("EQ", "NEQ") and not isinstance(d.value, int | float):
        raise ValidationError(f"{d.op} needs a numeric value", field=f"{prefix}.value")
    _check_finite(d.clear_value, f"{prefix}.clear_value")


def _check_clear_side(op: str, value: float, clear_value: float | None, field: str) -> None:
    """A clear threshold sits on the safe side of the limit, or the alert could never close."""
    if clear_value is None:
        return
    if op in ("GT", "GTE") and clear_value > value:
        raise ValidationError(f"must not be above value ({value:g}) for {op}", field=field)
    if op in ("LT", "LTE") and clear_value < value:
        raise ValidationError(f"must not be below value ({value:g}) for {op}", field=field)


def parse_threshold(definition: Any) -> ThresholdDefinition:
    """Decode a stored or submitted THRESHOLD definition; errors name the field."""
    d = _convert(definition, ThresholdDefinition, "THRESHOLD")
    _check_threshold(d, "definition")
    return d


def parse_multi(definition: Any) -> MultiDefinition:
    d = _convert(definition, MultiDefinition, "MULTI")
    if not 1 <= len(d.conditions) <= MAX_CONDITIONS:
        raise ValidationError(f"give 1 to {MAX_CONDITIONS} conditions", field="definition.conditions")
    for i, condition in enumerate(d.conditions):
        _check_threshold(condition, f"definition.conditions[{i}]")
    return d


def parse_rate(definition: Any) -> RateDefinition:
    d = _convert(definition, RateDefinition, "RATE")
    _check_metric(d.metric, "definition.metric")
    _check_finite(d.value, "definition.value")
    _check_finite(d.clear_value, "definition.clear_value")
    _check_window(d.window_seconds, "definition.window_seconds")
    _check_clear_side(d.op, d.value, d.clear_value, "definition.clear_value")
    return d


def parse_anomaly(definition: Any) -> AnomalyDefinition:
    d = _convert(definition, AnomalyDefinition, "ANOMALY")
    _check_metric(d.metric, "definition.metric")
    _check_window(d.window_seconds, "definition.window_seconds")
    if not (math.isfinite(d.z_threshold) and d.z_threshold > 0):
        raise ValidationError("must be a number above 0", field="definition.z_threshold")
    if not 3 <= d.min_samples <= MAX_MIN_SAMPLES:
        raise ValidationError(f"must be between 3 and {MAX_MIN_SAMPLES}", field="definition.min_samples")
    if d.clear_z is not None and not (math.isfinite(d.clear_z) and 0 < d.clear_z <= d.z_threshold):
        raise ValidationError("must be above 0 and at most z_threshold", field="definition.clear_z")
    return d


def parse_gap(definition: Any) -> GapDefinition:
    d = _convert(definition, GapDefinition, "GAP")
    _check_metric(d.metric, "definition.metric")
    _check_window(d.gap_seconds, "definition.gap_seconds")
    return d


_PARSERS: dict[str, Any] = {"THRESHOLD": parse_threshold, "MULTI": parse_multi, "RATE": parse_rate,
                            "ANOMALY": parse_anomaly, "GAP": parse_gap}


def parse_definition(rule_type: str, definition: Any) -> Definition:
    """Decode the definition of a rule of `rule_type`; errors name the field (`rule_type`, `definition.…`)."""
    parser = _PARSERS.get(rule_type)
    if parser is None:
        raise ValidationError(f"rule_type must be one of {', '.join(RULE_TYPES)}", field="rule_type")
    result: Definition = parser(definition)
    return result


# --- comparisons ------------------------------------------------------------------------------------------------

def _number(v: Any) -> float | None:
    kind = type(v)  # exact types first: this runs for every judged reading (bool is an int, and not a number here)
    if kind is float:
        return v if math.isfinite(v) else None
    if kind is int:
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


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


def _past_clear(op: str, v: float | None, clear_value: float | None) -> bool:
    if clear_value is None or v is None:
        return True
    if op in ("GT", "GTE"):
        return v <= clear_value
    if op in ("LT", "LTE"):
        return v >= clear_value
    return True


def is_cleared(d: ThresholdDefinition, observed: Any) -> bool:
    """Whether an open alert's condition is over: not breaching, and past the clear threshold if one is set."""
    if observed is None:
        return False  # no fresh value of the metric: nothing to decide on
    if compare(d.op, observed, d.value):
        return False
    return _past_clear(d.op, _number(observed), d.clear_value)


_SYMBOLS = {"GT": ">", "GTE": ">=", "LT": "<", "LTE": "<=", "EQ": "==", "NEQ": "!="}


def describe(d: Definition) -> str:
    """The rule's condition in a line, for alert titles."""
    if isinstance(d, ThresholdDefinition):
        return f"{d.metric} {_SYMBOLS[d.op]} {d.value}"
    if isinstance(d, MultiDefinition):
        return f" {'and' if d.match == 'all' else 'or'} ".join(describe(c) for c in d.conditions)
    if isinstance(d, RateDefinition):
        return f"{d.metric} change {_SYMBOLS[d.op]} {d.value:g}/min over {d.window_seconds} s"
    if isinstance(d, AnomalyDefinition):
        return f"{d.metric} |z| >= {d.z_threshold:g} over {d.window_seconds} s"
    return f"no {d.metric} for {d.gap_seconds} s"


# --- verdicts ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Verdict:
    state: VerdictState
    value: Any = None
    text: str = ""
    metric: str | None = None  # one metric's reading: the observation is "{metric} is {value}", written when read

    @property
    def observation(self) -> str:
        """e.g. "temp_c is 31.5": the alert summary on BREACH, the close reason on CLEAR."""
        return self.text if self.metric is None else f"{self.metric} is {self.value}"


@dataclass(frozen=True)
class RateSample:
    """The first and the last telemetry sample of a metric in a device's window."""

    first_at: datetime
    first_value: float
    last_at: datetime
    last_value: float


@dataclass(frozen=True)
class AnomalySample:
    """The latest telemetry value of a metric and the window's earlier samples, summarised."""

    latest: float
    latest_at: datetime
    count: int
    mean: float | None
    stddev: float | None


def threshold_verdict(d: ThresholdDefinition, metrics: dict[str, Any]) -> Verdict:
    observed = metrics.get(d.metric)
    if compare(d.op, observed, d.value):
        return Verdict("BREACH", observed, metric=d.metric)
    cleared = observed is not None and _past_clear(d.op, _number(observed), d.clear_value)  # is_cleared, compared once
    return Verdict("CLEAR" if cleared else "HOLD", observed, metric=d.metric)


def multi_verdict(d: MultiDefinition, metrics: dict[str, Any]) -> Verdict:
    """AND/OR of the conditions, each false when its metric is missing.

    Hysteresis per condition: a condition is *cleared* once it no longer breaches and its value is past its own
    clear_value (a missing metric counts as cleared). `all` closes once any condition is cleared; `any` closes
    once every condition is cleared. In between the alert stays open.
    """
    breaching = [compare(c.op, metrics.get(c.metric), c.value) for c in d.conditions]
    cleared = [metrics.get(c.metric) is None or is_cleared(c, metrics.get(c.metric)) for c in d.conditions]
    value = {c.metric: metrics.get(c.metric) for c in d.conditions}
    observation = ", ".join(f"{m} is {'missing' if v is None else v}" for m, v in value.items())
    if d.match == "all":
        breach, clear = all(breaching), any(cleared)
    else:
        breach, clear = any(breaching), all(cleared)
    if breach:
        return Verdict("BREACH", value, observation)
    return Verdict("CLEAR" if clear else "HOLD", value, observation)


def rate_per_minute(sample: RateSample) -> float | None:
    """(last - first) / minutes between them; None with fewer than two distinct sample times."""
    span_s = (sample.last_at - sample.first_at).total_seconds()
    if span_s <= 0:
        return None
    return (sample.last_value - sample.first_value) / (span_s / 60)


def rate_verdict(d: RateDefinition, sample: RateSample | None) -> Verdict:
    rate = rate_per_minute(sample) if sample is not None else None
    if sample is None or rate is None:
        return Verdict("HOLD", None, f"fewer than 2 samples of {d.metric} in {d.window_seconds} s")
    span_s = (sample.last_at - sample.first_at).total_seconds()
    value = round(rate, 6)
    observation = (f"{d.metric} went from {sample.first_value:g} to {sample.last_value:g} in {span_s:g} s "
                   f"({value:+g}/min)")
    if compare(d.op, rate, d.value):
        return Verdict("BREACH", value, observation)
    return Verdict("CLEAR" if _past_clear(d.op, rate, d.clear_value) else "HOLD", value, observation)


def z_score(sample: AnomalySample) -> float | None:
    """(latest - mean) / sample standard deviation; None when the baseline has no variance (or no mean)."""
    if sample.mean is None or sample.stddev is None:
        return None
    if sample.stddev <= ZERO_VARIANCE * max(1.0, abs(sample.mean)):
        return None
    return (sample.latest - sample.mean) / sample.stddev


def anomaly_verdict(d: AnomalyDefinition, sample: AnomalySample | None) -> Verdict:
    """Fewer than min_samples baseline samples: no decision. Zero variance never breaches (it clears when the
    latest value equals the constant baseline, otherwise no decision)."""
    if sample is None or sample.count < d.min_samples:
        count = 0 if sample is None else sample.count
        return Verdict("HOLD", None, f"{count} samples of {d.metric} (min_samples {d.min_samples})")
    z = z_score(sample)
    if z is None:
        flat = sample.mean is not None and sample.latest == sample.mean
        return Verdict("CLEAR" if flat else "HOLD", sample.latest,
                       f"{d.metric} is {sample.latest:g}; the {sample.count} earlier samples do not vary")
    observation = (f"{d.metric} is {sample.latest:g}, z = {z:+.2f} against {sample.count} samples "
                   f"(mean {sample.mean:.4g}, sd {sample.stddev:.4g})")
    if abs(z) >= d.z_threshold:
        return Verdict("BREACH", sample.latest, observation)
    limit = d.clear_z if d.clear_z is not None else d.z_threshold
    return Verdict("CLEAR" if abs(z) < limit else "HOLD", sample.latest, observation)
