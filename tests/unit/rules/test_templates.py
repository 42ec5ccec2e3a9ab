from __future__ import annotations

import pytest

from engine.rules.templates import TemplateRenderError, compile_template, render_structure

CONTEXT = {
    "lead": {"id": "L1", "baseName": "123", "score": 3, "sources": ["Youtube", "Sendo"], "phone": "0978712200",
             "deal": 1000000, "birthday": "2020-09-13T17:00:00.000Z", "note": "{{ 7 * 7 }}"},
    "vars": {"score": 3},
}  # fmt: skip


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ vars.score + 1 }}", 4),
        ("{{ lead.baseName }}", "123"),  # a name that looks like a number stays text
        ("{{ lead.sources }}", ["Youtube", "Sendo"]),
        ("{{ lead.score > 2 }}", True),
        ("  {{ lead.score }}  ", "  3  "),  # text around the expression: the result is text
        ("VIP from {{ lead.sources | join(', ') }}", "VIP from Youtube, Sendo"),
        ("{{ lead.score }}{{ lead.score }}", "33"),
        ("no template here", "no template here"),
        ("{{ lead.phone | phone_e164 }}", "+84978712200"),
        ("{{ '84978712200' | phone_e164 }}", "+84978712200"),
        ("{{ '+84978712200' | phone_e164 }}", "+84978712200"),
        ("{{ lead.deal | vnd }}", "1.000.000 ₫"),
        ("{{ lead.birthday | date('%d/%m/%Y') }}", "13/09/2020"),
        ("{{ '14-09-2020' | date('%Y') }}", "2020"),
        ("{{ 'Thu Hương, Đà Nẵng' | unaccent }}", "Thu Huong, Da Nang"),
        ("{{ lead.sources | to_json }}", '["Youtube", "Sendo"]'),
        ("{{ lead.email | default('none') }}", "none"),
        ("{{ lead.note }}", "{{ 7 * 7 }}"),  # lead data is data, never template source
    ],
)
def test_rendering(source: str, expected: object) -> None:
    value = compile_template(source).render(CONTEXT)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{ lead.baseEmail }}", "'baseEmail' is missing in this event; give it a fallback with | default(...)"),
        ("Hi {{ lead.baseEmail }}", "'baseEmail' is missing"),
        ("{{ 2 ** 1000000 }}", "powers above"),
        ("{{ 'x' * 100000000 }}", "256 KiB"),
        ("{{ [1] * 100000000 }}", "256 KiB"),
        ("{{ range(100000000) | list }}", "range()"),
        ("{% for i in range(9000) %}{% for j in range(9000) %}{% endfor %}{% endfor %}", "range()"),
        ("{% for i in range(9999) %}{{ lead.sources | join(',') * 4 }}{% endfor %}", "256 KiB"),
        ("{{ 'x'.ljust(1000000000) }}", "sandbox"),
        ("{{ '%999999999s' % 'x' }}", "% text formatting"),
        ("{{ ''.__class__.__mro__ }}", "sandbox"),
        ("{{ lead.update({'id': 'x'}) }}", "sandbox"),
        ("{{ 'a' | center(1000000000) }}", "no filter named 'center'"),
        ("{{ 'soon' | date }}", "is not a date"),
    ],
)
def test_rendering_failures_are_clear_errors(source: str, fragment: str) -> None:
    try:
        template = compile_template(source)
    except Exception as exc:  # a removed filter is refused when compiling
        assert fragment in str(exc)
        return
    with pytest.raises(TemplateRenderError) as error:
        template.render(CONTEXT)
    assert fragment in str(error.value)


def test_names_used_are_known_at_load() -> None:
    assert compile_template("{{ lead.a }} {{ vars.b }} {% for x in changes %}{{ x }}{% endfor %}").names == {
        "lead", "vars", "changes",
    }  # fmt: skip


def test_compiled_templates_are_shared_by_source() -> None:
    assert compile_template("{{ lead.id }}!") is compile_template("{{ lead.id }}!")


def test_structures_render_every_template_inside() -> None:
    spec = {"lead": {"id": "{{ lead.id }}", "n": "{{ vars.score + 1 }}", "tags": ["{{ lead.sources[0] }}", 5]}}
    assert render_structure(spec, CONTEXT) == {"lead": {"id": "L1", "n": 4, "tags": ["Youtube", 5]}}
