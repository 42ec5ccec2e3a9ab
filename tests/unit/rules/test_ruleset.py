"""Rule set semantics: matching, order, stop, scoping, vars, changes, JSONPath, traces."""

from __future__ import annotations

import textwrap

import pytest

from engine.rules.compiler import compile_texts
from engine.rules.testing import simulate
from tests.helpers import sample

SHOP = "dbd9a5f7-b3c4-45bb-a8eb-2b8e10bff8c2"


def rules(yaml: str):
    return compile_texts({"rules/test.yaml": textwrap.dedent(yaml)})


def lead(**attributes: object) -> dict:
    return {"application": {"id": SHOP}, "lead": {"id": "L1", **attributes}}


def test_sample_matches_the_example_rule_of_the_spec() -> None:
    rule_set = rules("""
        rules:
          - id: vip-lead-from-youtube
            on: [lead.created, lead.updated]
            vars:
              score: "{{ lead.cf_number_kieu_so | default(0) }}"
            when:
              - field: lead.baseSourceInput
                contains: Youtube
              - any:
                  - field: lead.baseEmail
                    ends_with: "@gmail.com"
                  - field: lead.basePhonenumber
                    matches: "^(\\\\+?84|0)9"
              - not:
                  field: lead.baseName
                  contains: test
                  ignore_case: true
              - path: "$.lead.baseSourceInput.rawData[*]"
                contains: Sendo
              - template: "{{ lead.baseName | length > 3 }}"
            then:
              - hana_update:
                  lead:
                    id: "{{ lead.id }}"
                    cf_number_diem_viral: "{{ vars.score + 1 }}"
    """)
    result = simulate(rule_set, "lead.created", sample()).as_json()
    assert result["matched"] == ["vip-lead-from-youtube"]
    rule = result["rules"][0]
    paths = [c["path"] for c in rule["conditions"]]
    assert paths == ["when/0", "when/1/any/0", "when/1/any/1", "when/1", "when/2/not", "when/2", "when/3", "when/4"]
    by_path = {c["path"]: c for c in rule["conditions"]}
    assert by_path["when/1/any/0"] == {"path": "when/1/any/0", "result": False, "value": "toan.truyen@example.com",
                                       "expected": "@gmail.com", "op": "ends_with",
                                       "field": "lead.baseEmail"}  # fmt: skip
    assert by_path["when/3"]["value"] == ["Youtube", "Sendo"]
    assert rule["actions"] == [{"index": 0, "kind": "hana_update",
                                "payload": {"lead": {"id": "e734c76a-52ca-44f0-a21e8e1fe627c308",
                                                     "cf_number_diem_viral": 2.09}}}]  # fmt: skip


def test_priority_then_file_order_and_stop() -> None:
    rule_set = rules("""
        rules:
          - {id: low, on: lead.created}
          - {id: high, on: lead.created, priority: 10}
          - {id: also-low, on: lead.created}
          - {id: stopper, on: lead.created, priority: 5, stop: true}
    """)
    evaluation = simulate(rule_set, "lead.created", lead())
    assert [r.rule.id for r in evaluation.matched] == ["high", "stopper"]
    skipped = [r for r in evaluation.results if r.skipped]
    assert [r.rule.id for r in skipped] == ["low", "also-low"]
    assert "stopper" in skipped[0].skipped


@pytest.mark.parametrize(
    ("on", "event", "listens"),
    [("lead.*", "lead.deleted", True), ("*.created", "opportunity.created", True), ("*.created", "lead.updated", False),
     ("*", "opportunity.deleted", True), ("ticket.updated", "opportunity.updated", True),
     ("ticket.*", "lead.created", False)],
)  # fmt: skip
def test_event_wildcards_and_ticket_alias(on: str, event: str, listens: bool) -> None:
    rule_set = rules(f"rules:\n  - {{id: r, on: '{on}'}}\n")
    assert (rule_set.rule("r") in rule_set.by_event[event]) is listens


