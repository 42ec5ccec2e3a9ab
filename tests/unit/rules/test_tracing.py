"""Traced values are cut (SPEC §8): a trace stays near the size of its event, the verdict sees everything."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from engine.hana import normalize
from engine.rules.compiler import compile_texts
from engine.rules.tracing import CUT, TRACE_LIMIT, RecordingTracer, cut
from engine.rules.values import MISSING

SHOP = "dbd9a5f7-b3c4-45bb-a8eb-2b8e10bff8c2"


def compact(value: Any) -> str:
    """Strict JSON, as a trace is stored: NaN or Infinity would make it fail here."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def test_a_long_text_keeps_its_first_256_characters_and_notes_its_length() -> None:
    text = "ab" * 450_000
    value, length = cut(text)
    assert value == text[:256] + "…"
    assert length == 900_000


def test_a_long_list_keeps_leading_items_then_a_marker_and_stays_a_list() -> None:
    items = [f"item {i}" for i in range(10_000)]
    value, length = cut(items)
    assert isinstance(value, list)
    assert value[-1] == CUT
    kept = value[:-1]
    assert kept == items[: len(kept)] and len(kept) > 10
    assert len(compact(value)) <= TRACE_LIMIT
    assert length == len(compact(items))


def test_a_nested_mapping_keeps_leading_keys_each_cut_and_a_marker_key() -> None:
    nested = {"profile": {"note": "x" * 5_000, "tags": list(range(1_000))}, "score": 4, "later": "y" * 300}
    value, length = cut(nested)
    assert length == len(compact(nested))
    assert len(compact(value)) <= TRACE_LIMIT
    assert list(value)[-1] == CUT  # later keys are left out, and said to be
    profile = value["profile"]
    assert isinstance(profile, dict)
    assert profile["note"].startswith("xxx") and profile["note"].endswith(CUT)
    assert "score" not in value


def test_a_list_holding_one_huge_text_shows_the_start_of_that_text() -> None:
    value, length = cut(["Youtube " * 100_000])
    assert isinstance(value, list) and value[0].startswith("Youtube Youtube") and value[0].endswith(CUT)
    assert len(compact(value)) <= TRACE_LIMIT and length is not None


@pytest.mark.parametrize(
    "value",
    [
        "x" * 256,
        "Hương",
        "",
        ["Youtube", "Sendo"],
        {"changed": True, "from": None, "to": "actived"},
        [str(i) for i in range(40)],  # 40 short items: 240 characters of JSON
        4,
        1.09,
        True,
        None,
    ],
)
def test_values_of_256_characters_or_less_are_kept_whole_with_their_type(value: Any) -> None:
    assert cut(value) == (value, None)


def test_the_limit_counts_characters_not_bytes() -> None:
    text = "ễ" * 256  # 768 bytes in UTF-8, 256 characters
    assert cut(text) == (text, None)
    assert cut(text + "ễ") == (text + CUT, 257)


@pytest.mark.parametrize(
    "value",
    [
        [math.nan, math.inf, -math.inf],
        {"n": math.nan, "deep": [[["\x00" * 2_000]]], 3: (1, 2)},
        ['\n"\\' * 5_000, "tail"],
        [{"k" * 1_000: 1}],
        MISSING,
        object(),
    ],
)
def test_the_cut_value_is_always_strict_json_within_the_limit(value: Any) -> None:
    cut_value, _ = cut(value)
    assert len(compact(cut_value)) <= TRACE_LIMIT + 1


def test_the_tracer_records_lengths_only_beside_what_it_cut() -> None:
    tracer = RecordingTracer()
    tracer.condition("when/0", False, "x" * 1_000, "y" * 300, error="could not evaluate: " + "z" * 5_000)
    tracer.condition("when/1", True, ["Youtube", "Sendo"], "Sendo")
    tracer.condition("when/2", False)
    first, second, third = tracer.conditions
    assert first["value"] == "x" * 256 + CUT and first["value_length"] == 1_000
    assert first["expected"] == "y" * 256 + CUT and first["expected_length"] == 300
    assert len(first["error"]) < 1_100
    assert second == {"path": "when/1", "result": True, "value": ["Youtube", "Sendo"], "expected": "Sendo"}
    assert third == {"path": "when/2", "result": False, "value": None, "expected": None, "missing": True}


def test_twenty_rules_on_a_900_kb_field_make_a_trace_of_a_few_kb_with_the_same_verdicts() -> None:
    big = "chào " * 180_000 + "needle"  # 900 KB; the needle is far beyond what the trace keeps
    texts = []
    for i in range(20):
        texts.append(f"""
          - id: big-{i}
            on: lead.created
            vars:
              note: "{{{{ lead.cf_string_note[:200000] }}}}"  # a template renders at most 256 KiB
            when:
              - {{field: lead.cf_string_note, contains: needle}}
              - {{path: "$.lead.cf_string_note.rawData", {"ends_with" if i % 2 else "starts_with"}: needle}}""")
    rule_set = compile_texts({"rules/big.yaml": "rules:" + "".join(texts)})
    body = {"application": {"id": SHOP}, "lead": {"id": "L1", "cf_string_note": {"nomalizeData": big, "rawData": big}}}
    context = normalize(body, event_id="e", event_type="lead.created", received_at="x").context
    traced = rule_set.evaluate(context, body=body, trace=True)
    context = normalize(body, event_id="e", event_type="lead.created", received_at="x").context
    untraced = rule_set.evaluate(context, body=body, trace=False)

    matched = [f"big-{i}" for i in range(1, 20, 2)]  # ends_with: needle; the others start with "chào"
    assert [r.rule.id for r in traced.matched] == [r.rule.id for r in untraced.matched] == matched
    assert traced.results[1].vars["note"] == big[:200_000]  # conditions and actions saw whole values
    record = traced.as_json()
    assert len(compact(record)) < 20 * 2 * 2_000  # under 2 KB per condition, vars and all
    rule = record["rules"][1]
    assert rule["vars"] == {"note": big[:256] + CUT}
    field, path = rule["conditions"]
    assert field["result"] is True and field["value"] == big[:256] + CUT and field["value_length"] == len(big)
    assert path["result"] is True and isinstance(path["value"], list) and path["value"][0].endswith(CUT)
    assert path["value_length"] == len(compact([big]))
