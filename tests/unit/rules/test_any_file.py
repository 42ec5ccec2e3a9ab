"""Any file at all compiles to a RuleSet or to error lines with positions: never another exception.

Two corpora: inputs of the official YAML test suite (tests/data/yaml-suite/, see its
README), and generated shapes — every kind of YAML value (scalars of each style,
lists, mappings, flow and block, anchors, aliases, tags, documents, nesting past
the limits) put in every place a rule file has (the top level, `rules:`, each key
of a rule, a condition, an action, a test). Whatever compiles is also evaluated
on an event, traced and not, so a shape the schema lets through cannot break a
worker either.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.hana import normalize
from engine.rules.compiler import compile_texts
from engine.rules.errors import RuleSetError
from engine.rules.ruleset import RuleSet
from engine.rules.testing import run_rule_tests, simulate

SUITE = Path(__file__).resolve().parents[2] / "data" / "yaml-suite"
SUITE_FILES = sorted(SUITE.glob("*.yaml"))

VALUES = [
    # scalars, each style and each trap of YAML 1.1
    "plain", "'single'", '"double\\n\\ttabbed"', "12", "-3.5", "1e400", ".nan", "-.inf", "0x1F", "012", "true",
    "false", "null", "~", "", "on", "NO", "12:30", "2020-01-01", "'{{ lead.id }}'", "'{{'", "'{% for x in y %}'",
    "'{{ " + "(" * 30 + "1" + ")" * 30 + " }}'", "'{{ 1" + "|string" * 60 + " }}'", "'${HANA_RULES_FUZZ_UNSET}'",
    "'{{ ([[1]*200000]*200000)|string }}'", "\"{{ 'x'*60000 | replace('', 'y'*60000) }}\"",
    "'{% for i in lead.id * 9999 %}{% for j in lead.id * 9999 %}{% endfor %}{% endfor %}'",
    "'{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}'", "'$'", "|\n  literal\n  text\n",
    ">-\n  folded\n", "|+\n\n", '"\\u0000"', '"\\u2028 line separator"', '"\\x85"', "'é ễ 😁'", "x" * 3000,
    # collections, flow and block
    "[]", "{}", "[a, b]", "[[]]", "[{}]", "[1, [2, [3]]]", "{a: 1}", "{id: x}", "{field: lead.x, equals: 1}",
    "{? [a] : b}", "[a: b]", "\n  - a\n  - b\n", "\n  a: 1\n  b: [2]\n", "\n  - - - []\n",
    "[" * 45 + "]" * 45, "[" * 60 + "]" * 60, "{a: " * 60 + "1" + "}" * 60,
    "\n" + "".join("  " * i + "- \n" for i in range(1, 60)),
    # anchors, aliases, tags, documents, odd syntax
    "&a x", "*a", "&a [1]", "!!str x", "!!int 1", "!!binary aGk=", "!foo x", "!<tag:yaml.org,2002:str> x",
    "!!map {}", "!!seq []", "!!set {a}", "x\n---\ny", "x\n...\n", "{a: 1, a: 2}", "[a, b", "'unclosed", "\t- tab",
    "@reserved", "`reserved", "- in a value", ": colon", "? question",
]  # fmt: skip

RULE = "rules:\n  - id: r\n    on: lead.created\n"
SLOTS = [
    "{V}", "rules: {V}", "rules:\n  - {V}", "tests: {V}", "rules: []\nextra: {V}",
    "rules:\n  - id: {V}\n    on: lead.created", "rules:\n  - id: r\n    on: {V}",
    "rules:\n  - id: r\n    on:\n      - {V}",
    *(RULE + f"    {key}: {{V}}" for key in ("name", "description", "enabled", "priority", "applications", "when",
                                            "then", "vars", "throttle", "stop", "include_echo", "unknown")),
    RULE + "    applications:\n      - {V}", RULE + "    vars:\n      a: {V}", RULE + "    vars:\n      {V}: x",
    RULE + "    throttle:\n      key: {V}\n      per: 1h", RULE + "    throttle:\n      key: k\n      per: {V}",
    RULE + "    throttle:\n      key: k\n      per: 1h\n      limit: {V}",
    *(RULE + f"    when:\n      {key}: {{V}}" for key in ("all", "any", "not", "template", "changed", "field", "path")),
    RULE + "    when:\n      - {V}", RULE + "    when:\n      any:\n        - {V}",
    RULE + "    when:\n      not:\n        {V}",
    RULE + "    when:\n      changed: lead.x\n      to: {V}", RULE + "    when:\n      path: {V}\n      exists: true",
    *(RULE + f"    when:\n      field: lead.x\n      {op}: {{V}}" for op in (
        "equals", "in", "contains", "contains_any", "matches", "gt", "between", "exists", "empty", "before",
        "within", "ignore_case")),
    RULE + "    then:\n      - {V}",
    *(RULE + f"    then:\n      - {kind}: {{V}}" for kind in (
        "log", "delay", "hana_update", "webhook", "slack", "telegram", "email")),
    RULE + "    then:\n      - delay: 1h\n        recheck: {V}", RULE + "    then:\n      - log: x\n        delay: {V}",
    RULE + "    then:\n      - hana_update:\n          lead: {V}",
    RULE + "    then:\n      - hana_update:\n          lead:\n            id: {V}\n            cf_x: {V}",
    RULE + "    then:\n      - webhook:\n          url: http://x\n          json: {V}",
    RULE + "    then:\n      - webhook:\n          url: {V}\n          headers: {V}",
    RULE + "    then:\n      - slack:\n          webhook_url: http://x\n          text: {V}",
    RULE + "    then:\n      - telegram:\n          bot_token: t\n          chat_id: {V}\n          text: x",
    RULE + "    then:\n      - email:\n          to: {V}\n          subject: s\n          body: b",
    "tests:\n  - {V}",
    *(f"{RULE}tests:\n  - name: t\n    event: lead.created\n    payload: {{}}\n    expect: {{}}\n    {key}: {{V}}"
      for key in ("name", "event", "payload", "previous", "expect", "unknown")),
    f"{RULE}tests:\n  - name: t\n    event: lead.created\n    payload: {{}}\n    expect:\n      matched: {{V}}",
    f"{RULE}tests:\n  - name: t\n    event: lead.created\n    payload: {{}}\n    expect:\n      actions: {{V}}",
    f"{RULE}tests:\n  - name: t\n    event: lead.created\n    payload: {{}}\n    expect:\n      actions:\n"
    "        - rule: r\n          payload: {V}",
]  # fmt: skip


def place(slot: str, value: str) -> str:
    """`slot` with `value` at {V}; a value of several lines is indented under its line."""
    lines = []
    for line in slot.split("\n"):
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        lines.append(line.replace("{V}", value.replace("\n", "\n" + indent)))
    return "\n".join(lines) + "\n"


def generated() -> Iterator[tuple[str, str]]:
    for s, slot in enumerate(SLOTS):
        for v, value in enumerate(VALUES):
            yield f"rules/fuzz-{s}-{v}.yaml", place(slot, value)


BODY = {"lead": {"id": "L1", "baseName": {"rawData": "An", "nomalizeData": "An"}}}


def outcome(name: str, text: str) -> tuple[str | None, str]:
    """What went wrong (None when the file behaves), and the stage it stopped at."""
    try:
        rule_set = compile_texts({name: text}, env={"HANA_RULES_FUZZ_SET": "x"})
    except RuleSetError as exc:
        for error in exc.errors:
            printed = str(error)
            if "\n" in printed or not re.match(rf"{re.escape(name)}:[1-9]\d*:[1-9]\d* \S", printed):
                return f"{name}: not one located line: {printed!r}", "error"
        early = any("YAML" in e.message or "rule file" in e.message for e in exc.errors)
        return None, "yaml" if early else "checks"
    except Exception as exc:  # noqa: BLE001 - the point of the test
        return f"{name}: {type(exc).__name__}: {exc}", "error"
    assert isinstance(rule_set, RuleSet)
    try:
        context = normalize(BODY, event_id="e1", event_type="lead.created", received_at="2026-01-01T00:00:00Z").context
        rule_set.evaluate(context, body=BODY)
        simulate(rule_set, "lead.created", BODY)
        run_rule_tests(rule_set)
    except Exception as exc:  # noqa: BLE001
        return f"{name}: compiled, then evaluating raised {type(exc).__name__}: {exc}", "error"
    return None, "compiled"


def test_the_yaml_test_suite_corpus_is_there() -> None:
    assert len(SUITE_FILES) >= 40
    assert (SUITE / "README.md").is_file()


@pytest.mark.parametrize("path", SUITE_FILES, ids=[p.stem for p in SUITE_FILES])
def test_every_yaml_test_suite_input_compiles_or_gives_located_error_lines(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    files = {f"rules/{path.name}": text}
    if not re.search(r"^(---|\.\.\.|%)", text, re.MULTILINE):  # one document: also try it inside a rule
        files[f"rules/{path.stem}-in-a-rule.yaml"] = place(RULE + "    when: {V}", "\n" + text)
        files[f"rules/{path.stem}-as-a-test.yaml"] = place("tests:\n  - {V}", text)
    assert [failure for name, text in files.items() if (failure := outcome(name, text)[0])] == []


@functools.cache
def generated_outcomes() -> tuple[list[str], dict[str, int]]:
    """Failures, and how many files stopped at each stage: YAML and shape, the other checks, none."""
    failures: list[str] = []
    stages = {"yaml": 0, "checks": 0, "compiled": 0, "error": 0}
    for name, text in generated():
        failure, stage = outcome(name, text)
        stages[stage] += 1
        if failure:
            failures.append(failure)
    return failures, stages


def test_every_generated_shape_compiles_or_gives_located_error_lines() -> None:
    failures, _ = generated_outcomes()
    assert failures == [], "\n".join(failures[:20])


def test_the_generated_corpus_reaches_every_stage() -> None:
    """Not only YAML errors: shapes get through to the schema, the compiler and a valid rule set."""
    _, stages = generated_outcomes()
    assert stages["yaml"] > 100 and stages["checks"] > 100 and stages["compiled"] > 100, stages
