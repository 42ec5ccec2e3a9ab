"""Loading the rule set the way every process does: compile, then the checks that need settings."""

from __future__ import annotations

from pathlib import Path

from engine.actions.checks import outbound_errors
from engine.config import Settings
from engine.rules.compiler import load_rule_set
from engine.rules.errors import RuleSetError
from engine.rules.ruleset import RuleSet


def load_rules(settings: Settings, rules_dir: Path | None = None) -> RuleSet:
    """The rule set, or RuleSetError listing every mistake (never a partial set)."""
    rule_set = load_rule_set(rules_dir or settings.rules_dir)
    errors = outbound_errors(rule_set, settings)
    if errors:
        raise RuleSetError(errors)
    return rule_set
