"""What the evaluator last judged each device on, so that a device is judged under a rule only when something the
rule's outcome depends on changed since.

A rule's verdict on a device follows from the newest readings of the rule's metrics (time and value), whether the
device is in a maintenance window, and whether the rule's alert is open. The evaluator keeps, per device, a hash of
each reading it last judged (one machine word per metric its tenant's rules use), the maintenance flag, and which
alerts it left open. A device whose message brought new readings of two metrics is then judged only under the rules
on those two metrics; a manual close, a maintenance window starting or ending, or an edited rule set makes it be
judged again under the rules concerned.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import compress, count
from operator import ne, not_
from typing import Any

from pulse.alerting.rules import GapDefinition, MultiDefinition, Rule


@dataclass(frozen=True, eq=False)
class RuleIndex:
    """A tenant's enabled rules and, for each metric they judge, which rules (by position) use it."""

    rules: list[Rule]
    metrics: tuple[str, ...]
    rules_of_metric: tuple[tuple[int, ...], ...]
    position: dict[str, int]  # rule_id -> position in `rules`

    @classmethod
    def of(cls, rules: list[Rule]) -> RuleIndex:
        uses: dict[str, list[int]] = {}
        for i, rule in enumerate(rules):
            d = rule.definition
            if isinstance(d, GapDefinition):  # judged by its own timer, not per reading
                continue
            for metric in (c.metric for c in d.conditions) if isinstance(d, MultiDefinition) else (d.metric,):
                uses.setdefault(metric, []).append(i)
        return cls(rules, tuple(uses), tuple(tuple(v) for v in uses.values()),
                   {r.rule_id: i for i, r in enumerate(rules)})

    def rule_of(self, fingerprint: str) -> int | None:
        """The position of the rule an alert fingerprint (`RULE:{rule_id}:{device_id}`) belongs to, if any."""
        if not fingerprint.startswith("RULE:"):
            return None
        return self.position.get(fingerprint[5:].split(":", 1)[0])

    def readings(self, metrics_at: Mapping[str, Any], values: Mapping[str, Any]) -> array[int]:
        """A hash of each metric's newest reading (time and value); 0 for one that cannot be hashed (never equal,
        and so is a reading whose hash happens to be 0: judged every time, which is only extra work)."""
        try:  # map/zip: the loop runs in C, for every woken device
            return array("q", map(hash, zip(map(metrics_at.get, self.metrics), map(values.get, self.metrics),
                                             strict=True)))
        except TypeError:  # a value that cannot be hashed (not one ingest stores): metric by metric
            out = array("q", bytes(8 * len(self.metrics)))
            for i, metric in enumerate(self.metrics):
                try:
                    out[i] = hash((metrics_at.get(metric), values.get(metric))) or 1
                except TypeError:
                    pass
            return out


@dataclass(slots=True)
class Judged:
    """A device as last judged: under which rule set, on which readings, in maintenance or not, with which alerts
    left open, and which rules must be judged again whatever changes (a for_seconds window still running)."""

    index: RuleIndex
    readings: array[int]
    in_maintenance: bool
    open_fps: frozenset[str]
    again: frozenset[int]


def to_judge(before: Judged | None, index: RuleIndex, readings: array[int], in_maintenance: bool,
             open_fps: frozenset[str]) -> set[int] | None:
    """The positions of the rules to judge the device under now; None for all of them."""
    if before is None or before.index is not index or before.in_maintenance != in_maintenance:
        return None
    todo = set(before.again)
    if len(before.readings) != len(readings):
        raise ValueError("readings of another rule index")
    for i in compress(count(), map(ne, before.readings, readings)):  # the metrics with a newer reading, found in C
        todo.update(index.rules_of_metric[i])
    if 0 in readings:  # a reading that could not be hashed: its rules are judged every time
        for i in compress(count(), map(not_, readings)):
            todo.update(index.rules_of_metric[i])
    if open_fps != before.open_fps:  # opened or closed by someone else (a manual close, a NO_HEARTBEAT, a gap)
        todo.update(p for p in (index.rule_of(fp) for fp in open_fps ^ before.open_fps) if p is not None)
    return todo


def left_open(open_fps: frozenset[str], changes: Iterable[tuple[str, bool]]) -> frozenset[str]:
    """The alerts meant to be open after judging: those open before, with the judged rules' outcomes applied."""
    result = set(open_fps)
    for fingerprint, is_open in changes:
        if is_open:
            result.add(fingerprint)
        else:
            result.discard(fingerprint)
    return frozenset(result)
