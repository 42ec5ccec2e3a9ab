"""Bounds on what a rule author can write (issue 12, point 8): each is one error line a user can act on.

Loading: file size, number of values, nesting depth, the shape of a file, template
nesting, JSONPath length. Rendering: every render has a budget, and going over it
is a TemplateRenderError that says which limit, on the action of the rule.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from engine.hana import normalize
from engine.rules.compiler import compile_texts
from engine.rules.errors import RuleSetError
from engine.rules.templates import TemplateRenderError, compile_template
from engine.rules.testing import simulate

DEPTH_HINT = ("(a rule needs far fewer levels: list conditions under all:/any: instead of nesting them, or move deep "
              "data out of the rule file)")  # fmt: skip


def error_lines(text: str, name: str = "rules/r.yaml") -> list[str]:
    with pytest.raises(RuleSetError) as raised:
        compile_texts({name: text}, env={})
    return [str(error) for error in raised.value.errors]


@contextmanager
def frames_to_spare(count: int) -> Iterator[None]:
    """Python's recursion limit set `count` frames above here: what a deep web request stack leaves."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + count)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


# Loading


def test_yaml_nested_a_thousand_deep_is_one_error_line_not_a_recursion_error() -> None:
    text = "rules:\n  - id: deep\n    on: lead.created\n    when: " + "{not: " * 1000 + "{field: lead.x, exists: true}"
    assert error_lines(text + "}" * 1000 + "\n") == [
        f"rules/r.yaml:4:293 [deep] when: nested more than 50 levels deep {DEPTH_HINT}"
    ]
    assert error_lines("rules: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n") == [
        f"rules/r.yaml:1:204 rules: nested more than 50 levels deep {DEPTH_HINT}"
    ]


def test_the_deepest_file_allowed_compiles_evaluates_and_traces_with_frames_to_spare() -> None:
    """50 levels are far below Python's recursion limit in every stage, even under a deep caller."""
    nots = 46  # the file, rules, the rule, 46 nested `not:`, the test: 50 levels
    text = ("rules:\n  - id: deep\n    on: lead.created\n    when: " + "{not: " * nots
            + "{field: lead.baseName, exists: true}" + "}" * nots + "\n")  # fmt: skip
    body = {"lead": {"id": "L1", "baseName": {"rawData": "An", "nomalizeData": "An"}}}
    with frames_to_spare(450):
        rule_set = compile_texts({"rules/r.yaml": text}, env={})
        evaluation = simulate(rule_set, "lead.created", body)
    assert [r.rule.id for r in evaluation.matched] == ["deep"]  # an even number of nots around a true test
    one_more = text.replace("{not: ", "{not: {not: ", 1).replace("}", "}}", 1)
    column = 11 + 6 * (nots + 1)
    assert error_lines(one_more) == [
        f"rules/r.yaml:4:{column} [deep] when: nested more than 50 levels deep {DEPTH_HINT}"
    ]


def test_a_file_over_two_mib_is_one_error_line_where_the_limit_is_crossed() -> None:
    assert error_lines("rules: []\n#" + "x" * (2 * 1024 * 1024) + "\n") == [
        "rules/r.yaml:2:2097143 this file is larger than 2 MiB (split its rules into several files)"
    ]


def test_more_than_a_hundred_thousand_values_is_one_error_line() -> None:
    text = "rules:\n  - id: many\n    on: lead.created\n    applications: [" + "a, " * 100_000 + "]\n"
    assert error_lines(text) == [
        "rules/r.yaml:4:300002 more than 100,000 values in one file (split its rules into several files)"
    ]


