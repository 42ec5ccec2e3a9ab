"""The template sandbox, and the budget every render gets.

Jinja's sandbox keeps templates away from Python internals, not from asking for
a lot of work: `([[1]*200000]*200000)|string`, `'x'*60000 | replace('', 'y'*60000)`
or loops nested in loops are fine by it, and only a job timeout or the memory
stops them. So each render has a budget, and every way a template builds a
value or repeats work is charged to it:

- loop iterations, counting nested loops, recursive loops and macro calls alike;
- each text or list built (repetition, `+`, `~`, list and dict literals, filters,
  text methods, `{% set %}` blocks and macros): at most 256 KiB, and 4 MiB in all;
- `range()` items, powers, the digits of a number, how deep macros recurse.

A step that can multiply (repetition, `replace`, `join`, powers, `batch` with a
filler) is checked before it runs; any other step at most adds its inputs up, so
it is checked right after. Lists are measured through their nesting, a shared
part counted each time it appears (`[x, x]` is twice `x`): that is what turning
them into text costs. Load-time limits (nesting) are in templates.py.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: What one render may print, and the largest text or list it may build on the way.
MAX_OUTPUT = MAX_VALUE = 256 * 1024
#: Everything built in one render, added up: 16 times the output.
MAX_BUILT = 4 * 1024 * 1024
#: Loop iterations (and macro calls) per render: ~0.1 s of template work.
MAX_ITERATIONS = 100_000
MAX_RANGE = 10_000
MAX_EXPONENT = 64
#: Python's own limit for turning an integer into text.
MAX_DIGITS = 4300
_MAX_BITS = MAX_DIGITS * 10 // 3
#: A macro calling itself, or a recursive loop: ~5 Python frames per level.
MAX_CALL_DEPTH = 20

_KIB = f"{MAX_VALUE // 1024} KiB"
_SCALARS = frozenset((int, float, bool, type(None)))
_UNSAFE_METHODS: dict[type, frozenset[str]] = {
    str: frozenset(("center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map", "encode", "translate")),
    int: frozenset(("to_bytes",)),
}
#: The filter templates.py wraps around every `for` loop's iterable (Jinja has no hook for loops).
LOOP_FILTER = "_loop_iterations"
#: Filters that hand back (part of) a value they were given: nothing is built.
_PASS_THROUGH = frozenset(("default", "d", "first", "last", "random", "min", "max", "attr"))


class TemplateRenderError(Exception):
    """A template failed for this event; the action fails with this message, it is not retried.

    `field` is where in the action the template stands (`lead/cf_note`), filled in on the way up.
    """

    def __init__(self, message: str, field: tuple[str | int, ...] = ()) -> None:
        self.reason = message
        self.field = field
        super().__init__(f"{'/'.join(map(str, field))}: {message}" if field else message)

    def within(self, key: str | int) -> TemplateRenderError:
        return TemplateRenderError(self.reason, (key, *self.field))


def over(what: str) -> TemplateRenderError:
    return TemplateRenderError(f"template limit: {what}")


class _Budget(threading.local):
    """What is left of the current render's budget, per thread (class values: before any render)."""

    iterations = MAX_ITERATIONS
    built = MAX_BUILT
    range_items = MAX_RANGE
    depth = 0


budget = _Budget()


def start_render() -> None:
    budget.iterations = MAX_ITERATIONS
    budget.built = MAX_BUILT
    budget.range_items = MAX_RANGE
    budget.depth = 0


_NESTED = (str, list, tuple, dict, set, frozenset)


