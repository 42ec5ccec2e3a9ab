"""Condition factories: a condition spec becomes a closure `check(context, body, tracer) -> bool`.

Everything a check needs — operator, coerced operand, compiled regex,
JSONPath, template, pre-split field path — is bound once at load.
Evaluation is then only calls. Problems found while compiling are reported
through `report(relative_path, message, hint)` and compilation goes on, so
one pass finds every mistake.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from jinja2 import TemplateSyntaxError
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext import parse as parse_jsonpath

from engine.rules.operators import MODIFIERS, OPERATORS, Modifiers, OperandError, build_test, equality
from engine.rules.templates import CONTEXT_NAMES, TemplateLimitError, TemplateRenderError, compile_template
from engine.rules.values import MISSING

Check = Callable[[dict[str, Any], Any, Any], bool]
Report = Callable[[tuple[str | int, ...], str, str | None], None]

ENTITY_ROOTS = ("lead", "opportunity")
#: jsonpath-ng evaluates one step per Python frame or two: bounded like the nesting of rule files.
MAX_JSONPATH_STEPS = 50
_SIMPLE_JSONPATH = re.compile(r"\$(\.[A-Za-z_][A-Za-z0-9_]*)+")


#: What a trace entry says a condition is (`op`, and `field` or `jsonpath`, `modifiers`): the words of
#: its explanation (engine/rules/explain.py) come from what was evaluated, not from today's rules.
ALL, ANY, NOT, TEMPLATE = ({"op": kind} for kind in ("all", "any", "not", "template"))


def _about(op: str, modifiers: Modifiers, **subject: str) -> dict[str, Any]:
    about: dict[str, Any] = {"op": op, **subject}
    if modifiers.ignore_case or modifiers.ignore_accents:
        about["modifiers"] = [m for m in MODIFIERS if getattr(modifiers, m)]
    return about


def suggest(word: str, choices: Any) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def field_getter(parts: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """A fast getter for a dotted name; absent anywhere along the way gives MISSING."""
    if len(parts) == 2:
        first, second = parts

        def get_two(context: dict[str, Any]) -> Any:
            inner = context.get(first)
            return inner.get(second, MISSING) if type(inner) is dict else MISSING

        return get_two

    def get(context: dict[str, Any]) -> Any:
        value: Any = context
        for part in parts:
            if type(value) is dict:
                value = value.get(part, MISSING)
            elif type(value) is list and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return MISSING
        return value

    return get


class ConditionCompiler:
    def __init__(self, report: Report, *, var_names: frozenset[str]) -> None:
        self.report = report
        self.var_names = var_names
        #: (where, name) of every field a `field:` or `changed:` reads: the rule's `reads` (reads.py)
        self.fields: list[tuple[tuple[str | int, ...], str]] = []

    def compile(self, spec: Any, where: tuple[str | int, ...], label: str) -> Check | None:
        """`where`: path of `spec` inside the rule; `label`: the same as a trace path (`when/2/any/0`)."""
        if isinstance(spec, list):
            return self._all(spec, where, label, explicit=False)
        if not isinstance(spec, dict) or not spec:
            self.report(where, "expected a condition (a mapping such as {field: …, equals: …})", None)
            return None
        for kind in ("all", "any", "not", "template", "changed"):
            if kind in spec:
                return getattr(self, f"_{kind}")(spec, where, label)
        if "field" in spec or "path" in spec:
            return self._value_test(spec, where, label)
        unknown = next(iter(spec))
        hint = suggest(str(unknown), [*OPERATORS, "field", "path", "all", "any", "not", "template", "changed"])
        self.report((*where, unknown), "a condition needs field: or path: (or all/any/not/template/changed)", hint)
        return None

    def _only(self, spec: dict[str, Any], allowed: set[str], where: tuple[str | int, ...], kind: str) -> None:
        for key in spec:
            if key not in allowed:
                self.report((*where, key), f"{key!r} cannot be combined with {kind}:", "put it in its own condition")

    def _children(self, items: Any, where: tuple[str | int, ...], label: str) -> list[Check] | None:
        if not isinstance(items, list) or not items:
            self.report(where, "expected a non-empty list of conditions", None)
            return None
        checks = [self.compile(item, (*where, i), f"{label}/{i}") for i, item in enumerate(items)]
        return None if any(c is None for c in checks) else checks  # type: ignore[return-value]

    def _all(self, spec: Any, where: tuple[str | int, ...], label: str, explicit: bool = True) -> Check | None:
        if explicit:
            self._only(spec, {"all"}, where, "all")
            items, where, children = spec["all"], (*where, "all"), f"{label}/all"
        else:
            items, children = spec, label
        checks = self._children(items, where, children)
        if checks is None:
            return None

        def check_all(context: dict[str, Any], body: Any, tracer: Any) -> bool:
            if tracer is None:
                for check in checks:
                    if not check(context, body, None):
                        return False
                return True
            results = [check(context, body, tracer) for check in checks]  # explain every one
            result = all(results)
            if explicit:
                tracer.condition(label, result, None, "all", about=ALL)
            return result

        return check_all

    def _any(self, spec: dict[str, Any], where: tuple[str | int, ...], label: str) -> Check | None:
        self._only(spec, {"any"}, where, "any")
        checks = self._children(spec["any"], (*where, "any"), f"{label}/any")
        if checks is None:
            return None

        def check_any(context: dict[str, Any], body: Any, tracer: Any) -> bool:
            if tracer is None:
                for check in checks:
                    if check(context, body, None):
                        return True
                return False
            result = any([check(context, body, tracer) for check in checks])
            tracer.condition(label, result, None, "any", about=ANY)
            return result

        return check_any

    def _not(self, spec: dict[str, Any], where: tuple[str | int, ...], label: str) -> Check | None:
        self._only(spec, {"not"}, where, "not")
        inner = self.compile(spec["not"], (*where, "not"), f"{label}/not")
        if inner is None:
            return None

        def check_not(context: dict[str, Any], body: Any, tracer: Any) -> bool:
            result = not inner(context, body, tracer)
            if tracer is not None:
                tracer.condition(label, result, None, "not", about=NOT)
            return result

        return check_not

    def _template(self, spec: dict[str, Any], where: tuple[str | int, ...], label: str) -> Check | None:
        self._only(spec, {"template"}, where, "template")
        source = spec["template"]
        if "{{" not in str(source):
            self.report((*where, "template"), "a template condition is a Jinja expression in {{ … }}",
                        "e.g. template: \"{{ lead.baseName | length > 3 }}\"")  # fmt: skip
            return None
        template = self.template(source, (*where, "template"))
        if template is None:
            return None

        def check_template(context: dict[str, Any], body: Any, tracer: Any) -> bool:
            try:
                value = template.render(context)
            except TemplateRenderError as exc:
                if tracer is not None:
                    tracer.condition(label, False, expected=source, error=str(exc), about=TEMPLATE)
                return False
            result = bool(value) and value not in ("False", "false", "0")
            if tracer is not None:
                tracer.condition(label, result, value, source, about=TEMPLATE)
            return result

        return check_template

    def _changed(self, spec: dict[str, Any], where: tuple[str | int, ...], label: str) -> Check | None:
        self._only(spec, {"changed", "from", "to", *MODIFIERS}, where, "changed")
        name = spec["changed"]
        parts = str(name).split(".")
        if len(parts) != 2 or parts[0] not in ENTITY_ROOTS or not parts[1]:
            self.report((*where, "changed"), f"changed: expects lead.<attribute> or opportunity.<attribute>, "
                        f"got {name!r}", None)  # fmt: skip
            return None
        entity, attribute = parts
        self.fields.append(((*where, "changed"), name))
        modifiers = Modifiers(**{m: bool(spec.get(m, False)) for m in MODIFIERS})
        before = equality(spec["from"], modifiers) if "from" in spec else None
        after = equality(spec["to"], modifiers) if "to" in spec else None
        expected = {k: spec[k] for k in ("from", "to") if k in spec} or "changed"
        about = _about("changed", modifiers, field=name)

        def check_changed(context: dict[str, Any], body: Any, tracer: Any) -> bool:
            changed = context["event"]["entity"] == entity and attribute in context.get("changes", ())
            old = (context.get("previous") or {}).get(entity, {}).get(attribute, MISSING)
            new = (context.get(entity) or {}).get(attribute, MISSING)
            result = changed and (before is None or before(old)) and (after is None or after(new))
            if tracer is not None:
                tracer.condition(label, result, {"changed": changed, "from": old, "to": new}, expected, about=about)
            return bool(result)

        return check_changed

    def _value_test(self, spec: dict[str, Any], where: tuple[str | int, ...], label: str) -> Check | None:
        if "field" in spec and "path" in spec:
            self.report(where, "use either field: or path:, not both", None)
            return None
        operators = [key for key in spec if key in OPERATORS]
        unknown = [key for key in spec if key not in OPERATORS and key not in (*MODIFIERS, "field", "path")]
        for key in unknown:
            self.report((*where, key), f"unknown operator {key!r}", suggest(str(key), OPERATORS))
        if len(operators) != 1:
            if not unknown:
                message = "no operator" if not operators else f"several operators ({', '.join(operators)})"
                self.report(where, f"{message}: a condition tests with exactly one operator",
                            "e.g. equals, contains, gte, matches")  # fmt: skip
            return None
        name = operators[0]
        modifiers = Modifiers(**{m: bool(spec.get(m, False)) for m in MODIFIERS})
        try:
            test = build_test(name, spec[name], modifiers)
        except OperandError as exc:
            self.report((*where, name), str(exc), exc.hint)
            return None
        expected = spec[name]
        about = (_about(name, modifiers, field=str(spec["field"])) if "field" in spec
                 else _about(name, modifiers, jsonpath=str(spec["path"])))  # `path` names the trace entry  # fmt: skip
        if "field" in spec:
            getter = self._field(spec["field"], (*where, "field"))
            if getter is None:
                return None

            def check_field(context: dict[str, Any], body: Any, tracer: Any) -> bool:
                value = getter(context)
                try:
                    result = test(value)
                except Exception as exc:  # noqa: BLE001 - an odd value must never break evaluation
                    if tracer is not None:
                        tracer.condition(label, False, value, expected, error=f"could not evaluate: {exc}", about=about)
                    return False
                if tracer is not None:
                    tracer.condition(label, result, value, expected, about=about)
                return result

            return check_field
        finder = self._jsonpath(spec["path"], (*where, "path"))
        if finder is None:
            return None

        def check_path(context: dict[str, Any], body: Any, tracer: Any) -> bool:
            matches = finder(body) if body is not None else []
            try:
                result = any(test(m) for m in matches) if matches else test(MISSING)
            except Exception as exc:  # noqa: BLE001
                if tracer is not None:
                    tracer.condition(label, False, matches, expected, error=f"could not evaluate: {exc}", about=about)
                return False
            if tracer is not None:
                tracer.condition(label, result, matches if matches else MISSING, expected, about=about)
            return result

        return check_path

    def _field(self, name: Any, where: tuple[str | int, ...]) -> Callable[[dict[str, Any]], Any] | None:
        if not isinstance(name, str) or not name:
            self.report(where, "field: expects a dotted name such as lead.baseName", None)
            return None
        parts = tuple(name.split("."))
        if parts[0] not in CONTEXT_NAMES:
            self.report(where, f"unknown field {name!r}: it must start with one of {', '.join(sorted(CONTEXT_NAMES))}",
                        suggest(parts[0], CONTEXT_NAMES))  # fmt: skip
            return None
        if parts[0] == "vars" and (len(parts) < 2 or parts[1] not in self.var_names):
            known = ", ".join(sorted(self.var_names)) or "none"
            self.report(where, f"{name!r} is not defined in this rule's vars (defined: {known})",
                        suggest(parts[1] if len(parts) > 1 else "", self.var_names))  # fmt: skip
            return None
        self.fields.append((where, name))
        if len(parts) == 1:
            return lambda context: context.get(parts[0], MISSING)
        return field_getter(parts)

    def _jsonpath(self, expression: Any, where: tuple[str | int, ...]) -> Callable[[Any], list[Any]] | None:
        if not isinstance(expression, str):
            self.report(where, "path: expects a JSONPath such as $.lead.baseName.rawData", None)
            return None
        if expression.count(".") + expression.count("[") > MAX_JSONPATH_STEPS:
            self.report(where, f"this JSONPath has more than {MAX_JSONPATH_STEPS} steps", "shorten it, e.g. with `..`")
            return None
        if _SIMPLE_JSONPATH.fullmatch(expression):  # a direct getter is ~20× faster than jsonpath-ng
            getter = field_getter(tuple(expression[2:].split(".")))
            return lambda body: [] if (value := getter(body)) is MISSING else [value]
        try:
            compiled = parse_jsonpath(expression)
        except (JsonPathLexerError, JsonPathParserError, Exception) as exc:  # noqa: BLE001 - jsonpath-ng raises plain Exception
            self.report(where, f"not a valid JSONPath: {exc}", "e.g. $.lead.baseSourceInput.rawData[*]")
            return None
        return lambda body: [match.value for match in compiled.find(body)]

    def template(self, source: Any, where: tuple[str | int, ...]) -> Any:
        """Compile a template and check its names; None (reported) when it cannot be used."""
        try:
            template = compile_template(str(source))
        except TemplateLimitError as exc:
            self.report(where, exc.message or "this template is nested too deeply", exc.hint)
            return None
        except TemplateSyntaxError as exc:
            self.report(where, f"template syntax error: {exc.message}", None)
            return None
        except Exception as exc:  # noqa: BLE001 - any other Jinja complaint is a load error too
            self.report(where, f"template error: {exc}", None)
            return None
        for name in sorted(template.names - CONTEXT_NAMES):
            self.report(where, f"unknown name {name!r} in template", suggest(name, CONTEXT_NAMES))
            return None
        return template