RULE_FILE = "a rule file is a mapping with `rules:` (and optionally `tests:`)"
START = "(start the file with `rules:` and write each rule under it as a list item: `  - id: my-rule`)"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("- id: vip\n  on: lead.created\n",
         f"rules/r.yaml:1:1 {RULE_FILE}, not a list (write `rules:` above your list and indent the list under it)"),
        ("# my rules\n\n  - lead.created\n",
         f"rules/r.yaml:3:3 {RULE_FILE}, not a list (write `rules:` above your list and indent the list under it)"),
        ("vip leads\n", f"rules/r.yaml:1:1 {RULE_FILE}, not a text {START}"),
        ("''\n", f"rules/r.yaml:1:1 {RULE_FILE}, not a text {START}"),
        ("--- |\n  rules\n", f"rules/r.yaml:1:5 {RULE_FILE}, not a text {START}"),
        ("42\n", f"rules/r.yaml:1:1 {RULE_FILE}, not a number {START}"),
        ("true\n", f"rules/r.yaml:1:1 {RULE_FILE}, not true/false {START}"),
        ("id: vip\non: lead.created\n",
         "rules/r.yaml:1:1 this looks like a rule, but a rule file lists its rules under `rules:` (write `rules:` on "
         "the first line and make the rule a list item under it: `  - id: my-rule`)"),
        ("rules: []\nrule: x\n",
         "rules/r.yaml:2:1 rule: unknown top-level key 'rule': a rule file holds `rules:` and optionally `tests:` "
         "(did you mean 'rules'?)"),
        ("rules:\n  id: vip\n  on: lead.created\n",
         "rules/r.yaml:1:1 rules: expected a list, got a mapping (write each rule under `rules:` as a list item "
         "starting with `- `: `  - id: my-rule`)"),
        ("rules: 3\n",
         "rules/r.yaml:1:1 rules: expected a list, got a number (write each rule under `rules:` as a list item "
         "starting with `- `: `  - id: my-rule`)"),
        ("rules:\n  - vip\n",
         "rules/r.yaml:2:5 expected a mapping, got a text (a rule is a mapping such as `- id: my-rule` with `on:`, "
         "`when:` and `then:` under it)"),
        ("tests: yes\n",
         "rules/r.yaml:1:1 tests: expected a list, got a text (write each test under `tests:` as a list item starting "
         "with `- `: `  - name: my-test`)"),
        ("tests: [1]\n",
         "rules/r.yaml:1:9 expected a mapping, got a number (a test is a mapping such as `- name: my-test` with "
         "`event:`, `payload:` and `expect:` under it)"),
    ],
)  # fmt: skip
def test_a_file_of_the_wrong_shape_is_one_error_line_saying_what_to_write(text: str, line: str) -> None:
    assert error_lines(text) == [line]


@pytest.mark.parametrize("text", ["", "\n", "# nothing yet\n", "---\n", "---\n...\n"])
def test_an_empty_file_is_a_file_without_rules(text: str) -> None:
    assert compile_texts({"rules/r.yaml": text}, env={}).rules == ()


def test_a_key_with_a_line_break_still_prints_one_line() -> None:
    assert error_lines('rules: []\n"a\\nb": 1\n') == [
        "rules/r.yaml:2:1 a\\nb: unknown top-level key 'a\\nb': a rule file holds `rules:` and optionally `tests:`"
    ]


def test_a_control_character_is_one_error_line_at_its_place() -> None:
    assert error_lines("rules:\n  - id: a\x00\n") == [
        "rules/r.yaml:2:10 not valid YAML: control characters are not allowed (character #x0000) (remove this "
        "character)"
    ]


TEMPLATE_RULE = 'rules:\n  - id: t\n    on: lead.created\n    then:\n      - log: "{{{{ {} }}}}"\n'


def test_a_template_nested_too_deeply_is_one_error_line_at_load() -> None:
    brackets = "(" * 21 + "lead.id" + ")" * 21
    assert error_lines(TEMPLATE_RULE.format(brackets)) == [
        "rules/r.yaml:5:9 [t] then/0/log: this template is nested too deeply (more than 20 levels of brackets) "
        "(compute parts of it in vars: and combine them)"
    ]
    assert error_lines(TEMPLATE_RULE.format("1" + " + 1" * 45)) == [
        "rules/r.yaml:5:9 [t] then/0/log: this template is nested too deeply (more than 40 levels of expressions, "
        "filters and blocks) (compute parts of it in vars: and combine them)"
    ]
    assert error_lines(TEMPLATE_RULE.format("(" * 1000 + "1" + ")" * 1000))[0].endswith(
        "this template is nested too deeply (more than 20 levels of brackets) (compute parts of it in vars: and "
        "combine them)"
    )


