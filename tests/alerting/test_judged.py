"""Which rules a device is judged under again: only those whose inputs changed since it was last judged."""

from __future__ import annotations

from typing import Any

from pulse.alerting.judged import Judged, RuleIndex, left_open, to_judge
from pulse.alerting.rules import Rule, parse_definition


def _rule(rule_id: str, rule_type: str, definition: dict[str, Any]) -> Rule:
    return Rule(rule_id=rule_id, tenant_id="acme", name=rule_id, rule_type=rule_type, severity=3,
                definition=parse_definition(rule_type, definition))


RULES = [
    _rule("hot", "THRESHOLD", {"metric": "temp_c", "op": "GT", "value": 30}),
    _rule("wet", "THRESHOLD", {"metric": "humidity", "op": "GT", "value": 80}),
    _rule("both", "MULTI", {"match": "all", "conditions": [{"metric": "temp_c", "op": "GT", "value": 25},
                                                           {"metric": "door", "op": "EQ", "value": "open"}]}),
    _rule("quiet", "GAP", {"metric": "door", "gap_seconds": 600}),
]
AT = {"temp_c": "2026-11-23T12:00:00+00:00", "humidity": "2026-11-23T12:00:00+00:00",
      "door": "2026-11-23T11:00:00+00:00"}
VALUES = {"temp_c": 21.5, "humidity": 40, "door": "closed"}


def _before(index: RuleIndex, **kw: Any) -> Judged:
    return Judged(index, index.readings(AT, VALUES), kw.get("in_maintenance", False),
                  kw.get("open_fps", frozenset()), kw.get("again", frozenset()))


def test_a_new_reading_selects_the_rules_on_that_metric_only() -> None:
    index = RuleIndex.of(RULES)
    before = _before(index)
    same = index.readings(AT, VALUES)
    assert to_judge(before, index, same, False, frozenset()) == set()
    newer = index.readings({**AT, "temp_c": "2026-11-23T12:00:10+00:00"}, VALUES)
    assert to_judge(before, index, newer, False, frozenset()) == {0, 2}  # hot and both, not wet, not the gap rule
    changed_value = index.readings(AT, {**VALUES, "humidity": 85})
    assert to_judge(before, index, changed_value, False, frozenset()) == {1}


def test_maintenance_another_rule_set_or_no_history_judge_every_rule() -> None:
    index = RuleIndex.of(RULES)
    readings = index.readings(AT, VALUES)
    assert to_judge(None, index, readings, False, frozenset()) is None
    assert to_judge(_before(index), index, readings, True, frozenset()) is None
    assert to_judge(_before(RuleIndex.of(RULES)), index, readings, False, frozenset()) is None


def test_an_alert_opened_or_closed_elsewhere_and_a_running_window_are_judged_again() -> None:
    index = RuleIndex.of(RULES)
    readings = index.readings(AT, VALUES)
    before = _before(index, open_fps=frozenset({"RULE:wet:d1"}), again=frozenset({0}))
    closed_by_hand = frozenset({"NO_HEARTBEAT:d1"})  # wet closed by someone, a NO_HEARTBEAT opened
    assert to_judge(before, index, readings, False, closed_by_hand) == {0, 1}


def test_an_unhashable_value_is_judged_every_time() -> None:
    index = RuleIndex.of(RULES)
    odd = index.readings(AT, {**VALUES, "door": ["open"]})
    assert to_judge(_before(index), index, odd, False, frozenset()) == {2}
    assert to_judge(Judged(index, odd, False, frozenset(), frozenset()), index, odd, False, frozenset()) == {2}


def test_left_open_applies_the_outcomes_to_what_was_open() -> None:
    assert left_open(frozenset({"a", "b"}), [("a", False), ("c", True)]) == {"b", "c"}
