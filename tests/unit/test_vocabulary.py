"""The editor's completion words are the loader's own (engine/rules/vocabulary.py)."""

from __future__ import annotations

from engine.rules.compiler import compile_texts
from engine.rules.errors import RuleSetError
from engine.rules.vocabulary import vocabulary

OPERANDS = ("'x'", "[a, b]", "[1, 2]", "true", "5", "now", "1d")


def compiles(operator: str, operand: str) -> bool:
    text = f"rules:\n  - id: r\n    on: lead.created\n    when: {{field: lead.x, {operator}: {operand}}}\n"
    try:
        return bool(compile_texts({"r.yaml": text + "    then: [{log: hi}]\n"}).rules)
    except RuleSetError:
        return False


def test_every_operator_and_event_offered_compiles_in_a_rule() -> None:
    words = vocabulary()
    for operator in words["operators"]:  # each compiles with one operand or another
        assert any(compiles(operator, operand) for operand in OPERANDS), operator
    text = "rules:\n" + "".join(f"  - id: r{n}\n    on: '{event}'\n    then: [{{log: hi}}]\n"
                                for n, event in enumerate(words["events"]))  # fmt: skip
    assert len(compile_texts({"r.yaml": text}).rules) == len(words["events"])


def test_the_keys_a_business_user_types_first_are_offered_and_operators_are_not_keys() -> None:
    words = vocabulary()
    first = {"id", "name", "on", "when", "then", "field", "changed", "hana_update", "slack", "tests"}
    assert first <= set(words["keys"])
    assert not set(words["operators"]) & set(words["keys"])
    assert {"unaccent", "phone_e164", "vnd"} <= set(words["filters"])