def test_the_deepest_template_allowed_compiles_and_renders_with_frames_to_spare() -> None:
    deepest = [
        "{{ " + "(" * 20 + "lead.id" + ")" * 20 + " }}",
        "{{ 1" + " + 1" * 37 + " }}",
        "x{{ lead.id" + " | string" * 37 + " }}",
        "x" + "{% if lead.id %}" * 19 + "y" + "{% endif %}" * 19,
        "x{{ " + "[" * 20 + "lead.id" + "]" * 20 + " }}",
        "x{{ " + "(lead.id ~ " * 19 + "'a'" + ")" * 19 + " | length }}",
        "x{{ " + "(1 + " * 19 + "1" + " * 2)" * 19 + " }}",
    ]
    for source in deepest:
        compile_template.cache_clear()
        with frames_to_spare(500):
            template = compile_template(source)
            template.render({"lead": {"id": "L1"}})


def test_a_jsonpath_of_more_than_fifty_steps_is_one_error_line() -> None:
    path = "$" + "[*].a" * 30
    text = f'rules:\n  - id: p\n    on: lead.created\n    when:\n      path: "{path}"\n      exists: true\n'
    assert error_lines(text) == [
        "rules/r.yaml:5:7 [p] when/path: this JSONPath has more than 50 steps (shorten it, e.g. with `..`)"
    ]


def test_an_endless_duration_is_one_error_line() -> None:
    text = "rules:\n  - id: d\n    on: lead.created\n    then:\n      - delay: 1e400\n"
    assert error_lines(text) == [
        "rules/r.yaml:5:9 [d] then/0/delay: a duration must be shorter than 999,999,999 days, got inf"
    ]


# Rendering: each budget, and the message a user sees

CONTEXT = {"lead": {"id": "L1", "numbers": list(range(400)), "name": "An"}, "vars": {}}


def render_error(source: str) -> str:
    with pytest.raises(TemplateRenderError) as raised:
        compile_template(source).render(CONTEXT)
    return str(raised.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ ([[1]*200000]*200000)|string }}", "repetition would build more than 256 KiB"),
        ("x{{ ['x' * 1000] * 300 }}", "repetition would build more than 256 KiB"),
        ("{{ 'x'*60000 | replace('', 'y'*60000) }}", "replace() would build more than 256 KiB"),
        ("{{ ('x'*60000).replace('x', 'y'*60000) }}", "replace() would build more than 256 KiB"),
        ("{{ range(1000) | join('y' * 1000) }}", "join() would build more than 256 KiB"),
        ("{{ ('y' * 1000).join(range(1000) | map('string')) }}", "join() would build more than 256 KiB"),
        ("{% for i in lead.numbers %}{% for j in lead.numbers %}{% endfor %}{% endfor %}",
         "more than 100,000 loop iterations in one render (loops inside loops multiply)"),
        ("{% for i in range(9000) %}{% for j in range(9000) %}{% endfor %}{% endfor %}",
         "more than 10,000 range() items in one render"),
        ("{% set a = ['x' * 1000] %}{% set b = [a, a, a, a] %}{% set c = [b, b, b, b] %}{% set d = [c, c, c, c] %}"
         "{% set e = [d, d, d, d] %}{% set f = [e, e] %}{{ f | length }}",
         "a text or list built here would be larger than 256 KiB (262,144 characters or items)"),
        ("{% set a = 'x' * 1000 %}{% set b = a ~ a ~ a ~ a %}{% set c = b ~ b ~ b ~ b %}{% set d = c ~ c ~ c ~ c %}"
         "{% set e = d ~ d ~ d ~ d %}{% set f = e ~ e %}{{ f | length }}",
         "a text or list built here would be larger than 256 KiB (262,144 characters or items)"),
        ("{% set a = 'x' * 200000 %}{{ (a + a) | length }}",
         "a text or list built here would be larger than 256 KiB (262,144 characters or items)"),
        ("{{ dict(a='x' * 200000, b='x' * 200000) | length }}",
         "a text or list built here would be larger than 256 KiB (262,144 characters or items)"),
        ("{% set x %}{% for i in lead.numbers %}{{ 'y' * 1000 }}{% endfor %}{% endset %}{{ x | length }}",
         "a block or macro would produce more than 256 KiB"),
        ("{% for i in lead.numbers %}{% set x = 'y' * 20000 %}{% endfor %}",
         "more than 4 MiB of text and lists built in one render"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
         "macros or recursive loops nested more than 20 calls deep"),
        ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(18) }}",
         "more than 100,000 loop iterations (and macro calls) in one render"),
        ("{% for x in lead.numbers recursive %}{{ loop(lead.numbers) }}{% endfor %}",
         "macros or recursive loops nested more than 20 calls deep"),
        ("{% set a = 10 ** 60 %}{% set b = a * a %}{% set c = b * b %}{% set d = c * c %}{% set e = d * d %}"
         "{% set f = e * e %}{% set g = f * f %}{% set h = g * g %}{{ h > 0 }}",
         "a number with more than 4,300 digits"),
        ("{{ [1] | batch(100000000, 'x') | list }}", "batch() would build more than 256 KiB"),
        ("{{ [] | slice(100000000) | list }}", "slice() would build more than 256 KiB"),
        ("{{ {'a': 1} | tojson(100000000) }}", "an indent of more than 16"),
        ("{{ ('a.com ' * 5000) | urlize(target='y' * 1000) }}", "urlize() would build more than 256 KiB"),
        ("{% for i in range(9999) %}{{ lead.name * 100 }}{% endfor %}", "the rendered text is larger than 256 KiB"),
    ],
)  # fmt: skip
def test_every_render_has_a_budget_and_going_over_says_which_limit(source: str, message: str) -> None:
    assert render_error(source) == f"template limit: {message}"


