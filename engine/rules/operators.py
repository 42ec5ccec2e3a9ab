"""The operator table of SPEC §6, in one place: name → (operand check at load, test at evaluation).

An operator factory validates and coerces its operand once, and returns a
test that takes the field's value and answers True or False. Tests never
raise for odd values (an absent field, a number where text was expected):
they answer False, and the negated operators answer True.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import re2

from engine.durations import parse_duration
from engine.hana import parse_hana_date
from engine.rules.text import nfc, normalizer, unaccent
from engine.rules.values import MISSING, as_number, is_absent, parse_moment, resolve_moment

Test = Callable[[Any], bool]


class OperandError(ValueError):
    """The operand written in the rule cannot be used by this operator."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Modifiers:
    ignore_case: bool = False
    ignore_accents: bool = False

    @property
    def text(self) -> Callable[[str], str]:
        return normalizer(ignore_case=self.ignore_case, ignore_accents=self.ignore_accents)


@dataclass(frozen=True)
class Operator:
    name: str
    build: Callable[[Any, Modifiers], Test]
    text: bool  # accepts ignore_case / ignore_accents


OPERATORS: dict[str, Operator] = {}
MODIFIERS = ("ignore_case", "ignore_accents")


def operator(name: str, *, text: bool = False, negates: str | None = None) -> Callable[[Any], Any]:
    def register(build: Callable[[Any, Modifiers], Test]) -> Callable[[Any, Modifiers], Test]:
        OPERATORS[name] = Operator(name, build, text)
        if negates:

            def negated(operand: Any, modifiers: Modifiers) -> Test:
                positive = build(operand, modifiers)
                return lambda value: not positive(value)

            OPERATORS[negates] = Operator(negates, negated, text)
        return build

    return register


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _as_list(operand: Any, name: str) -> list[Any]:
    if not isinstance(operand, list) or not operand:
        raise OperandError(f"{name} expects a list of values", hint=f"write {name}: [a, b]")
    return operand


def equality(operand: Any, modifiers: Modifiers) -> Test:
    """Loose equality: numbers as numbers (`"1.0"` equals 1), text in NFC with the modifiers."""
    if operand is None:
        return is_absent
    if isinstance(operand, bool):
        spelled = "true" if operand else "false"
        return lambda v: v is operand or (isinstance(v, str) and v.strip().lower() == spelled)
    if isinstance(operand, int | float):
        return lambda v: (n := as_number(v)) is not None and n == operand
    if isinstance(operand, str):
        norm = modifiers.text
        target = norm(operand)
        number = as_number(operand)
        if norm is nfc and number is None:
            # The common case, kept to two comparisons: exact text, else NFC of non-ASCII text.
            return lambda v: v == target or (type(v) is str and not v.isascii() and nfc(v) == target)

        def equal_text(value: Any) -> bool:
            if isinstance(value, str):
                return norm(value) == target
            if number is not None and isinstance(value, int | float) and not isinstance(value, bool):
                return value == number
            return False

        return equal_text
    return lambda v: v == operand


@operator("equals", text=True, negates="not_equals")
def _equals(operand: Any, modifiers: Modifiers) -> Test:
    return equality(operand, modifiers)


@operator("in", text=True, negates="not_in")
def _in(operand: Any, modifiers: Modifiers) -> Test:
    tests = [equality(item, modifiers) for item in _as_list(operand, "in")]

    def member(value: Any) -> bool:
        if isinstance(value, list):  # a list field is "in" when any of its values is
            return any(t(item) for item in value for t in tests)
        return any(t(value) for t in tests)

    return member


def _containment(operand: Any, modifiers: Modifiers) -> Test:
    """Substring for text, membership for lists."""
    if operand is None or isinstance(operand, list | dict | bool):
        raise OperandError("contains expects a text or a number", hint="for several values use contains_any")
    norm = modifiers.text
    needle = norm(str(operand))
    element = equality(operand, modifiers)
    exact = operand if isinstance(operand, str) and norm is nfc else None

    def contains(value: Any) -> bool:
        if type(value) is list:
            if exact is not None and exact in value:  # fast path: an exact member
                return True
            for item in value:
                if element(item):
                    return True
            return False
        text = _as_text(value)
        return text is not None and needle in norm(text)

    return contains


operator("contains", text=True, negates="not_contains")(_containment)


@operator("contains_any", text=True)
def _contains_any(operand: Any, modifiers: Modifiers) -> Test:
    tests = [_containment(item, modifiers) for item in _as_list(operand, "contains_any")]
    return lambda value: any(t(value) for t in tests)


@operator("contains_all", text=True)
def _contains_all(operand: Any, modifiers: Modifiers) -> Test:
    tests = [_containment(item, modifiers) for item in _as_list(operand, "contains_all")]
    return lambda value: not is_absent(value) and all(t(value) for t in tests)


def _affix(name: str, method: str) -> Callable[[Any, Modifiers], Test]:
    def build(operand: Any, modifiers: Modifiers) -> Test:
        options = operand if isinstance(operand, list) else [operand]
        if not options or any(_as_text(o) is None for o in options):
            raise OperandError(f"{name} expects a text (or a list of texts)")
        norm = modifiers.text
        prefixes = tuple(norm(str(o)) for o in options)

        def test(value: Any) -> bool:
            text = _as_text(value)
            return text is not None and getattr(norm(text), method)(prefixes)

        return test

    return build


