"""Quick edits keep a user's file byte for byte outside the edited spot, and what they write loads and passes.

The property-style cases run every edit over the example rules, the starters and a set of
awkwardly written files (comments everywhere, CRLF, 4-space indentation, lists at column 0,
no final line break, Vietnamese text) and check the result against the loader and compiler.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine.rules.compiler import compile_texts
from engine.rules.editing import EditRefused, add_test, new_test, set_enabled
from engine.rules.testing import check_test, simulate
from engine.rules.yaml_loader import load_yaml

ROOT = Path(__file__).resolve().parents[2]
HANA_SAMPLE = {
    "application": {"id": "dbd9a5f7-b3c4-45bb-a8eb-2b8e10bff8c2"},
    "lead": {
        "id": {"nomalizeData": "e734c76a-52ca-44f0-a21e8e1fe627c308", "rawData": "e734c76a-52ca-44f0-a21e8e1fe627c308"},
        "baseName": {"nomalizeData": "Toan Truyen", "rawData": "Toan Truyen"},
        "baseBirthday": {"nomalizeData": "14-09-2020", "rawData": "2020-09-13T17:00:00.000Z"},
        "baseSourceInput": {"nomalizeData": ["Youtube", "Sendo"], "rawData": ["Youtube", "Sendo"]},
        "basePhonenumber": {"nomalizeData": "0978712200", "rawData": "0978712200"},
        "cf_string_ghi_chu": {"nomalizeData": "Khách khiếu nại về đơn hàng", "rawData": "Khách khiếu nại về đơn hàng"},
    },
    "conversation": {"conversationUrl": "https://bot.hana.ai/apps/dbd9a5f7/chats/5e6f3f81"},
}  # fmt: skip

COMMENTS_EVERYWHERE = """\
# top comment
rules:   # the rules
# between
  - id: first   # the first
    # before on
    on: lead.created  # on
    enabled: true     # kept on purpose
    then:
      - log: "hi # not a comment"   # trailing

  # second rule
  - name: second, name first
    id: second
    on: [lead.updated]
    # no enabled key
tests:   # the tests
  - name: first fires
    event: lead.created
    payload: {lead: {id: L}}
    expect: {matched: [first]}
# trailing comment
"""
FOUR_SPACES = """\
rules:
    -   id: four
        on: lead.created
        when:
            -   field: lead.baseName
                contains: An
        then:
            -   log: four
    -   id: four-b
        on: lead.updated
"""
LIST_AT_ZERO = """\
rules:
- id: zero
  on: lead.created
  then:
  - log: zero
- id: zero-two
  on: lead.updated
tests:
- name: zero fires
  event: lead.created
  payload:
    lead: {id: L}
  expect:
    matched: [zero]
"""
DASH_ALONE = "rules:\n  -\n    id: alone\n    on: lead.created\n  - id: other\n    on: lead.updated\n"
VIETNAMESE = """\
# Quy tắc cho khách hàng — ghi chú tiếng Việt
rules:
  - id: khach-vip   # khách VIP
    name: Khách hàng VIP từ Facebook
    description: "Gắn nhãn “VIP” cho khách có điểm ≥ 3"
    on: lead.created
    when:
      - field: lead.baseName
        contains: Hương
        ignore_accents: true
    then:
      - log: "Khách {{ lead.baseName }} đã được gắn nhãn"
