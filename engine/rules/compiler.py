"""Rule files → a RuleSet, or every error of the whole set at once.

Stages: YAML with positions → JSON Schema → semantic checks and compilation
(operators, operands, regexes, JSONPaths, templates, ids, actions). A rule
with a schema error is not compiled further, so one mistake gives one message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.durations import parse_duration
from engine.hana import EVENT_TYPES, canonical_event_type
from engine.redaction import redact
from engine.rules.conditions import ConditionCompiler
from engine.rules.errors import RuleError, RuleSetError
from engine.rules.loader import LoadedFiles, SourceFile, inner_path, load_directory, load_texts
from engine.rules.reads import FieldRead, entity_attribute
from engine.rules.ruleset import Action, Rule, RuleSet, RuleTest, Throttle
from engine.rules.schema import ACTION_KINDS
from engine.rules.templates import template_sources

#: What a date can be apart from another (Python's timedelta): a delay or a throttle window beyond is a mistake.
_LONGEST = timedelta.max.total_seconds()


def expand_events(patterns: list[str]) -> frozenset[str]:
    """`lead.*`, `*.created`, `*` and `ticket.*` → the canonical event types they cover."""
    found: set[str] = set()
    for pattern in patterns:
        entity, _, verb = pattern.partition(".")
        entity = "opportunity" if entity == "ticket" else entity
        for event_type in EVENT_TYPES:
            kind, action = event_type.split(".")
            if entity in ("*", kind) and (verb in ("", "*", action)):
                found.add(event_type)
    return frozenset(found)


class _FileCompiler:
    def __init__(self, source: SourceFile, errors: list[RuleError]) -> None:
        self.source = source
        self.errors = errors

    def error(self, path: tuple[Any, ...], message: str, hint: str | None = None, rule_id: str | None = None) -> None:
        line, column = self.source.document.position(path)
        self.errors.append(RuleError(self.source.name, line, column, message, rule_id, inner_path(path), hint))

    def entries(self, section: str, broken: frozenset[int]) -> list[tuple[int, dict[str, Any]]]:
        """The entries of `rules:` or `tests:` that passed the schema (a misshapen section has none)."""
        items = self.source.document.value.get(section)
        if not isinstance(items, list):
            return []
        return [(index, spec) for index, spec in enumerate(items) if index not in broken and isinstance(spec, dict)]

    def rules(self, first_order: int) -> list[Rule]:
        compiled = []
        for index, spec in self.entries("rules", self.source.broken_rules):
            rule = self.rule(spec, ("rules", index), first_order + index)
            if rule is not None:
                compiled.append(rule)
        return compiled

    def rule(self, spec: dict[str, Any], at: tuple[Any, ...], order: int) -> Rule | None:
        rule_id = spec["id"]
        before = len(self.errors)

        def report(path: tuple[Any, ...], message: str, hint: str | None) -> None:
            self.error((*at, *path), message, hint, rule_id)

        names = tuple((spec.get("vars") or {}).keys())
        conditions = ConditionCompiler(report, var_names=frozenset(names))
        variables = []
        for name, source in (spec.get("vars") or {}).items():
            template = conditions.template(source, ("vars", name))
            if template is not None:
                variables.append((name, template))
        check = conditions.compile(spec["when"], ("when",), "when") if "when" in spec else None
        actions = self.actions(spec.get("then") or [], report, conditions)
        throttle = None
        if "throttle" in spec:
            raw = spec["throttle"]
            key = conditions.template(raw["key"], ("throttle", "key"))
            per = self.duration(raw["per"], ("throttle", "per"), report)
            if key is not None and per is not None:
                throttle = Throttle(key=key, per=per, limit=int(raw.get("limit", 1)))
        on = [spec["on"]] if isinstance(spec["on"], str) else list(spec["on"])
        if len(self.errors) > before:
            return None
        return Rule(
            id=rule_id,
            name=spec.get("name") or rule_id,
            description=spec.get("description", ""),
            file=self.source.name,
            line=self.source.document.position((*at, "id"))[0],
            column=self.source.document.position((*at, "id"))[1],
            order=order,
            on=tuple(on),
            events=expand_events(on),
            check=check,
            actions=tuple(actions),
            vars=tuple(variables),
            enabled=spec.get("enabled", True),
            priority=spec.get("priority", 0),
            applications=frozenset(spec["applications"]) if "applications" in spec else None,
            throttle=throttle,
            stop=spec.get("stop", False),
            include_echo=spec.get("include_echo", False),
            reads=self.reads(conditions, at),
        )

    def reads(self, conditions: ConditionCompiler, at: tuple[Any, ...]) -> tuple[FieldRead, ...]:
        """The lead/opportunity attributes the rule's conditions read, each where it is written."""
        found = []
        for where, name in conditions.fields:
            named = entity_attribute(name)
            if named is not None:
                line, column = self.source.document.position((*at, *where))
                found.append(FieldRead(name, *named, line=line, column=column, path=inner_path(where)))
        return tuple(found)

    @staticmethod
    def duration(value: Any, where: tuple[Any, ...], report: Any) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            report(where, str(exc), None)
            return None
        if not seconds <= _LONGEST:  # also NaN and infinity (`1e400`)
            report(where, f"a duration must be shorter than {timedelta.max.days:,} days, got {value!r}", None)
            return None
        return seconds

    def actions(self, specs: list[dict[str, Any]], report: Any, conditions: ConditionCompiler) -> list[Action]:
        actions = []
        for index, spec in enumerate(specs):
            where = ("then", index)
            kinds = [k for k in spec if k in ACTION_KINDS]
            if len(kinds) != 1:
                report(where, f"an action has exactly one kind ({', '.join(ACTION_KINDS)}); found "
                       f"{', '.join(kinds) or 'none'}", "split it into separate actions")  # fmt: skip
                continue
            kind = kinds[0]
            if "recheck" in spec and kind != "delay":
                report((*where, "recheck"), "recheck goes with delay only", "write - {delay: 2h, recheck: true}")
                continue
            for path, source in template_sources(spec[kind]):
                conditions.template(source, (*where, kind, *path))
            if kind == "delay":
                seconds = self.duration(spec["delay"], (*where, "delay"), report)
                actions.append(Action(index, kind, None, delay=seconds, recheck=bool(spec.get("recheck", False))))
            else:
                actions.append(Action(index, kind, spec[kind]))
        return actions

    def tests(self) -> list[RuleTest]:
        tests = []
        for index, spec in self.entries("tests", self.source.broken_tests):
            event_type = canonical_event_type(spec["event"])
            if event_type is None:
                self.error(("tests", index, "event"), f"a test needs one concrete event type, got {spec['event']!r}")
                continue
            tests.append(RuleTest(
                name=spec["name"], file=self.source.name, line=self.source.document.position(("tests", index))[0],
                event=event_type, payload=spec["payload"], previous=spec.get("previous"), expect=spec["expect"],
            ))  # fmt: skip
        return tests