def test_disabled_rules_and_other_applications_do_not_run() -> None:
    rule_set = rules(f"""
        rules:
          - {{id: off, on: lead.created, enabled: false}}
          - {{id: mine, on: lead.created, applications: ["{SHOP}"]}}
          - {{id: theirs, on: lead.created, applications: [other-app]}}
    """)
    evaluation = simulate(rule_set, "lead.created", lead())
    assert [r.rule.id for r in evaluation.matched] == ["mine"]
    assert "off" not in [r.rule.id for r in evaluation.results]


def test_changed_from_to_uses_the_known_state() -> None:
    rule_set = rules("""
        rules:
          - id: activated
            on: lead.updated
            when:
              changed: lead.baseFunnelStatus
              from: new
              to: actived
    """)
    assert simulate(rule_set, "lead.updated", lead(baseFunnelStatus="actived"),
                    {"lead": {"baseFunnelStatus": "new"}}).matched  # fmt: skip
    assert not simulate(rule_set, "lead.updated", lead(baseFunnelStatus="actived"),
                        {"lead": {"baseFunnelStatus": "actived"}}).matched  # fmt: skip
    assert not simulate(rule_set, "lead.updated", lead(baseFunnelStatus="actived"),
                        {"lead": {"baseFunnelStatus": "lost"}}).matched  # fmt: skip
    # No known state: every attribute counts as changed from null, so `from: new` does not hold.
    assert not simulate(rule_set, "lead.updated", lead(baseFunnelStatus="actived")).matched


def test_an_update_sees_attributes_it_lacks_from_the_known_state() -> None:
    rule_set = rules("""
        rules:
          - id: named
            on: lead.updated
            when: {field: lead.baseName, equals: Hương}
    """)
    evaluation = simulate(rule_set, "lead.updated", lead(cf_x=1), {"lead": {"id": "L1", "baseName": "Hương"}})
    assert evaluation.matched


def test_vars_feed_conditions_and_actions_and_failures_are_traced() -> None:
    rule_set = rules("""
        rules:
          - id: scored
            on: lead.created
            vars:
              score: "{{ lead.points * 2 }}"
            when: {field: vars.score, gt: 5}
            then:
              - log: "score {{ vars.score }} for {{ lead.email }}"
    """)
    evaluation = simulate(rule_set, "lead.created", lead(points=3))
    result = evaluation.matched[0]
    assert result.vars == {"score": 6}
    assert result.actions[0].error and "'email' is missing" in result.actions[0].error
    missing = simulate(rule_set, "lead.created", lead())
    assert not missing.matched
    assert "vars.score" in missing.results[0].error


def test_absent_fields_and_odd_types_never_raise() -> None:
    rule_set = rules("""
        rules:
          - id: robust
            on: lead.updated
            when:
              - {field: lead.nothing.deeper, not_equals: x}
              - {field: lead.cf_number_x, not_matches: "^1"}
              - {field: lead.baseSourceInput, not_contains: Tiki}
              - {path: "$.lead.nowhere[*]", exists: false}
    """)
    assert simulate(rule_set, "lead.updated", lead(cf_number_x={"a": [1]}, baseSourceInput=5)).matched


def test_the_trace_and_the_verdict_come_from_the_same_closures() -> None:
    rule_set = rules("""
        rules:
          - id: any-of
            on: lead.created
            when:
              any:
                - {field: lead.a, equals: 1}
                - {field: lead.b, equals: 2}
    """)
    body = lead(a=0, b=2)
    traced = simulate(rule_set, "lead.created", body)
    from engine.hana import normalize

    context = normalize(body, event_id="e", event_type="lead.created", received_at="x").context
    untraced = rule_set.evaluate(context, body=body, trace=False)
    assert [r.rule.id for r in traced.matched] == [r.rule.id for r in untraced.matched] == ["any-of"]
    assert untraced.results[0].conditions is None  # no tracer, no cost


def test_rule_set_version_is_a_hash_of_the_files() -> None:
    one = compile_texts({"a.yaml": "rules: [{id: a, on: lead.created}]"})
    same = compile_texts({"a.yaml": "rules: [{id: a, on: lead.created}]"})
    other = compile_texts({"a.yaml": "rules: [{id: a, on: lead.updated}]"})
    assert one.version == same.version != other.version