"""
LAST_LINE_IS_ID = "rules:\n  - on: lead.created\n    id: last-line"
AWKWARD = {"comments": COMMENTS_EVERYWHERE, "four-spaces": FOUR_SPACES, "list-at-zero": LIST_AT_ZERO,
           "dash-alone": DASH_ALONE, "vietnamese": VIETNAMESE, "last-line-is-id": LAST_LINE_IS_ID}  # fmt: skip


def _files() -> dict[str, str]:
    files = {p.stem: p.read_text(encoding="utf-8") for p in sorted((ROOT / "rules").glob("*.yaml"))}
    files |= {f"starter-{p.stem}": p.read_text(encoding="utf-8")
              for p in sorted((ROOT / "engine" / "rules" / "starters").glob("*.yaml"))}  # fmt: skip
    files |= AWKWARD
    files |= {f"{name}-crlf": text.replace("\n", "\r\n") for name, text in list(files.items())}
    files |= {f"{name}-no-final-break": text.rstrip("\r\n") for name, text in list(files.items())}
    return files


FILES = _files()


def data(text: str) -> Any:
    return load_yaml(text, {}).value


def same(a: Any, b: Any) -> bool:
    """Equal with types: `true` is not `1`, `1.0` is not `1`."""
    return json.dumps(a, sort_keys=True, ensure_ascii=False) == json.dumps(b, sort_keys=True, ensure_ascii=False)


def rule_ids(text: str) -> list[str]:
    return [rule["id"] for rule in data(text)["rules"]]


def without_enabled(text: str, rule_id: str) -> Any:
    value = data(text)
    for rule in value["rules"]:
        if rule["id"] == rule_id:
            rule.pop("enabled", None)
    return value


def inserted(before: str, after: str) -> str:
    """What `after` adds to `before`, asserting it only adds (one block, nothing else touched)."""
    prefix = 0
    while prefix < len(before) and before[prefix] == after[prefix]:
        prefix += 1
    suffix = 0
    while suffix < len(before) - prefix and before[-1 - suffix] == after[-1 - suffix]:
        suffix += 1
    assert prefix + suffix == len(before), "the edit changed the file's own text"
    return after[prefix : len(after) - suffix]


def assert_line_endings_kept(before: str, after: str) -> None:
    if "\r\n" in before:
        assert after.count("\n") == after.count("\r\n")
    else:
        assert "\r" not in after


@pytest.mark.parametrize(("name", "rule_id"), [(n, r) for n, t in FILES.items() for r in rule_ids(t)])
def test_set_enabled_edits_one_value_and_round_trips(name: str, rule_id: str) -> None:
    text = FILES[name]
    original = data(text)
    for enabled in (False, True, False):
        edited = set_enabled(text, rule_id, enabled)
        assert set_enabled(edited, rule_id, enabled) == edited  # idempotent
        assert same(without_enabled(edited, rule_id), without_enabled(text, rule_id))
        rule_set = compile_texts({f"rules/{name}.yaml": edited})
        rule = rule_set.rule(rule_id)
        assert rule is not None and rule.enabled is enabled
        assert_line_endings_kept(text, edited)
        before_rule = next(r for r in data(text)["rules"] if r["id"] == rule_id)
        if "enabled" not in before_rule and enabled is False:
            added = inserted(text, edited)
            assert added.strip() == "enabled: false" and added.count("enabled") == 1
        elif "enabled" not in before_rule:
            assert edited == text  # absent already means enabled
        else:
            old, new = text.splitlines(), edited.splitlines()
            changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
            assert len(changed) <= 1
            for a, b in changed:
                assert re.sub(r"enabled:\s*\S+", "", a).strip() == re.sub(r"enabled:\s*\S+", "", b).strip()
        text = edited
    assert same(without_enabled(text, rule_id), without_enabled(FILES[name], rule_id))
    assert not same(data(text), original) or "enabled" in next(r for r in original["rules"] if r["id"] == rule_id)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("rules:\n- id: a\n  on: lead.created   # c\n  enabled:   true   # why\n",
         "rules:\n- id: a\n  on: lead.created   # c\n  enabled:   false  # why\n"),
        ("rules:\n  - id: a\n    enabled:\n    on: lead.created\n",
         "rules:\n  - id: a\n    enabled: false\n    on: lead.created\n"),
        ('rules:\n  - id: a\n    enabled: "true" # q\n    on: lead.created\n',
         "rules:\n  - id: a\n    enabled: false  # q\n    on: lead.created\n"),
        ("rules:\n- id: a  # the id\n  on: lead.created\n",
         "rules:\n- id: a  # the id\n  enabled: false\n  on: lead.created\n"),
        ("rules:\n    -   id: a\n        on: lead.created\n",
         "rules:\n    -   id: a\n        enabled: false\n        on: lead.created\n"),
        ("rules:\r\n  - id: a\r\n    on: lead.created",
         "rules:\r\n  - id: a\r\n    enabled: false\r\n    on: lead.created"),
        ("rules:\n  - on: lead.created\n    id: a", "rules:\n  - on: lead.created\n    id: a\n    enabled: false"),
    ],
)  # fmt: skip
def test_disabling_writes_exactly_this(before: str, after: str) -> None:
    assert set_enabled(before, "a", False) == after


def test_a_value_already_written_as_wanted_is_left_as_the_user_wrote_it() -> None:
    text = "rules:\n  - id: a\n    on: lead.created\n    enabled: False  # off until Monday\n"
    assert set_enabled(text, "a", False) == text
    assert set_enabled(text, "a", True) == text.replace("False", "true ")


@pytest.mark.parametrize(
    ("text", "rule_id", "fragment"),
    [
        ("rules:\n  - {id: flow, on: lead.created}\n", "flow", "written on one line"),
        ("rules: [{id: flow, on: lead.created}]\n", "flow", "`rules:` is written in flow style"),
        ("{rules: [{id: flow, on: lead.created}]}\n", "flow", "written in flow style"),
        ("rules:\n  - id: a\n    on: lead.created\n", "b", "there is no rule 'b'"),
        ("rules:\n  - id: a\n    on: lead.created\n  - id: a\n    on: lead.updated\n", "a", "written 2 times"),
        ("rules:\n  - id: a\n    enabled: {x: 1}\n", "a", "not a one-line value"),
        ("rules:\n  - id: a\n    on: [lead.created\n", "a", "not valid as it is"),
        ("tests: []\n", "a", "no `rules:` list"),
    ],
)
def test_set_enabled_refuses_rather_than_corrupting(text: str, rule_id: str, fragment: str) -> None:
    with pytest.raises(EditRefused) as refused:
        set_enabled(text, rule_id, False)
    assert fragment in str(refused.value)


def sample_test(text: str, name: str) -> dict[str, Any]:
    """What the console's "add this event as a test" writes: the event, and what the file's rules did with it."""
    rule_set = compile_texts({"rules/r.yaml": text})
    previous = {"lead": {"id": "e734c76a-52ca-44f0-a21e8e1fe627c308", "cf_string_ghi_chu": "Đã thanh toán hàng"}}
    results = simulate(rule_set, "lead.updated", HANA_SAMPLE, previous).results
    return new_test(name, "lead.updated", HANA_SAMPLE, previous=previous,
                    matched=[r.rule.id for r in results if r.matched],
                    not_matched=[r.rule.id for r in results if not r.matched])  # fmt: skip


@pytest.mark.parametrize("name", sorted(FILES))
def test_add_test_only_adds_and_the_new_test_passes(name: str) -> None:
    text = FILES[name]
    test = sample_test(text, "the sample lead — khách mẫu")
    edited = add_test(text, test)
    added = inserted(text, edited)
    assert "name: the sample lead — khách mẫu" in added  # written as is, not escaped
    assert_line_endings_kept(text, edited)
    assert same(data(edited)["tests"][-1], test)
    rule_set = compile_texts({f"rules/{name}.yaml": edited})
    assert len(rule_set.tests) == len(data(text).get("tests") or []) + 1
    outcome = check_test(rule_set, rule_set.tests[-1])
    assert outcome.passed, outcome.differences
    again = add_test(edited, {**test, "name": "again"})
    assert added in inserted(text, again) and same(data(again)["tests"][-2:], [test, {**test, "name": "again"}])


def test_the_sample_event_is_matched_by_the_example_complaint_rule() -> None:
    test = sample_test((ROOT / "rules" / "leads.yaml").read_text(encoding="utf-8"), "x")
    assert {"complaint-keyword", "normalize-phone-to-e164"} <= set(test["expect"]["matched"])


def test_a_new_test_is_indented_like_the_list_it_joins() -> None:
    test = new_test("t", "lead.created", {"lead": {"id": "L"}}, matched=["zero"])
    assert inserted(LIST_AT_ZERO, add_test(LIST_AT_ZERO, test)) == (
        "- name: t\n  event: lead.created\n  payload:\n    lead:\n      id: L\n  expect:\n    matched:\n      - zero\n"
    )
    assert "\n\ntests:\n    -   name: t\n        event: lead.created\n        payload:\n" in add_test(FOUR_SPACES, test)
    leads = (ROOT / "rules" / "leads.yaml").read_text(encoding="utf-8")
    assert inserted(leads, add_test(leads, test)).startswith("\n  - name: t\n    event: lead.created\n")  # a blank line


@pytest.mark.parametrize(
    ("before", "after_start"),
    [
        ("rules:\n  - id: a\n    on: lead.created\ntests:\n",
         "rules:\n  - id: a\n    on: lead.created\ntests:\n  - name: t\n"),
        ("rules:\n  - id: a\n    on: lead.created\ntests: []  # none yet\n",
         "rules:\n  - id: a\n    on: lead.created\ntests:  # none yet\n  - name: t\n"),
        ("tests: ~\nrules:\n- id: a\n  on: lead.created\n", "tests:\n- name: t\n"),
        ("", "tests:\n  - name: t\n"),
        ("# only a comment\n", "# only a comment\n\ntests:\n  - name: t\n"),
        ("  rules:\n    - id: a\n      on: lead.created",
         "  rules:\n    - id: a\n      on: lead.created\n\n  tests:\n    - name: t\n"),
    ],
)  # fmt: skip
def test_an_empty_or_missing_tests_list_becomes_a_block_list(before: str, after_start: str) -> None:
    test = new_test("t", "lead.deleted", {"lead": {"id": "L"}}, not_matched=["a"])
    edited = add_test(before, test)
    assert edited.startswith(after_start)
    assert same(data(edited)["tests"], [test])
    outcome = check_test(rule_set := compile_texts({"rules/r.yaml": edited}), rule_set.tests[0])
    assert outcome.passed, outcome.differences


TRICKY = {
    "on": "on", "no": "NO", "octal": "012", "phone": "0312345670", "time": "12:30", "exp": "1e5", "neg": "-.5",
    "true_text": "true", "empty": "", "nothing": None, "yes": True, "float": 1.0, "int": 3, "big": 10**30,
    "dollars": "${HOME} $$ $5 $${X}", "hash": "a # b", "colon": "a: b", "dash": "- x", "quotes": "it's \"q\"",
    "lines": "line 1\nline 2\n", "crlf": "a\r\nb", "padded": "  padded  ", "tab": "a\tb", "long": "x " * 300,
    "vi": "Khách KHIẾU NẠI về đơn hàng 1.000.000 ₫", "emoji": "🙂", "separator": "a\u2028b", "list": [], "map": {},
    "nested": [{"a": [1, "2", None]}], "jinja": "{{ lead.baseName }}", "key with: colon": 1,
}  # fmt: skip


@pytest.mark.parametrize("name", ["leads", "comments-crlf", "list-at-zero-no-final-break"])
def test_payload_values_come_back_exactly_as_they_were(name: str) -> None:
    test = new_test("tricky", "lead.updated", {"lead": {"id": "L", **TRICKY}}, previous={"lead": {"id": "L"}})
    edited = add_test(FILES[name], test)
    assert same(data(edited)["tests"][-1], test)
    compile_texts({"rules/r.yaml": edited})


@pytest.mark.parametrize(
    ("text", "test", "fragment"),
    [
        ("{rules: []}\n", new_test("t", "lead.created", {}), "flow style"),
        ("tests: [{name: a, event: lead.created, payload: {}, expect: {}}]\n", new_test("t", "lead.created", {}),
         "`tests:` is written in flow style"),
        ("tests: {a: 1}\n", new_test("t", "lead.created", {}), "`tests:` is not a list"),
        ("rules: [\n", new_test("t", "lead.created", {}), "not valid as it is"),
        ("", {"name": "t", "event": "lead.created", "payload": {}}, "'expect' is a required property"),
        ("", new_test("t", "lead.*", {}), "one concrete event type"),
        ("", new_test("t", "lead.created", {"lead": {1: "x"}}), "its keys must be text"),
        ("", {**new_test("t", "lead.created", {}), "extra": 1}, "'extra' was unexpected"),
    ],
)  # fmt: skip
def test_add_test_refuses_what_it_cannot_write_faithfully(text: str, test: dict[str, Any], fragment: str) -> None:
    with pytest.raises(EditRefused) as refused:
        add_test(text, test)
    assert fragment in str(refused.value)


def test_a_one_line_rule_can_still_get_a_test() -> None:
    text = "rules:\n  - {id: flow, on: lead.created}\n"
    edited = add_test(text, new_test("t", "lead.created", {"lead": {"id": "L"}}, matched=["flow"]))
    rule_set = compile_texts({"rules/r.yaml": edited})
    assert edited.startswith(text) and check_test(rule_set, rule_set.tests[0]).passed