def compile_files(loaded: LoadedFiles) -> RuleSet:
    """Compile everything; raise RuleSetError listing every error when there is any."""
    errors = list(loaded.errors)
    rules: list[Rule] = []
    tests: list[RuleTest] = []
    first_seen: dict[str, Rule] = {}
    for source in loaded.files:
        compiler = _FileCompiler(source, errors)
        for rule in compiler.rules(len(rules)):
            if rule.id in first_seen:
                first = first_seen[rule.id]
                errors.append(RuleError(rule.file, rule.line, rule.column, f"duplicate rule id {rule.id!r} "
                                        f"(first defined at {first.file}:{first.line})", rule.id, "id",
                                        "rule ids must be unique across all files"))  # fmt: skip
                continue
            first_seen[rule.id] = rule
            rules.append(rule)
        tests.extend(compiler.tests())
    secrets = frozenset(s for f in loaded.files for s in f.document.secrets)
    if errors:
        # Values that came from ${NAME} are secrets: an error may quote a value, never one of those.
        raise RuleSetError([replace(e, message=redact(e.message, secrets), hint=redact(e.hint, secrets),
                                    rule_id=redact(e.rule_id, secrets), path=redact(e.path, secrets))
                            for e in errors])  # fmt: skip
    ordered = tuple(sorted(rules, key=lambda r: (-r.priority, r.order)))
    by_event = {event_type: tuple(r for r in ordered if r.enabled and event_type in r.events)
                for event_type in EVENT_TYPES}  # fmt: skip
    return RuleSet(
        version=loaded.version,
        rules=ordered,
        by_event=MappingProxyType(by_event),
        tests=tuple(tests),
        secrets=secrets,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )


def load_rule_set(rules_dir: Path, env: Mapping[str, str] | None = None) -> RuleSet:
    return compile_files(load_directory(rules_dir, os.environ if env is None else env))


def compile_texts(texts: Mapping[str, str], env: Mapping[str, str] | None = None) -> RuleSet:
    """For tests and the admin API: rule files given as {name: text}."""
    return compile_files(load_texts(texts, env or {}))
