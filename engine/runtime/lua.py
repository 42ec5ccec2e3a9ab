"""Lua scripts with per-process constants written into their source.

Every argument of a script call costs about a microsecond to pack in Python
and again to read in Redis. Values that never change in a process (RQ's job
fields, the retention) are therefore written into the script as literals once,
instead of being sent with every call.
"""

from __future__ import annotations

import string
from importlib import resources

#: Bytes a Lua literal may hold as they are; every other byte is written as \ddd.
_PLAIN = frozenset((string.ascii_letters + string.digits + "_.:-").encode())


def literal(value: str | bytes | int) -> str:
    """A Lua string literal for `value`, exact for any bytes (no quoting rule to get wrong)."""
    raw = str(value).encode() if isinstance(value, str | int) else value
    return "'" + "".join(chr(b) if b in _PLAIN else f"\\{b:03d}" for b in raw) + "'"


def render(name: str, **values: str | bytes | int | list[str | bytes | int]) -> str:
    """The script `engine/runtime/<name>` with each ${placeholder} replaced by a literal.

    A list becomes comma-separated literals, for the middle of an argument list.
    Every ${placeholder} must be given: a forgotten one is an error here, not in Redis.
    """
    source = resources.files("engine.runtime").joinpath(name).read_text(encoding="utf-8")
    rendered = {
        key: ", ".join(literal(item) for item in value) if isinstance(value, list) else literal(value)
        for key, value in values.items()
    }
    return string.Template(source).substitute(rendered)
