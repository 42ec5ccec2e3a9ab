"""One sandboxed Jinja2 environment for every template in every rule.

- Only rule files are template source; lead data is only ever a value.
- A template that is exactly one expression keeps its value's type
  (`"{{ vars.score + 1 }}"` is the number 4); values are never re-parsed from text.
- The sandbox also bounds what Jinja's own does not: every render has a budget
  (loop iterations, sizes of what it builds, range, powers, output); see sandbox.py.
  Nesting is bounded at load, so neither parsing nor rendering can recurse deep.
- Names outside the rule context are load errors; an attribute missing at
  render time is a clear error (use `| default(...)`).
- Compiled templates are cached by source, so a reload of 1,000 rules does not
  pay Jinja's ~1 ms compile per template again.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateAssertionError, TemplateError

from engine.hana import parse_hana_date
from engine.rules.sandbox import (
    LOOP_FILTER,
    MAX_OUTPUT,
    BoundedSandbox,
    TemplateRenderError,
    bound_filters,
    bounded_range,
    start_render,
    weight,
)
from engine.rules.text import unaccent

#: Brackets inside brackets: Jinja's parser spends ~15 Python frames on each level.
MAX_BRACKETS = 20
#: Expressions, filters and blocks inside each other (`a + b + c` is two levels): ~4 frames each to compile.
MAX_NESTING = 40
#: The names a template may use: SPEC §5's context.
CONTEXT_NAMES = frozenset(
    ("event", "application", "lead", "opportunity", "raw", "previous", "changes", "conversation", "vars")
)
_SINGLE_EXPRESSION = re.compile(r"\s*\{\{(.*)\}\}\s*", re.DOTALL)


class TemplateLimitError(TemplateError):
    """A template refused at load because it is nested too deeply to parse and compile safely."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


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


def _environment() -> BoundedSandbox:
    env = BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    for name in ("center", "indent", "format", "wordwrap", "filesizeformat", "xmlattr"):
        env.filters.pop(name, None)
    env.globals = {"range": bounded_range, "dict": dict}
    env.filters.update(unaccent=unaccent, phone_e164=_phone_e164, vnd=_vnd, date=_date, to_json=_to_json)
    bound_filters(env.filters)
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
    tree = _parse(source)
    _check_filters_and_tests(tree)
    names = frozenset(meta.find_undeclared_variables(tree)) - set(ENVIRONMENT.globals)
    for loop in tree.find_all(nodes.For):  # every iteration is counted against the render's budget
        loop.iter = nodes.Filter(loop.iter, LOOP_FILTER, [], [], None, None, lineno=loop.iter.lineno)
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


_TOO_DEEP = "compute parts of it in vars: and combine them"


def _parse(source: str) -> nodes.Template:
    """Jinja's parser and code generator recurse once per level of nesting: bound it before they run."""
    if sum(map(source.count, "([{")) > MAX_BRACKETS:  # the exact count needs the tokens: only then
        depth = deepest = 0
        for _, token, value in ENVIRONMENT.lex(source):
            if token == "operator" and value in "([{":
                depth += 1
                deepest = max(deepest, depth)
            elif token == "operator" and value in ")]}":
                depth -= 1
        if deepest > MAX_BRACKETS:
            raise TemplateLimitError(f"this template is nested too deeply (more than {MAX_BRACKETS} levels of "
                                     "brackets)", _TOO_DEEP)  # fmt: skip
    try:
        tree = ENVIRONMENT.parse(source)
    except RecursionError:
        raise TemplateLimitError("this template is nested too deeply", _TOO_DEEP) from None
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise TemplateLimitError(f"this template is nested too deeply (more than {MAX_NESTING} levels of "
                                     "expressions, filters and blocks)", _TOO_DEEP)  # fmt: skip
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return tree


def _check_filters_and_tests(tree: nodes.Template) -> None:
    """What Jinja would only find when generating code: unknown filters and tests."""
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        known = ENVIRONMENT.filters if isinstance(node, nodes.Filter) else ENVIRONMENT.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            close = difflib.get_close_matches(node.name, [k for k in known if not k.startswith("_")], n=1)
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
                raise TemplateRenderError(_TOO_LARGE)
            parts.append(part)
        return "".join(parts)

    return render_text


_TOO_LARGE = f"template limit: the rendered text is larger than {MAX_OUTPUT // 1024} KiB"


def _check_size(value: Any) -> None:
    if isinstance(value, str) and len(value) > MAX_OUTPUT:
        raise TemplateRenderError(_TOO_LARGE)
    if isinstance(value, list | dict) and (weight(value) > MAX_OUTPUT or len(_to_json(value)) > MAX_OUTPUT):
        raise TemplateRenderError(f"template limit: the rendered value is larger than {MAX_OUTPUT // 1024} KiB")


_MISSING_ATTRIBUTE = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined")


def _guarded(render: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    def guarded(context: dict[str, Any]) -> Any:
        start_render()
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
        except RecursionError:  # unreachable with the load-time bounds; never a crash of the job
            raise TemplateRenderError("template limit: nested too deeply to render") from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from None

    return guarded


def render_structure(value: Any, context: dict[str, Any]) -> Any:
    """Render every template inside nested lists and mappings; other values stay as they are.

    A failure names the field it happened in (`lead/cf_note: …`), relative to `value`.
    """
    if isinstance(value, str):
        return compile_template(value).render(context)
    if isinstance(value, dict):
        rendered = {}
        for key, item in value.items():
            try:
                rendered[key] = render_structure(item, context)
            except TemplateRenderError as exc:
                raise exc.within(key) from None
        return rendered
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            try:
                items.append(render_structure(item, context))
            except TemplateRenderError as exc:
                raise exc.within(index) from None
        return items
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


__all__ = ["CONTEXT_NAMES", "Template", "TemplateLimitError", "TemplateRenderError", "TemplateSyntaxError",
           "compile_template", "render_structure", "template_sources"]  # fmt: skip
