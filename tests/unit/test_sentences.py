# ruff: noqa: E501 - a table of sentences reads best one case per line
"""Every condition kind, operator and modifier as a sentence, in English and in Vietnamese.

The conditions are compiled and evaluated for real (simulate), so the sentence is built from
the trace the evaluation wrote, as the console, the CLI and the admin API build it.
"""

from __future__ import annotations

import json

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from engine.rules.compiler import compile_texts
from engine.rules.explain import first_failure, fold_negations, in_reading_order
from engine.rules.testing import simulate
from engine.sentences import TRANSLATIONS, describe, language_of

SHOP = "5f3b9a7c2e1d4b6a8c0e9f12"

CASES = [
    # (condition, lead attributes, English, Vietnamese)
    ("{field: lead.tier, equals: VIP}", {"tier": "VIP"},
     "lead.tier equals “VIP”: saw “VIP” ✓", "lead.tier bằng “VIP”: thấy “VIP” ✓"),
    ("{field: lead.tier, not_equals: VIP}", {"tier": "VIP"},
     "lead.tier does not equal “VIP”: saw “VIP” ✗", "lead.tier khác “VIP”: thấy “VIP” ✗"),
    ("{field: lead.tier, in: [VIP, Gold]}", {"tier": "Gold"},
     "lead.tier is one of [VIP, Gold]: saw “Gold” ✓", "lead.tier là một trong [VIP, Gold]: thấy “Gold” ✓"),
    ("{field: lead.tier, not_in: [VIP, Gold]}", {"tier": "Gold"},
     "lead.tier is none of [VIP, Gold]: saw “Gold” ✗", "lead.tier không thuộc [VIP, Gold]: thấy “Gold” ✗"),
    ("{field: lead.note, contains: hoàn tiền}", {"note": "xin hoàn tiền"},
     "lead.note contains “hoàn tiền”: saw “xin hoàn tiền” ✓", "lead.note có chứa “hoàn tiền”: thấy “xin hoàn tiền” ✓"),
    ("{field: lead.note, not_contains: spam}", {"note": "ok"},
     "lead.note does not contain “spam”: saw “ok” ✓", "lead.note không chứa “spam”: thấy “ok” ✓"),
    ("{field: lead.src, contains_any: [Youtube, Facebook Ads]}", {"src": ["Youtube", "Sendo"]},
     "lead.src contains one of [Youtube, Facebook Ads]: saw [Youtube, Sendo] ✓",
     "lead.src chứa một trong [Youtube, Facebook Ads]: thấy [Youtube, Sendo] ✓"),
    ("{field: lead.src, contains_all: [Youtube, Sendo]}", {"src": ["Youtube"]},
     "lead.src contains all of [Youtube, Sendo]: saw [Youtube] ✗", "lead.src chứa tất cả [Youtube, Sendo]: thấy [Youtube] ✗"),
    ("{field: lead.phone, starts_with: '09'}", {"phone": "0912"},
     "lead.phone starts with “09”: saw “0912” ✓", "lead.phone bắt đầu bằng “09”: thấy “0912” ✓"),
    ("{field: lead.email, ends_with: '@gmail.com'}", {"email": "a@b.vn"},
     "lead.email ends with “@gmail.com”: saw “a@b.vn” ✗", "lead.email kết thúc bằng “@gmail.com”: thấy “a@b.vn” ✗"),
    ("{field: lead.phone, matches: '^0[0-9]{9}$'}", {"phone": "0978712200"},
     "lead.phone matches the pattern “^0[0-9]{9}$”: saw “0978712200” ✓",
     "lead.phone khớp với mẫu “^0[0-9]{9}$”: thấy “0978712200” ✓"),
    ("{field: lead.phone, not_matches: '^\\+84'}", {"phone": "+84978"},
     "lead.phone does not match the pattern “^\\+84”: saw “+84978” ✗",
     "lead.phone không khớp với mẫu “^\\+84”: thấy “+84978” ✗"),
    ("{field: lead.score, gt: 3}", {"score": 4}, "lead.score is greater than 3: saw 4 ✓", "lead.score lớn hơn 3: thấy 4 ✓"),
    ("{field: lead.score, gte: 3}", {"score": 2}, "lead.score is at least 3: saw 2 ✗", "lead.score từ 3 trở lên: thấy 2 ✗"),
    ("{field: lead.score, lt: 3}", {"score": 2}, "lead.score is less than 3: saw 2 ✓", "lead.score nhỏ hơn 3: thấy 2 ✓"),
    ("{field: lead.score, lte: 3}", {"score": 3}, "lead.score is at most 3: saw 3 ✓", "lead.score không quá 3: thấy 3 ✓"),
    ("{field: lead.score, between: [1, 5]}", {"score": 9},
     "lead.score is between 1 and 5: saw 9 ✗", "lead.score nằm trong khoảng từ 1 đến 5: thấy 9 ✗"),
    ("{field: lead.email, exists: true}", {},
     "lead.email has a value: it has no value ✗", "lead.email có giá trị: chưa có giá trị ✗"),
    ("{field: lead.email, exists: false}", {},
     "lead.email has no value: it has no value ✓", "lead.email chưa có giá trị: chưa có giá trị ✓"),
    ("{field: lead.note, empty: true}", {"note": ""},
     "lead.note is empty: saw “” ✓", "lead.note để trống: thấy “” ✓"),
    ("{field: lead.note, empty: false}", {"note": ""},
     "lead.note is not empty: saw “” ✗", "lead.note không để trống: thấy “” ✗"),
    ("{field: lead.seen, before: '2026-01-01'}", {"seen": "2025-12-31"},
     "lead.seen is before “2026-01-01”: saw “2025-12-31” ✓", "lead.seen trước “2026-01-01”: thấy “2025-12-31” ✓"),
    ("{field: lead.seen, after: '2026-01-01'}", {"seen": "2025-12-31"},
     "lead.seen is after “2026-01-01”: saw “2025-12-31” ✗", "lead.seen sau “2026-01-01”: thấy “2025-12-31” ✗"),
    ("{field: lead.seen, within: 7d}", {"seen": "2020-01-01"},
     "lead.seen is within the last “7d”: saw “2020-01-01” ✗", "lead.seen nằm trong “7d” vừa qua: thấy “2020-01-01” ✗"),
    ("{field: lead.name, equals: huong, ignore_case: true, ignore_accents: true}", {"name": "Hương"},
     "lead.name equals “huong” (ignoring case and accents): saw “Hương” ✓",
     "lead.name bằng “huong” (không phân biệt hoa thường và dấu): thấy “Hương” ✓"),
    ("{field: lead.name, equals: HUONG, ignore_case: true}", {"name": "huong"},
     "lead.name equals “HUONG” (ignoring case): saw “huong” ✓",
     "lead.name bằng “HUONG” (không phân biệt hoa thường): thấy “huong” ✓"),
    ("{field: lead.name, equals: Huong, ignore_accents: true}", {"name": "Hương"},
     "lead.name equals “Huong” (ignoring accents): saw “Hương” ✓",
     "lead.name bằng “Huong” (không phân biệt dấu): thấy “Hương” ✓"),
    ("{path: '$.lead.tags[*]', equals: hot}", {"tags": ["cold", "hot"]},
     "$.lead.tags[*] equals “hot”: saw [cold, hot] ✓", "$.lead.tags[*] bằng “hot”: thấy [cold, hot] ✓"),
    ("{template: '{{ lead.name | length > 3 }}'}", {"name": "Toàn"},
     "the template “{{ lead.name | length > 3 }}” is true: the template gave true ✓",
     "mẫu “{{ lead.name | length > 3 }}” cho kết quả đúng: mẫu cho ra true ✓"),
]  # fmt: skip


