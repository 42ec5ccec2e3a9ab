"""The example rules in rules/ load, and every one of their `tests:` passes: the docs cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.rules.compiler import load_rule_set
from engine.rules.testing import check_test, run_rule_tests

RULES = Path(__file__).resolve().parents[3] / "rules"


def test_example_rules_load_and_cover_the_promised_uses() -> None:
    rule_set = load_rule_set(RULES, env={})
    ids = {rule.id for rule in rule_set.rules}
    assert {"vip-lead-from-ads", "normalize-phone-to-e164", "funnel-status-actived", "complaint-keyword",
            "big-deal-alert", "ticket-deleted"} <= ids  # fmt: skip
    tested = {rule for test in rule_set.tests for rule in test.expect.get("matched", [])}
    assert ids <= tested, f"rules without a test that shows them matching: {ids - tested}"


@pytest.mark.parametrize("index", range(len(load_rule_set(RULES, env={}).tests)))
def test_example_rule_test_passes(index: int) -> None:
    rule_set = load_rule_set(RULES, env={})
    outcome = check_test(rule_set, rule_set.tests[index])
    assert outcome.passed, outcome.differences


def test_a_wrong_expectation_fails_with_the_difference_shown() -> None:
    rule_set = load_rule_set(RULES, env={})
    test = next(t for t in rule_set.tests if "60 million" in t.name)
    broken = type(test)(**{**test.__dict__, "expect": {
        "matched": ["big-deal-alert"], "not_matched": ["ticket-deleted"],
        "actions": [{"rule": "big-deal-alert", "action": "slack", "payload": {"text": "Small deal"}}],
    }})  # fmt: skip
    outcome = check_test(rule_set, broken)
    assert not outcome.passed
    assert any("text: expected 'Small deal', got 'Big deal: " in d for d in outcome.differences)
    assert all(o.passed for o in run_rule_tests(rule_set))
