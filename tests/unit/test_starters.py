"""The console's starters are complete rule files that compile, whose tests pass and mean something.

A starter is where a business user begins: if one failed to compile, or its tests passed
whatever the rule did, the user's first experience would be a broken or misleading file.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from engine.rules.compiler import compile_texts
from engine.rules.editing import set_enabled
from engine.rules.starters import Starter, starter, starters
from engine.rules.testing import run_rule_tests
from engine.rules.yaml_loader import load_yaml

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "engine" / "rules" / "starters"
NAMES = [s.name for s in starters()]
#: Letters only Vietnamese uses among the Latin ones: a comment holding one is written in Vietnamese.
VIETNAMESE = re.compile(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", re.IGNORECASE)
#: Where an outbound action says where it goes or with which credential.
DESTINATIONS = {"slack": ("webhook_url",), "telegram": ("bot_token", "chat_id"), "webhook": ("url",)}


def by_name(name: str) -> Starter:
    found = starter(name)
    assert found is not None
    return found


def test_there_are_the_three_promised_starters_each_a_file_in_the_package() -> None:
    assert NAMES == ["tag-facebook-lead", "slack-on-funnel-change", "escalate-complaint"]
    assert sorted(p.stem for p in FOLDER.glob("*.yaml")) == sorted(NAMES)  # none shipped but unlisted
    for item in starters():
        assert item.text == (FOLDER / f"{item.name}.yaml").read_text(encoding="utf-8")
        assert item.title_en.isascii() and VIETNAMESE.search(item.title_vi)
    assert starter("../../pyproject") is None and starter("nope") is None


def test_the_starters_are_package_data_so_an_installed_wheel_has_them() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["engine"]  # fmt: skip
    for name in NAMES:
        assert any(fnmatch.fnmatch(f"rules/starters/{name}.yaml", pattern) for pattern in package_data)


@pytest.mark.parametrize("name", NAMES)
def test_a_starter_compiles_alone_and_its_tests_pass(name: str) -> None:
    rule_set = compile_texts({f"rules/{name}.yaml": by_name(name).text}, env={})
    assert rule_set.tests, "a starter shows with tests how its rules behave"
    outcomes = run_rule_tests(rule_set)
    assert [o.differences for o in outcomes if not o.passed] == []
    shown = {rule for test in rule_set.tests for rule in test.expect.get("matched", [])}
    assert {rule.id for rule in rule_set.rules} <= shown
    assert any(test.expect.get("not_matched") for test in rule_set.tests), "a starter shows when it does not fire"


@pytest.mark.parametrize("name", NAMES)
def test_a_starters_tests_fail_when_its_rule_does_not_run(name: str) -> None:
    """The tests are real: with the rule disabled, those expecting it to match fail."""
    text = by_name(name).text
    for rule in compile_texts({"rules/s.yaml": text}, env={}).rules:
        disabled = compile_texts({"rules/s.yaml": set_enabled(text, rule.id, False)}, env={})
        failed = [o for o in run_rule_tests(disabled) if not o.passed]
        expecting = [t for t in disabled.tests if rule.id in t.expect.get("matched", [])]
        assert len(failed) == len(expecting) > 0


def test_the_starters_fit_beside_the_example_rules_and_each_other() -> None:
    """Rule ids are unique across a rule set: a starter saved next to the examples must not clash."""
    texts = {f"rules/{p.name}": p.read_text(encoding="utf-8") for p in (ROOT / "rules").glob("*.yaml")}
    texts |= {f"rules/{s.name}.yaml": s.text for s in starters()}
    rule_set = compile_texts(texts, env={})
    assert all(o.passed for o in run_rule_tests(rule_set))


@pytest.mark.parametrize("name", NAMES)
def test_outbound_destinations_are_placeholders_the_environment_replaces(name: str) -> None:
    text = by_name(name).text
    rules = load_yaml(text, {}).value["rules"]
    kinds = [kind for rule in rules for action in rule.get("then", []) for kind in action]
    for kind in kinds:
        for key in DESTINATIONS.get(kind, ()):
            written = re.search(rf"^\s*{key}: (.*)$", text, re.MULTILINE)
            assert written is not None
            reference = re.fullmatch(r"\$\{([A-Z_]+):-(.+)\}", written.group(1))
            assert reference, f"{name}: {kind}.{key} comes from an environment variable"
            assert re.search(r"example|EXAMPLE|T000|^-?100", reference.group(2)), "the default is a placeholder"
            assert reference.group(1) in text.split("rules:")[0], "the header says which variable to set"
            real = load_yaml(text, {reference.group(1): "real-value"}).value["rules"]
            assert "real-value" in repr(real)
        if kind in ("slack", "webhook", "telegram"):
            assert "allow_hosts" in text.split("rules:")[0], "the header explains outbound.allow_hosts"


@pytest.mark.parametrize("name", NAMES)
def test_every_part_is_explained_in_english_and_vietnamese(name: str) -> None:
    lines = by_name(name).text.splitlines()
    comments = [line.split("#", 1)[1] for line in lines if line.lstrip().startswith("#")]
    assert sum(1 for c in comments if VIETNAMESE.search(c)) >= 5
    assert sum(1 for c in comments if c.isascii()) >= 5
    for key in ("    on:", "    when:", "    then:", "tests:"):
        index = next(i for i, line in enumerate(lines) if line.startswith(key))
        block = []
        while lines[index - 1 - len(block)].lstrip().startswith("#"):
            block.append(lines[index - 1 - len(block)])
        parts = [part for line in block for part in line.lstrip(" #").split(" / ")]
        english = [p for p in parts if re.sub(r'"[^"]*"', "", p).isascii()]  # quoting a Vietnamese word is fine
        assert english and any(VIETNAMESE.search(p) for p in parts), f"{name}: {key.strip()}"