def evaluate(condition: str, attributes: dict, event_type: str = "lead.created", previous: dict | None = None):
    rule_set = compile_texts({"rules/t.yaml": f"rules:\n  - id: r\n    on: {event_type}\n    when:\n      - {condition}\n"})
    body = {"application": {"id": SHOP}, "lead": {"id": "L1", **attributes}}
    return simulate(rule_set, event_type, body, previous).as_json()["rules"][0]["conditions"]


@pytest.mark.parametrize(("condition", "attributes", "english", "vietnamese"), CASES, ids=[c[0] for c in CASES])
def test_each_operator_reads_as_a_sentence_in_both_languages(condition, attributes, english, vietnamese) -> None:
    [entry] = evaluate(condition, attributes)
    assert describe(entry, "en").text == english
    assert describe(entry, "vi").text == vietnamese


def test_changed_from_to_and_unchanged() -> None:
    previous = {"lead": {"stage": "Mới"}}
    [moved] = evaluate("{changed: lead.stage, from: Mới, to: Đã chốt}", {"stage": "Đã chốt"}, "lead.updated", previous)
    assert describe(moved, "en").text == "lead.stage changed from “Mới” to “Đã chốt”: saw “Mới” → “Đã chốt” ✓"
    assert describe(moved, "vi").text == "lead.stage đổi từ “Mới” sang “Đã chốt”: thấy “Mới” → “Đã chốt” ✓"
    [still] = evaluate("{changed: lead.stage, to: Đã chốt}", {"stage": "Mới"}, "lead.updated", previous)
    assert describe(still, "en").text == "lead.stage changed to “Đã chốt”: it did not change in this event (now “Mới”) ✗"
    assert describe(still, "vi").text == "lead.stage đổi thành “Đã chốt”: không thay đổi trong sự kiện này (hiện là “Mới”) ✗"
    [any_change] = evaluate("{changed: lead.stage}", {"stage": "Mới"}, "lead.updated", previous)
    assert describe(any_change, "vi").claim == "lead.stage đã thay đổi"


