"""The compiled, frozen rule set and its evaluation.

`RuleSet.evaluate(context)` returns the matched rules in priority order with
their rendered actions (never executed here). With `trace=True` every
candidate rule is explained: each condition's path, result and the value it
saw. A reload builds a new RuleSet and swaps one reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.redaction import redact
from engine.rules.conditions import Check
from engine.rules.reads import FieldRead
from engine.rules.templates import Template, TemplateRenderError, render_structure
from engine.rules.tracing import RecordingTracer, cut, jsonable


@dataclass(frozen=True)
class Action:
    index: int
    kind: str
    spec: Any  # the structure as written, templates included; rendered per event
    delay: float | None = None
    recheck: bool = False


@dataclass(frozen=True)
class Throttle:
    key: Template
    per: float
    limit: int


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    file: str
    line: int  # of the rule's `id:` key
    column: int
    order: int
    on: tuple[str, ...]
    events: frozenset[str]
    check: Check | None
    actions: tuple[Action, ...] = ()
    vars: tuple[tuple[str, Template], ...] = ()
    description: str = ""
    enabled: bool = True
    priority: int = 0
    applications: frozenset[str] | None = None
    throttle: Throttle | None = None
    stop: bool = False
    include_echo: bool = False
    reads: tuple[FieldRead, ...] = ()  # the attributes its conditions read, located (reads.py)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "enabled": self.enabled, "on": list(self.on),
                "file": self.file, "line": self.line, "priority": self.priority}  # fmt: skip


@dataclass
class RenderedAction:
    index: int
    kind: str
    payload: Any = None
    error: str | None = None
    delayed: bool = False  # comes after a `delay`: runs later (and is rendered again then)

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"index": self.index, "kind": self.kind, "payload": jsonable(self.payload)}
        if self.error:
            entry["error"] = self.error
        if self.delayed:
            entry["delayed"] = True
        return entry


@dataclass
class RuleResult:
    rule: Rule
    matched: bool
    conditions: list[dict[str, Any]] | None = None
    actions: list[RenderedAction] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)

    def as_json(self, secrets: frozenset[str] = frozenset()) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.rule.id, "matched": self.matched, "conditions": self.conditions or [],
                                 "actions": [a.as_json() for a in self.actions]}  # fmt: skip
        if self.vars:
            # Cut like traced values (masked first, so a cut never leaves half a secret to see): a var
            # may hold a whole attribute, and this record is kept per event.
            entry["vars"] = {str(name): cut(redact(value, secrets))[0] for name, value in self.vars.items()}
        if self.error:
            entry["error"] = self.error
        if self.skipped:
            entry["skipped"] = self.skipped
        return entry


@dataclass
class Evaluation:
    version: str
    results: list[RuleResult]
    secrets: frozenset[str] = frozenset()  # masked in what is traced, before anything is cut

    @property
    def matched(self) -> list[RuleResult]:
        return [r for r in self.results if r.matched]

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "matched": [r.rule.id for r in self.matched],
                "rules": [r.as_json(self.secrets) for r in self.results]}  # fmt: skip


def render_actions(rule: Rule, context: dict[str, Any]) -> list[RenderedAction]:
    rendered: list[RenderedAction] = []
    delayed = False
    for action in rule.actions:
        if action.kind == "delay":
            payload = {"delay": action.delay, "recheck": action.recheck}
            rendered.append(RenderedAction(action.index, "delay", payload, delayed=delayed))
            delayed = True
            continue
        try:
            payload = render_structure(action.spec, context)
            rendered.append(RenderedAction(action.index, action.kind, payload, delayed=delayed))
        except TemplateRenderError as exc:
            rendered.append(RenderedAction(action.index, action.kind, error=str(exc), delayed=delayed))
    return rendered


@dataclass(frozen=True)
class RuleTest:
    name: str
    file: str
    line: int
    event: str
    payload: Any
    previous: Mapping[str, Any] | None
    expect: Mapping[str, Any]


@dataclass(frozen=True)
class RuleSet:
    version: str
    rules: tuple[Rule, ...]  # every rule, in evaluation order (priority, then file order)
    by_event: Mapping[str, tuple[Rule, ...]]  # enabled rules per event type
    tests: tuple[RuleTest, ...] = ()
    secrets: frozenset[str] = frozenset()
    loaded_at: str = ""

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def evaluate(self, context: dict[str, Any], *, body: Any = None, trace: bool = False,
                 secrets: frozenset[str] = frozenset()) -> Evaluation:  # fmt: skip
        """Matched rules with rendered actions; `trace`: explain every candidate rule.

        `secrets` (besides the rule set's own) are masked in traced values before they are cut:
        masking afterwards could leave the first characters of a secret the cut split.
        """
        secrets = secrets | self.secrets if trace else frozenset()
        event = context["event"]
        application_id = context.get("application", {}).get("id")
        echo = bool(event.get("echo"))
        results: list[RuleResult] = []
        stopped_by: str | None = None
        for rule in self.by_event.get(event["type"], ()):
            skipped = None
            if stopped_by:
                skipped = f"not evaluated: rule {stopped_by} matched first and has stop: true"
            elif rule.applications is not None and application_id not in rule.applications:
                skipped = "not evaluated: this rule is limited to other applications"
            elif echo and not rule.include_echo:
                skipped = "not evaluated: this event echoes our own update (include_echo: true to see it)"
            if skipped:
                if trace:
                    results.append(RuleResult(rule, False, skipped=skipped))
                continue
            if not trace and not rule.vars:
                # The production path: one call per rule, a result object only for a match.
                if rule.check is not None and not rule.check(context, body, None):
                    continue
                context["vars"] = {}
                result = RuleResult(rule, True, actions=render_actions(rule, context))
            else:
                result = self._evaluate_rule(rule, context, body, trace, secrets)
            if result.matched or trace:
                results.append(result)
            if result.matched and rule.stop:
                stopped_by = rule.id
        context["vars"] = {}
        return Evaluation(self.version, results, secrets)

    @staticmethod
    def evaluate_rule(rule: Rule, context: dict[str, Any], body: Any = None, *, trace: bool = False,
                      secrets: frozenset[str] = frozenset()) -> RuleResult:  # fmt: skip
        """One rule on one context (a delay's end re-checks and re-renders its rule alone)."""
        return RuleSet._evaluate_rule(rule, context, body, trace, secrets)

    @staticmethod
    def _evaluate_rule(rule: Rule, context: dict[str, Any], body: Any, trace: bool,
                       secrets: frozenset[str] = frozenset()) -> RuleResult:  # fmt: skip
        tracer = RecordingTracer(secrets) if trace else None
        values: dict[str, Any] = {}
        context["vars"] = values
        for name, template in rule.vars:
            try:
                values[name] = template.render(context)
            except TemplateRenderError as exc:
                return RuleResult(rule, False, [], error=f"vars.{name}: {exc}", vars=dict(values))
        matched = rule.check is None or rule.check(context, body, tracer)
        actions = render_actions(rule, context) if matched else []
        return RuleResult(rule, matched, tracer.conditions if tracer else None, actions, vars=dict(values))