def test_methods_that_allocate_at_will_are_refused() -> None:
    assert render_error("{{ (1).to_bytes(1000000000, 'big') }}") == (
        "refused by the template sandbox: access to attribute 'to_bytes' of 'int' object is unsafe."
    )


def test_a_linear_sum_of_lists_stays_linear() -> None:
    assert compile_template("{{ ([[1]] * 100000) | sum(start=[]) | length }}").render(CONTEXT) == 100000


def test_templates_within_the_budget_are_untouched() -> None:
    source = ("{% for i in lead.numbers %}{% if loop.first %}{{ ([i] * 3 + [1]) | sum }}{% endif %}{% endfor %}"
              "{{ ['a', lead.name] | join('-') }}{{ {'k': lead.id} | tojson }}{{ ('x' * 262144) | length }}"
              "{% set s %}{{ lead.name ~ '!' }}{% endset %}{{ s }}")  # fmt: skip
    assert compile_template(source).render(CONTEXT) == '1a-An{"k": "L1"}262144An!'


def test_a_budget_is_per_render_not_per_template() -> None:
    template = compile_template("{% for i in lead.numbers %}{% for j in range(200) %}{% endfor %}{% endfor %}")
    for _ in range(3):
        template.render({"lead": {"numbers": [1] * 40}})  # 8,000 iterations each time


def test_going_over_the_budget_fails_the_action_naming_the_rule_and_the_field() -> None:
    text = """\
rules:
  - id: runaway
    on: lead.created
    then:
      - slack:
          webhook_url: https://hooks.slack.com/x
          text: "{% for a in lead.baseSourceInput %}{% for b in lead.baseSourceInput %}{% endfor %}{% endfor %}"
      - hana_update:
          lead:
            id: "{{ lead.id }}"
            cf_string_note: "{{ 'x' * 60000 | replace('', 'y' * 60000) }}"
      - log: done
"""
    rule_set = compile_texts({"rules/r.yaml": text}, env={})
    body = {"lead": {"id": "L1", "baseSourceInput": {"rawData": ["a"] * 400, "nomalizeData": ["a"] * 400}}}
    context = normalize(body, event_id="e1", event_type="lead.created", received_at="2026-01-01T00:00:00Z").context
    (result,) = rule_set.evaluate(context, body=body).matched
    assert result.rule.id == "runaway"
    assert [(a.kind, a.error) for a in result.actions] == [
        ("slack", "text: template limit: more than 100,000 loop iterations in one render (loops inside loops "
                  "multiply)"),
        ("hana_update", "lead/cf_string_note: template limit: replace() would build more than 256 KiB"),
        ("log", None),
    ]  # fmt: skip