def test_groups_read_before_their_members_and_the_first_real_failure_is_blamed() -> None:
    conditions = evaluate("{any: [{field: lead.a, equals: x}, {not: {field: lead.b, exists: true}}]}", {"b": 1})
    ordered = [describe(c, "vi") for c in in_reading_order(conditions)]
    assert [(s.depth, s.claim) for s in ordered] == [
        (0, "ít nhất một điều kiện dưới đây đúng"),
        (1, "lead.a bằng “x”"),
        (1, "điều kiện dưới đây không đúng"),
        (2, "lead.b có giá trị"),
    ]
    assert describe(first_failure(conditions), "en").text == "lead.a equals “x”: it has no value ✗"


def test_an_evaluation_error_and_an_old_trace_still_read() -> None:
    [broken] = evaluate("{template: '{{ lead.n / 0 }}'}", {"n": 1})
    assert describe(broken, "en").seen.startswith("could not be evaluated: ")
    old = {"path": "when/0", "result": False, "value": 2, "expected": 3}  # written before 0.3: no `op`
    assert describe(old, "vi").text == "điều kiện when/0: thấy 2 ✗"


def test_the_language_is_taken_from_what_the_reader_accepts() -> None:
    assert [language_of(v) for v in ("vi-VN", "vi_VN.UTF-8", "en-US", "fr", None, "")] == ["vi", "vi", "en", "en", "en", "en"]


def test_every_message_of_the_code_and_the_console_has_a_vietnamese_translation() -> None:
    with open(TRANSLATIONS / "vi" / "LC_MESSAGES" / "messages.po", "rb") as file:
        catalogue = read_po(file)
    source = TRANSLATIONS.parent
    method_map = [("**.py", "python"), ("web/console/templates/**.html", "jinja2")]
    found = {message for _, _, message, _, _ in extract_from_dir(str(source), method_map) if isinstance(message, str)}
    missing = sorted(m for m in found if not (catalogue.get(m) and catalogue.get(m).string))
    assert missing == [], "run: pybabel extract -F babel.cfg … and translate:\n" + json.dumps(missing, indent=1)


def test_the_compiled_catalogue_matches_its_source() -> None:
    """The .mo the code reads is the .po translators edit (run `pybabel compile -d engine/translations`)."""
    from babel.support import Translations

    with open(TRANSLATIONS / "vi" / "LC_MESSAGES" / "messages.po", "rb") as file:
        catalogue = read_po(file)
    compiled = Translations.load(str(TRANSLATIONS), ["vi"])
    def compiled_text(message):  # a plural message's id and text are (singular, plural) pairs
        if isinstance(message.id, tuple):
            return compiled.ngettext(message.id[0], message.id[1], 1), message.string[0]
        return compiled.gettext(message.id), message.string

    stale = [m.id for m in catalogue if m.id and compiled_text(m)[0] != compiled_text(m)[1]]
    assert stale == []


def test_not_over_one_test_reads_as_one_line_with_the_verdict_of_the_not() -> None:
    conditions = evaluate("{not: {field: lead.tier, equals: VIP}}", {})
    [line] = fold_negations(conditions)
    assert describe(line, "en").text == "lead.tier does not equal “VIP”: it has no value ✓"
    assert describe(line, "vi").text == "lead.tier khác “VIP”: chưa có giá trị ✓"
    failing = evaluate("{not: {field: lead.tier, equals: VIP}}", {"tier": "VIP"})
    assert describe(first_failure(failing), "en").text == "lead.tier does not equal “VIP”: saw “VIP” ✗"
    no_word = evaluate("{not: {field: lead.n, gt: 5}}", {})  # no word for its opposite: said in full
    assert describe(fold_negations(no_word)[0], "en").claim == "it is not true that lead.n is greater than 5"
    grouped = evaluate("{not: {any: [{field: lead.a, equals: x}]}}", {})
    assert [describe(c, "en").claim for c in fold_negations(grouped)][0] == "the following does not hold"
