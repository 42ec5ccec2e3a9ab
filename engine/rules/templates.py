"""One sandboxed Jinja2 environment for every template in every rule.

- Only rule files are template source; lead data is only ever a value.
- A template that is exactly one expression keeps its value's type
  (`"{{ vars.score + 1 }}"` is the number 4); values are never re-parsed from text.
- The sandbox also bounds what Jinja's own does not: powers, repetition, `%`
  formatting, `range`, padding filters, and the output size.
- Names outside the rule context are load errors; an attribute missing at
  render time is a clear error (use `| default(...)`).
- Compiled templates are cached by source, so a reload of 1,000 rules does not
  pay Jinja's ~1 ms compile per template again.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateAssertionError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.hana import parse_hana_date
from engine.rules.text import unaccent

MAX_OUTPUT = 256 * 1024
MAX_RANGE = 10_000
MAX_EXPONENT = 64
#: The names a template may use: SPEC §5's context.
CONTEXT_NAMES = frozenset(
    ("event", "application", "lead", "opportunity", "raw", "previous", "changes", "conversation", "vars")
)
_UNSAFE_STR_METHODS = frozenset(
    ("center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map", "encode", "translate")
)
_SINGLE_EXPRESSION = re.compile(r"\s*\{\{(.*)\}\}\s*", re.DOTALL)


class TemplateRenderError(Exception):
    """A template failed for this event; the action fails with this message, it is not retried."""


_budget = threading.local()


def _bounded_range(*arguments: int) -> range:
    """`range` with one budget per render, so nested loops cannot multiply it."""
    span = range(*arguments)
    left = getattr(_budget, "range_items", MAX_RANGE) - len(span)
    if left < 0:
        raise SecurityError(f"more than {MAX_RANGE} range() items in one template are not allowed")
    _budget.range_items = left
    return span


def _phone_e164(value: Any) -> Any:
    """Vietnamese numbers to E.164: `0978712200` → `+84978712200`; others are left as they are."""
    if value is None:
        return value
    digits = re.sub(r"[\s.\-()]", "", str(value))
    if digits.startswith("+"):
        return digits
    if digits.startswith("84") and len(digits) >= 11:
        return "+" + digits
    if digits.startswith("0") and len(digits) >= 10:
        return "+84" + digits[1:]
    return digits


def _vnd(value: Any) -> str:
    """`1000000` → `1.000.000 ₫` (Vietnamese groups thousands with dots)."""
    number = float(value)
    text = f"{round(number):,}".replace(",", ".")
    return f"{text} ₫"


def _date(value: Any, format: str = "%d/%m/%Y") -> str:  # noqa: A002 - the filter's public name
    moment = value if isinstance(value, datetime) else parse_hana_date(value)
    if moment is None:
        raise TemplateRenderError(f"date: {value!r} is not a date (ISO 8601 or dd-MM-yyyy)")
    return moment.strftime(format)


def _to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(("**", "*", "%"))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _UNSAFE_STR_METHODS:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"powers above {MAX_EXPONENT} are not allowed in templates")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                    if len(sequence) * count > MAX_OUTPUT:
                        raise SecurityError("repetition would exceed the 256 KiB template output limit")
        if operator == "%" and isinstance(left, str):
            raise SecurityError("the % text formatting operator is not allowed in templates; use ~ to join")
        return super().call_binop(context, operator, left, right)


def _environment() -> BoundedSandbox:
    env = BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    for name in ("center", "indent", "format", "wordwrap", "filesizeformat", "xmlattr"):
        env.filters.pop(name, None)
    env.globals = {"range": _bounded_range, "dict": dict}
    env.filters.update(unaccent=unaccent, phone_e164=_phone_e164, vnd=_vnd, date=_date, to_json=_to_json)
    return env


ENVIRONMENT = _environment()


@dataclass(frozen=True)
class Template:
    """A compiled template: `render(context)` gives a value (typed when it is one expression)."""

    source: str
    render: Callable[[dict[str, Any]], Any]
    names: frozenset[str]
    dynamic: bool


def _constant(source: str) -> Template:
    return Template(source=source, render=lambda context: source, names=frozenset(), dynamic=False)


@lru_cache(maxsize=20_000)
def compile_template(source: str) -> Template:
    """Parse once per distinct source; raises TemplateSyntaxError / TemplateError.

    Loading only parses (syntax errors and the names used are known then); the
    code is generated at the first render. A 1,000-rule reload pays the parse,
    not Jinja's ~0.6 ms code generation per template, and templates of rules that
    never match never pay it at all.
    """
    if "{{" not in source and "{%" not in source and "{#" not in source:
        return _constant(source)
    tree = ENVIRONMENT.parse(source)
    _check_filters_and_tests(tree)
    names = frozenset(meta.find_undeclared_variables(tree)) - set(ENVIRONMENT.globals)
    single = _SINGLE_EXPRESSION.fullmatch(source)
    body = tree.body
    is_single = (
        single is not None
        and len(body) == 1
        and isinstance(body[0], nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], nodes.TemplateData)
    )
    render = _render_value(single.group(1)) if is_single and single else _render_text(tree)
    return Template(source=source, render=_guarded(render), names=names, dynamic=True)


def _check_filters_and_tests(tree: nodes.Template) -> None:
    """What Jinja would only find when generating code: unknown filters and tests."""
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        known = ENVIRONMENT.filters if isinstance(node, nodes.Filter) else ENVIRONMENT.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            close = difflib.get_close_matches(node.name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TemplateAssertionError(f"no {kind} named {node.name!r}{hint}", node.lineno)


def _render_value(expression_source: str) -> Callable[[dict[str, Any]], Any]:
    compiled: list[Any] = []

    def render_value(context: dict[str, Any]) -> Any:
        if not compiled:
            compiled.append(ENVIRONMENT.compile_expression(expression_source, undefined_to_none=False))
        value = compiled[0](**context)
        if isinstance(value, StrictUndefined):
            value.__str__()  # raises UndefinedError naming what is missing
        _check_size(value)
        return value

    return render_value


def _render_text(tree: nodes.Template) -> Callable[[dict[str, Any]], str]:
    compiled: list[Any] = []

    def render_text(context: dict[str, Any]) -> str:
        if not compiled:
            compiled.append(ENVIRONMENT.from_string(tree))
        parts, size = [], 0
        for part in compiled[0].generate(context):  # streamed: a runaway loop stops at the limit
            size += len(part)
            if size > MAX_OUTPUT:
                raise TemplateRenderError("the rendered text is larger than 256 KiB")
            parts.append(part)
        return "".join(parts)

    return render_text


def _check_size(value: Any) -> None:
    if isinstance(value, str) and len(value) > MAX_OUTPUT:
        raise TemplateRenderError("the rendered text is larger than 256 KiB")
    if isinstance(value, list | dict) and len(_to_json(value)) > MAX_OUTPUT:
        raise TemplateRenderError("the rendered value is larger than 256 KiB")


_MISSING_ATTRIBUTE = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined")


def _guarded(render: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    def guarded(context: dict[str, Any]) -> Any:
        _budget.range_items = MAX_RANGE
        try:
            return render(context)
        except TemplateRenderError:
            raise
        except UndefinedError as exc:
            match = _MISSING_ATTRIBUTE.search(str(exc))
            name = next((g for g in match.groups() if g), None) if match else None
            what = f"{name!r} is missing in this event" if name else str(exc)
            raise TemplateRenderError(f"{what}; give it a fallback with | default(...)") from None
        except SecurityError as exc:
            raise TemplateRenderError(f"refused by the template sandbox: {exc}") from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from None

    return guarded


def render_structure(value: Any, context: dict[str, Any]) -> Any:
    """Render every template inside nested lists and mappings; other values stay as they are."""
    if isinstance(value, str):
        return compile_template(value).render(context)
    if isinstance(value, dict):
        return {key: render_structure(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_structure(item, context) for item in value]
    return value


def template_sources(value: Any) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """(relative path, source) of every string inside a nested structure."""
    if isinstance(value, str):
        yield (), value
    elif isinstance(value, dict):
        for key, item in value.items():
            for path, source in template_sources(item):
                yield (key, *path), source
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for path, source in template_sources(item):
                yield (index, *path), source


__all__ = ["CONTEXT_NAMES", "Template", "TemplateRenderError", "TemplateSyntaxError", "compile_template",
           "render_structure", "template_sources"]  # fmt: skip
