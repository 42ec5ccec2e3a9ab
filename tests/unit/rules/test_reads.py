"""Warnings about attributes a rule reads that real events never carried (engine/rules/reads.py)."""

from __future__ import annotations

import textwrap

from engine.rules.compiler import compile_texts
from engine.rules.reads import entity_attribute, unseen_attributes

SHOP_A, SHOP_B = "shop-a", "shop-b"
SEEN = {SHOP_A: {"lead": {"id", "baseName", "cf_string_phan_loai_kh", "baseFunnelStatus"}}}


def rules(yaml: str):
    return compile_texts({"rules/vip.yaml": textwrap.dedent(yaml)})


def test_a_misspelt_attribute_warns_at_its_position_with_a_suggestion() -> None:
    rule_set = rules("""
        rules:
          - id: vip
            on: lead.updated
            when:
              - {field: lead.baseName, exists: true}
              - field: lead.cf_string_phan_loai
                equals: VIP
        """)
    [warning] = unseen_attributes(rule_set, SEEN)
    assert warning.as_json() == {
        "file": "rules/vip.yaml", "line": 7, "column": 9, "rule": "vip", "path": "when/1/field",
        "message": "lead.cf_string_phan_loai has never been seen in lead events; "
                   "did you mean lead.cf_string_phan_loai_kh?",
        "hint": warning.hint, "text": str(warning),
    }  # fmt: skip
    assert "hana-rules fields" in warning.hint


def test_changed_previous_raw_and_nested_fields_name_their_attribute() -> None:
    rule_set = rules("""
        rules:
          - id: funnel
            on: lead.updated
            when:
              any:
                - {changed: lead.baseFunelStatus}
                - {field: previous.lead.baseName, exists: true}
                - {field: raw.lead.diaChi.tinh, equals: Hà Nội}
                - {field: event.type, equals: lead.updated}
                - {field: vars.x, equals: 1}
            vars: {x: "{{ 1 }}"}
        """)
    found = [(w.line, w.path, w.message) for w in unseen_attributes(rule_set, SEEN)]
    assert found == [
        (7, "when/any/0/changed", "lead.baseFunelStatus has never been seen in lead events; "
                                  "did you mean lead.baseFunnelStatus?"),
        (9, "when/any/2/field", "lead.diaChi has never been seen in lead events"),
    ]  # fmt: skip


def test_no_data_for_an_entity_or_the_rules_applications_means_no_warning() -> None:
    rule_set = rules("""
        rules:
          - id: ticket
            on: opportunity.updated
            when: {field: opportunity.cf_x, exists: true}
          - id: shop-b-only
            on: lead.updated
            applications: [shop-b]
            when: {field: lead.cf_y, exists: true}
          - id: any-shop
            on: lead.updated
            when: {field: lead.cf_z, exists: true}
        """)
    assert unseen_attributes(rule_set, {}) == []
    assert [w.rule_id for w in unseen_attributes(rule_set, SEEN)] == ["any-shop"]
    # A rule of shop B only: shop A's names neither warn nor excuse it.
    seen = {**SEEN, SHOP_B: {"lead": {"cf_z"}}}
    assert [w.rule_id for w in unseen_attributes(rule_set, seen)] == ["shop-b-only"]


def test_a_name_seen_in_any_of_the_rules_applications_is_known() -> None:
    rule_set = rules("""
        rules:
          - id: both
            on: lead.updated
            applications: [shop-a, shop-b]
            when: {field: lead.cf_only_b, exists: true}
        """)
    assert unseen_attributes(rule_set, {**SEEN, SHOP_B: {"lead": ["cf_only_b"]}}) == []


def test_entity_attribute_reads_the_attribute_out_of_a_field_name() -> None:
    assert entity_attribute("lead.x") == ("lead", "x")
    assert entity_attribute("previous.opportunity.x.y") == ("opportunity", "x")
    assert entity_attribute("raw.lead.x") == ("lead", "x")
    assert entity_attribute("lead") is None
    assert entity_attribute("event.type") is None
    assert entity_attribute("lead.") is None