def weight(value: Any, limit: int = MAX_VALUE) -> int:
    """Characters of texts plus items of lists and mappings, through nesting; stops past `limit`."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, _NESTED):
        return 0
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
            continue
        total += len(item)
        if total > limit:
            return total
        children = (*item, *item.values()) if isinstance(item, dict) else item
        if any(issubclass(kind, _NESTED) for kind in set(map(type, children))):  # C speed for flat lists
            stack.extend(child for child in children if isinstance(child, _NESTED))
    return total


def built(value: Any) -> Any:
    """Charge a value the template just built; refuse it past the per-value or per-render limit."""
    if type(value) in _SCALARS:
        return value
    size = len(value) if isinstance(value, str) else weight(value)
    if size > MAX_VALUE:
        raise over(f"a text or list built here would be larger than {_KIB} ({MAX_VALUE:,} characters or items)")
    _charge(size)
    return value


_TOO_MUCH_BUILT = f"more than {MAX_BUILT // 1024 // 1024} MiB of text and lists built in one render"


def _charge(size: int) -> None:
    budget.built -= size
    if budget.built < 0:
        raise over(_TOO_MUCH_BUILT)


def _joined(parts: Iterable[str]) -> str:
    """`environment.concat`: the body of a `{% set %}` block, a macro or a `{% filter %}` block."""
    collected = list(parts)
    if sum(map(len, collected)) > MAX_VALUE:
        raise over(f"a block or macro would produce more than {_KIB}")
    return built("".join(collected))


def _printed(value: Any) -> Any:
    """`finalize`: every `{{ … }}` printed, also into a block's buffer, is charged."""
    if type(value) in _SCALARS:
        return value
    size = len(value) if isinstance(value, str) else weight(value)
    if size > MAX_OUTPUT:
        raise over(f"the rendered text is larger than {_KIB}")
    _charge(size)
    return value


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's iterable: each item is one iteration of the render's budget."""
    state = budget
    for item in iterable:
        state.iterations -= 1
        if state.iterations < 0:
            raise over(f"more than {MAX_ITERATIONS:,} loop iterations in one render (loops inside loops multiply)")
        yield item


def bounded_range(*arguments: int) -> range:
    """`range` with one budget per render, so nested loops cannot multiply it."""
    span = range(*arguments)
    budget.range_items -= len(span)
    if budget.range_items < 0:
        raise over(f"more than {MAX_RANGE:,} range() items in one render")
    return span


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    found = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    if len(text) + found * (len(new) - len(old)) > MAX_VALUE:
        raise over(f"replace() would build more than {_KIB}")


def _check_join(separator: Any, items: list[Any]) -> None:
    if len(items) > 1 and (len(items) - 1) * len(str(separator)) > MAX_VALUE:
        raise over(f"join() would build more than {_KIB}")


def _check_number(value: Any) -> None:
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise over(f"a number with more than {MAX_DIGITS:,} digits")


# Filters: every one that builds is charged; those that can multiply are checked first.

_Check = Callable[[list[Any], dict[str, Any]], None]


def _argument(arguments: list[Any], keywords: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    return arguments[index] if len(arguments) > index else keywords.get(name, default)


def _checking(original: Callable[..., Any], check: _Check | None = None) -> Callable[..., Any]:
    """`original` with its result charged, and `check(user arguments, keywords)` run first."""
    offset = 1 if getattr(original, "jinja_pass_arg", None) else 0

    @functools.wraps(original)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            arguments = list(args[offset:])
            check(arguments, kwargs)
            args = (*args[:offset], *arguments)
        return built(original(*args, **kwargs))

    return checked


def _replace(arguments: list[Any], keywords: dict[str, Any]) -> None:
    text, old, new = (str(_argument(arguments, keywords, i, n, "")) for i, n in enumerate(("s", "old", "new")))
    count = _argument(arguments, keywords, 3, "count")
    _check_replace(text, old, new, -1 if count is None else count)


def _joining(original: Callable[..., Any]) -> Callable[..., Any]:
    """`join`, checked before it runs (its own wrapper: it is the filter rules use most)."""

    @functools.wraps(original)
    def join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> Any:
        items = value if type(value) is list else list(value)
        _check_join(d, items)
        return built(original(eval_ctx, items, d, attribute))

    return join


def _filled(count_name: str) -> _Check:
    """`batch(n, fill_with)` and `slice(n, fill_with)` repeat the filler up to n times."""

    def check(arguments: list[Any], keywords: dict[str, Any]) -> None:
        count = _argument(arguments, keywords, 1, count_name, 0)
        filler = _argument(arguments, keywords, 2, "fill_with")
        per_item = 1 if filler is None else max(weight(filler), 1)
        if isinstance(count, int) and (count_name == "slices" or filler is not None) and count * per_item > MAX_VALUE:
            raise over(f"{'slice' if count_name == 'slices' else 'batch'}() would build more than {_KIB}")

    return check


def _serialized(arguments: list[Any], keywords: dict[str, Any]) -> None:
    indent = _argument(arguments, keywords, 1, "indent")
    if isinstance(indent, int) and indent > 16 or isinstance(indent, str) and len(indent) > 16:
        raise over("an indent of more than 16")
    if arguments and weight(arguments[0]) > MAX_VALUE:
        raise over(f"a value larger than {_KIB} cannot be turned into JSON")


def _urlize(arguments: list[Any], keywords: dict[str, Any]) -> None:
    text = str(_argument(arguments, keywords, 0, "value", ""))
    extra = sum(len(str(_argument(arguments, keywords, i, n) or "")) for i, n in ((3, "target"), (4, "rel")))
    if 2 * len(text) + len(text.split()) * (60 + extra) > MAX_VALUE:
        raise over(f"urlize() would build more than {_KIB}")


def _summed(original: Callable[..., Any]) -> Callable[..., Any]:
    """`sum(start=[])` joins lists: done in one pass here (Python's sum copies the total each time)."""

    @functools.wraps(original)
    def summed(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if not isinstance(start, list | tuple):
            return built(original(environment, iterable, attribute, start))
        if attribute is not None:
            iterable = map(make_attrgetter(environment, attribute), iterable)
        items = list(iterable)
        if not all(type(item) is type(start) for item in items):
            return built(original(environment, items, None, start))
        if len(start) + sum(map(len, items)) > MAX_VALUE:
            raise over(f"sum() would build more than {_KIB}")
        joined = [*start, *(x for item in items for x in item)]
        return built(joined if isinstance(start, list) else tuple(joined))

    return summed


_FILTER_CHECKS: dict[str, _Check] = {
    "replace": _replace, "batch": _filled("linecount"), "slice": _filled("slices"),
    "tojson": _serialized, "to_json": _serialized, "urlize": _urlize,
}  # fmt: skip


def bound_filters(filters: dict[str, Callable[..., Any]]) -> None:
    for name, function in list(filters.items()):
        if name == "sum":
            filters[name] = _summed(function)
        elif name == "join":
            filters[name] = _joining(function)
        elif name not in _PASS_THROUGH:
            filters[name] = _checking(function, _FILTER_CHECKS.get(name))
    filters[LOOP_FILTER] = counted


class BoundedCodeGenerator(CodeGenerator):
    """Jinja's code, with what it builds inline (list, tuple and dict literals, `~`) charged to the budget."""

    def _charged(self, visit: Callable[[Any, Frame], None], node: nodes.Node, frame: Frame) -> None:
        self.write("environment.built(")
        visit(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802
        self._charged(super().visit_Concat, node, frame)

    def visit_List(self, node: nodes.List, frame: Frame) -> None:  # noqa: N802
        self._charged(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:  # noqa: N802
        self._charged(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:  # noqa: N802
        if node.ctx == "store":  # a loop or assignment target, not a value
            super().visit_Tuple(node, frame)
        else:
            self._charged(super().visit_Tuple, node, frame)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset(("**", "*", "%", "+"))
    concat = staticmethod(_joined)  # type: ignore[assignment]
    built = staticmethod(built)

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_printed, **options)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        for kind, unsafe in _UNSAFE_METHODS.items():
            if isinstance(obj, kind) and attr in unsafe:
                return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"powers above {MAX_EXPONENT} are not allowed in templates")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if left.bit_length() * right > _MAX_BITS:
                raise over(f"a number with more than {MAX_DIGITS:,} digits")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int) and count > 1:
                    if max(weight(sequence), 1) * count > MAX_VALUE:
                        raise over(f"repetition would build more than {_KIB}")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > _MAX_BITS:
                raise over(f"a number with more than {MAX_DIGITS:,} digits")
        if operator == "%" and isinstance(left, str):
            raise SecurityError("the % text formatting operator is not allowed in templates; use ~ to join")
        result = super().call_binop(context, operator, left, right)
        if type(result) is int:
            _check_number(result)
            return result
        return built(result)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if isinstance(obj, Macro | LoopContext):
            return self._nested_call(context, obj, args, kwargs)
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(obj, "__name__", "")
            if name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
            elif name == "join" and args:
                items = list(args[0])
                _check_join(owner, items)
                args = (items, *args[1:])
            return built(super().call(context, obj, *args, **kwargs))
        result = super().call(context, obj, *args, **kwargs)
        return built(result) if obj is dict or owner is dict else result

    def _nested_call(self, context: Any, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A macro call, or a recursive loop's `loop(children)`: an iteration, and one level deeper."""
        budget.iterations -= 1
        if budget.iterations < 0:
            raise over(f"more than {MAX_ITERATIONS:,} loop iterations (and macro calls) in one render")
        if budget.depth >= MAX_CALL_DEPTH:
            raise over(f"macros or recursive loops nested more than {MAX_CALL_DEPTH} calls deep")
        if isinstance(obj, LoopContext) and args:
            args = (counted(args[0]), *args[1:])
        budget.depth += 1
        try:
            return super().call(context, obj, *args, **kwargs)
        finally:
            budget.depth -= 1


__all__ = ["LOOP_FILTER", "MAX_OUTPUT", "BoundedSandbox", "TemplateRenderError", "bound_filters", "bounded_range",
           "start_render", "weight"]  # fmt: skip