operator("starts_with", text=True)(_affix("starts_with", "startswith"))
operator("ends_with", text=True)(_affix("ends_with", "endswith"))


def compile_regex(pattern: Any, modifiers: Modifiers) -> Any:
    if not isinstance(pattern, str):
        raise OperandError("matches expects a regular expression written as text")
    options = re2.Options()
    options.case_sensitive = not modifiers.ignore_case
    options.max_mem = 8 << 20
    options.log_errors = False  # the C++ library would print to stderr; we report the error ourselves
    source = unaccent(pattern) if modifiers.ignore_accents else pattern
    try:
        return re2.compile(source, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise OperandError(
            f"not a valid RE2 regular expression: {reason}",
            hint="RE2 has no backreferences or lookarounds; see https://github.com/google/re2/wiki/Syntax",
        ) from None


@operator("matches", text=True, negates="not_matches")
def _matches(operand: Any, modifiers: Modifiers) -> Test:
    regex = compile_regex(operand, modifiers)
    norm = normalizer(ignore_accents=modifiers.ignore_accents)  # case is the regex's own option

    def search(value: Any) -> bool:
        if isinstance(value, list):
            return any(search(item) for item in value)
        text = _as_text(value)
        return text is not None and regex.search(norm(text)) is not None

    return search


def _number_operand(operand: Any, name: str) -> float | int:
    number = as_number(operand)
    if number is None:
        hint = "for dates use before / after / within" if parse_hana_date(operand) else None
        raise OperandError(f"{name} expects a number, got {operand!r}", hint=hint)
    return number


def _comparison(name: str, compare: Callable[[Any, Any], bool]) -> None:
    @operator(name)
    def build(operand: Any, modifiers: Modifiers) -> Test:
        limit = _number_operand(operand, name)
        return lambda value: (n := as_number(value)) is not None and compare(n, limit)


_comparison("gt", lambda a, b: a > b)
_comparison("gte", lambda a, b: a >= b)
_comparison("lt", lambda a, b: a < b)
_comparison("lte", lambda a, b: a <= b)


@operator("between")
def _between(operand: Any, modifiers: Modifiers) -> Test:
    if not isinstance(operand, list) or len(operand) != 2:
        raise OperandError("between expects two numbers", hint="write between: [low, high]")
    low, high = (_number_operand(o, "between") for o in operand)
    if low > high:
        raise OperandError(f"between: the low end {low} is above the high end {high}", hint="swap them")
    return lambda value: (n := as_number(value)) is not None and low <= n <= high


def _flag(operand: Any, name: str) -> bool:
    if not isinstance(operand, bool):
        raise OperandError(f"{name} expects true or false, got {operand!r}")
    return operand


@operator("exists")
def _exists(operand: Any, modifiers: Modifiers) -> Test:
    wanted = _flag(operand, "exists")
    return lambda value: (not is_absent(value)) is wanted


def _is_empty(value: Any) -> bool:
    if is_absent(value):
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | dict):
        return not value
    return False


@operator("empty")
def _empty(operand: Any, modifiers: Modifiers) -> Test:
    wanted = _flag(operand, "empty")
    return lambda value: _is_empty(value) is wanted


def _moment_operand(operand: Any) -> Any:
    try:
        return parse_moment(operand)
    except ValueError as exc:
        raise OperandError(str(exc)) from None


@operator("before")
def _before(operand: Any, modifiers: Modifiers) -> Test:
    moment = _moment_operand(operand)
    return lambda value: (d := parse_hana_date(value)) is not None and d < resolve_moment(moment)


@operator("after")
def _after(operand: Any, modifiers: Modifiers) -> Test:
    moment = _moment_operand(operand)
    return lambda value: (d := parse_hana_date(value)) is not None and d > resolve_moment(moment)


@operator("within")
def _within(operand: Any, modifiers: Modifiers) -> Test:
    try:
        span = timedelta(seconds=parse_duration(operand))
    except ValueError as exc:
        raise OperandError(f"within expects a duration: {exc}") from None
    except OverflowError:  # 1e400, 99999999999d: longer than any date can be apart
        longest = f"{timedelta.max.days:,} days"
        raise OperandError(f"within expects a duration shorter than {longest}, got {operand!r}") from None

    def test(value: Any) -> bool:
        moment = parse_hana_date(value)
        if moment is None:
            return False
        now = datetime.now(UTC)
        return now - span <= moment <= now

    return test


def build_test(name: str, operand: Any, modifiers: Modifiers) -> Test:
    """The test for `name: operand`; raises OperandError (or KeyError for an unknown name)."""
    op = OPERATORS[name]
    if not op.text and (modifiers.ignore_case or modifiers.ignore_accents):
        raise OperandError(f"ignore_case / ignore_accents do not apply to {name}", hint="remove the modifier")
    return op.build(operand, modifiers)


__all__ = ["MISSING", "OPERATORS", "MODIFIERS", "Modifiers", "OperandError", "build_test", "equality"]
