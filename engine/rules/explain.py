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
    negated: bool = False  # folded from `not: {one test}`: the claim reads "it is not true that …"


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
        cut="value_length" in entry or "expected_length" in entry, negated=bool(entry.get("negated")),
    )  # fmt: skip


def in_reading_order(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A group before its members (the trace records it after them, once they are judged)."""

    def key(entry: dict[str, Any]) -> tuple[tuple[int, int | str], ...]:
        return tuple((0, int(part)) if part.isdigit() else (1, part) for part in str(entry.get("path", "")).split("/"))

    return sorted(conditions, key=key)


def fold_negations(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`not` over one test, read as one line: "it is not true that X: saw … ✓" rather than a
    passing group above a red ✗ (right, but read as a failure). In reading order; a `not` over a
    group stays as it is."""
    ordered = in_reading_order(conditions)
    by_path = {str(entry.get("path")): entry for entry in ordered}
    folded: list[dict[str, Any]] = []
    skip: set[str] = set()
    for entry in ordered:
        path = str(entry.get("path"))
        if path in skip:
            continue
        inner = by_path.get(f"{path}/not")
        if explain(entry).op == "not" and inner is not None and explain(inner).op not in GROUPS:
            folded.append({**inner, "path": path, "result": entry.get("result"), "negated": True})
            skip.add(f"{path}/not")
            continue
        folded.append(entry)
    return folded


def first_failure(conditions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The condition to blame when a rule did not fire: the first failed test that is not a group
    (a group fails because one of its members did, and the member says why)."""
    folded = fold_negations(conditions)
    for entry in folded:
        if not entry.get("result") and explain(entry).op not in GROUPS:
            return entry
    return next((entry for entry in folded if not entry.get("result")), None)
