"""Offline runs of rules: `simulate` one event, and the `tests:` blocks of rule files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.hana import entity_of, normalize
from engine.rules.ruleset import Evaluation, RuleResult, RuleSet, RuleTest
from engine.rules.tracing import jsonable
from engine.state import apply_known_state

SIMULATED_AT = "2026-01-01T00:00:00.000Z"


def simulate(
    rule_set: RuleSet,
    event_type: str,
    payload: Any,
    previous: Mapping[str, Any] | None = None,
    *,
    application_name: str | None = None,
    event_id: str = "simulated",
    secrets: frozenset[str] = frozenset(),
) -> Evaluation:
    """Evaluate one event with full explanations; nothing is sent.

    `previous` is the known state as plain values, `{lead: {attr: value}}`.
    """
    normalized = normalize(payload, event_id=event_id, event_type=event_type, received_at=SIMULATED_AT,
                           application_name=application_name)  # fmt: skip
    context = normalized.context
    entity = entity_of(event_type)
    known = previous.get(entity) if isinstance(previous, Mapping) else None
    apply_known_state(context, dict(known) if isinstance(known, Mapping) else None)
    return rule_set.evaluate(context, body=payload, trace=True, secrets=secrets)


@dataclass
class TestOutcome:
    test: RuleTest
    differences: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.differences


def run_rule_tests(rule_set: RuleSet) -> list[TestOutcome]:
    return [check_test(rule_set, test) for test in rule_set.tests]


def check_test(rule_set: RuleSet, test: RuleTest) -> TestOutcome:
    evaluation = simulate(rule_set, test.event, test.payload, test.previous)
    results = {r.rule.id: r for r in evaluation.results}
    outcome = TestOutcome(test)
    for rule_id in test.expect.get("matched", []):
        result = results.get(rule_id)
        if rule_set.rule(rule_id) is None:
            outcome.differences.append(f"expected {rule_id} to match, but there is no rule with that id")
        elif result is None or not result.matched:
            outcome.differences.append(f"expected {rule_id} to match, but it did not: {_why_not(result)}")
    for rule_id in test.expect.get("not_matched", []):
        result = results.get(rule_id)
        if result is not None and result.matched:
            outcome.differences.append(f"expected {rule_id} not to match, but it did")
    for expected in test.expect.get("actions", []):
        difference = _action_difference(expected, results.get(expected["rule"]))
        if difference:
            outcome.differences.append(difference)
    return outcome


def _why_not(result: RuleResult | None) -> str:
    if result is None:
        return "it does not listen to this event type or is disabled"
    if result.skipped:
        return result.skipped
    if result.error:
        return result.error
    failed = [c for c in result.conditions or [] if not c["result"] and c.get("expected") not in ("all", "any", "not")]
    if not failed:
        return "its conditions did not hold"
    first = failed[0]
    return f"{first['path']} was false (saw {first['value']!r}, expected {first['expected']!r})"


def _action_difference(expected: Mapping[str, Any], result: RuleResult | None) -> str | None:
    rule_id = expected["rule"]
    if result is None or not result.matched:
        return f"expected an action of {rule_id}, but {rule_id} did not match"
    kind = expected.get("action")
    candidates = [a for a in result.actions if kind is None or a.kind == kind]
    if not candidates:
        kinds = ", ".join(a.kind for a in result.actions) or "none"
        return f"expected a {kind} action from {rule_id}; it has: {kinds}"
    wanted = expected.get("payload")
    if wanted is None:
        return None
    best = None
    for action in candidates:
        if action.error:
            best = best or f"the {action.kind} action of {rule_id} failed to render: {action.error}"
            continue
        missing = subset_difference(wanted, jsonable(action.payload))
        if not missing:
            return None
        best = best or f"{action.kind} payload of {rule_id} differs: {missing}"
    return best


def subset_difference(wanted: Any, actual: Any, where: str = "") -> str | None:
    """None when every key `wanted` gives is equal in `actual` (mappings compared as subsets)."""
    if isinstance(wanted, Mapping):
        if not isinstance(actual, Mapping):
            return f"{where or 'payload'}: expected a mapping, got {actual!r}"
        for key, value in wanted.items():
            if key not in actual:
                return f"{where}{key}: missing (expected {value!r})"
            difference = subset_difference(value, actual[key], f"{where}{key}.")
            if difference:
                return difference
        return None
    if wanted != actual or type(wanted) is not type(actual) and not _same_number(wanted, actual):
        return f"{where.rstrip('.') or 'payload'}: expected {wanted!r}, got {actual!r}"
    return None


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and a == b
