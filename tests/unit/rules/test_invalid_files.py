"""Every error category of SPEC §7 has a golden invalid file: exact position, rule id, message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.rules.compiler import compile_texts
from engine.rules.errors import RuleSetError

INVALID = Path(__file__).resolve().parents[2] / "data" / "rules" / "invalid"
FILES = sorted(INVALID.glob("*.yaml"))
EXPECT = re.compile(r"# expect: (\d+):(\d+) (.+)")


def test_there_is_a_golden_file_for_every_category_of_spec_7() -> None:
    names = {f.stem for f in FILES}
    for category in ("yaml-syntax", "unknown-key", "unknown-operator", "duplicate-id", "unknown-event",
                     "jinja-syntax", "re2-syntax", "jsonpath-syntax", "hana-update-without-id"):  # fmt: skip
        assert category in names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_invalid_file_reports_its_exact_position_and_message(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    line, column, fragment = EXPECT.match(text.splitlines()[0]).groups()
    with pytest.raises(RuleSetError) as raised:
        compile_texts({f"rules/{path.name}": text}, env={})
    errors = raised.value.errors
    assert len(errors) == 1, [str(e) for e in errors]
    error = errors[0]
    assert (error.line, error.column) == (int(line), int(column)), str(error)
    assert fragment in str(error), str(error)
    printed = str(error)
    assert printed.startswith(f"rules/{path.name}:{line}:{column} ")
    assert "\n" not in printed and "Traceback" not in printed
    rule_id = re.search(r"- id: ([a-z0-9_-]+)\n", text)
    if error.rule_id is not None and rule_id:
        assert f"[{error.rule_id}]" in printed


def test_errors_of_a_whole_set_are_gathered_not_stopped_at_the_first() -> None:
    texts = {f"rules/{p.name}": p.read_text(encoding="utf-8") for p in FILES}
    with pytest.raises(RuleSetError) as raised:
        compile_texts(texts, env={})
    assert {e.file for e in raised.value.errors} == set(texts)


def test_a_value_from_the_environment_is_never_shown_in_an_error() -> None:
    text = "rules:\n  - id: r\n    on: lead.created\n    when:\n      field: lead.x\n      gte: ${SECRET}\n"
    with pytest.raises(RuleSetError) as raised:
        compile_texts({"rules/r.yaml": text}, env={"SECRET": "hunter2-not-a-number"})
    assert "gte expects a number" in str(raised.value)
    assert "hunter2" not in str(raised.value)
