"""A traced condition as the parts of its sentence: what was tested, how, against what, what was seen.

Pure: no language here. `engine/sentences.py` puts the parts into words in the reader's
language (console, CLI, admin API). The parts come from the trace entry the evaluation
wrote (`op`, `field`/`jsonpath`, `modifiers`, see conditions.py), so the words describe
the condition that was evaluated, even after its rule changed or went away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Conditions that only combine others: their sentence has no subject and no value seen.
GROUPS = frozenset(("all", "any", "not"))


@dataclass(frozen=True)
class Explanation:
    op: str  # an operator name, "changed", "template", "all", "any", "not", or "" (a trace older than 0.3)
    subject: str  # lead.baseName, a JSONPath, or "" (groups, templates)
    subject_kind: str  # "field", "jsonpath" or ""
    operand: Any  # what the rule compares with (for `changed`: {from?, to?}; a template: its source)
    seen: Any  # the value seen (for `changed`: {changed, from, to}); None for groups
    missing: bool  # nothing was there to see
    result: bool
    modifiers: tuple[str, ...]
    error: str | None
    depth: int  # how deep in all/any/not it sits (0: directly under when:)
    path: str  # the trace path, when/1/any/0
    cut: bool  # the value seen or the operand was shortened for the trace


def explain(entry: dict[str, Any]) -> Explanation:
    """The parts of one trace entry (any shape: old traces and damaged records give what they can)."""
    expected = entry.get("expected")
    op = str(entry.get("op") or (expected if isinstance(expected, str) and expected in GROUPS else ""))
    if "field" in entry:
        subject, kind = str(entry["field"]), "field"
    elif "jsonpath" in entry:
        subject, kind = str(entry["jsonpath"]), "jsonpath"
    else:
        subject, kind = "", ""
    path = str(entry.get("path") or "")
    return Explanation(
        op=op, subject=subject, subject_kind=kind, operand=None if op in GROUPS else expected,
        seen=None if op in GROUPS else entry.get("value"), missing=bool(entry.get("missing")),
        result=bool(entry.get("result")), modifiers=tuple(entry.get("modifiers") or ()),
        error=entry.get("error"), depth=sum(part in GROUPS for part in path.split("/")[2:]), path=path,
        cut="value_length" in entry or "expected_length" in entry,
    )  # fmt: skip


def in_reading_order(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A group before its members (the trace records it after them, once they are judged)."""

    def key(entry: dict[str, Any]) -> tuple[tuple[int, int | str], ...]:
        return tuple((0, int(part)) if part.isdigit() else (1, part) for part in str(entry.get("path", "")).split("/"))

    return sorted(conditions, key=key)


def first_failure(conditions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The condition to blame when a rule did not fire: the first failed test that is not a group
    (a group fails because one of its members did, and the member says why)."""
    for entry in conditions:
        if not entry.get("result") and explain(entry).op not in GROUPS:
            return entry
    return next((entry for entry in conditions if not entry.get("result")), None)
