"""Checks of a rule set that need the settings: the literal part of action URLs against the outbound policy."""

from __future__ import annotations

from engine.actions.policy import OutboundPolicy, RefusedHost, literal_urls
from engine.config import Settings
from engine.rules.errors import RuleError
from engine.rules.ruleset import RuleSet


def outbound_errors(rule_set: RuleSet, settings: Settings) -> list[RuleError]:
    """A URL, or a host part, written without templates must be plain and allowed, or the set is refused at load.

    The same `check_url` as at send time, so what loads is what may be called.
    """
    policy = OutboundPolicy.from_settings(settings)
    errors = []
    for rule in rule_set.rules:
        for action in rule.actions:
            for url in literal_urls(action.spec, action.kind):
                try:
                    policy.check_url(url)
                except RefusedHost as exc:
                    errors.append(RuleError(rule.file, rule.line, rule.column, str(exc), rule.id,
                                            f"then/{action.index}/{action.kind}"))  # fmt: skip
    return errors
