"""The loader checks each rule against the schema once while it stays the same (engine/rules/loader.py):
a file checked again at each pause in typing gets exactly the errors a first check gives."""

from __future__ import annotations

from engine.rules import loader
from engine.rules.loader import load_texts

GOOD = "  - id: r{n}\n    on: lead.created\n    when: {{field: lead.x, equals: {n}}}\n    then: [{{log: hi}}]\n"
BAD = "  - id: bad\n    on: lead.created\n    when: {field: lead.x, equalz: 1}\n    then: [{log: hi}]\n"


def errors_of(text: str) -> list[str]:
    return [str(error) for error in load_texts({"r.yaml": text}, {}).errors]


def test_a_rule_seen_valid_then_broken_is_reported_and_the_errors_match_a_first_check() -> None:
    loader._VALID["rules"].clear()
    valid = "rules:\n" + "".join(GOOD.format(n=n) for n in range(5))
    assert errors_of(valid) == []
    assert loader._VALID["rules"]  # remembered
    broken = valid + BAD
    again = errors_of(broken)
    loader._VALID["rules"].clear()
    assert again == errors_of(broken) and len(again) == 1 and "equalz" in again[0]
    assert again[0].startswith("r.yaml:24:")  # its own line, not an earlier rule's


def test_the_remembered_valid_rules_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(loader, "VALID_ENTRIES_KEPT", 3)
    loader._VALID["rules"].clear()
    assert errors_of("rules:\n" + "".join(GOOD.format(n=n) for n in range(10))) == []
    assert len(loader._VALID["rules"]) == 3
