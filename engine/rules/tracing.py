"""Tracers: evaluation calls `tracer.condition(...)` only when a tracer is given.

Production passes None (no cost); simulate, rule tests and event traces pass
a RecordingTracer. The closures are the same in both modes, so the
explanation can never disagree with the verdict.

What a tracer records is cut (SPEC §8): a 0.9 MB attribute seen by forty
conditions would otherwise make a 36 MB trace out of a 0.9 MB event. Only the
record is cut; the conditions saw, and judged, the whole value.
"""

from __future__ import annotations

import json
import math
from typing import Any

from engine.redaction import redact
from engine.rules.values import MISSING

TRACE_LIMIT = 256  # characters of a traced value (of its compact JSON for a list or mapping)
ERROR_LIMIT = 1024  # an exception's message may quote the value it choked on
CUT = "…"  # ends a cut text; the last item (a list) or key (a mapping) of a cut container

_LIST_MARKER = len(',"…"')
_MAPPING_MARKER = len(',"…":"…"')
_MIN_ROOM = 12  # below this a piece of an item says nothing: stop and mark the rest as omitted


def jsonable(value: Any) -> Any:
    if value is MISSING:
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def cut(value: Any, limit: int = TRACE_LIMIT) -> tuple[Any, int | None]:
    """A JSON-able copy of `value` bounded by `limit`, and the full length when something was cut.

    A text keeps its first `limit` characters and then `…`. A list or mapping whose compact JSON
    is longer keeps its leading items (each cut to the room left) and then a `…` item (a `…` key),
    so the console still prints "saw [Youtube, Sendo, …]" rather than an opaque string; its compact
    JSON then stays within `limit`. The length is that of the text, or of the container's compact
    JSON, and is None when nothing was cut. Non-finite numbers become text so the record is strict
    JSON.
    """
    kind = type(value)
    # Fast paths: the tracer calls this twice per condition, and most values are short scalars
    # or short lists of them (a 1,000-rule set traces ~700 conditions per event).
    if kind is str:
        return (value, None) if len(value) <= limit else (value[:limit] + CUT, len(value))
    if kind is int or kind is bool or value is None:
        return value, None
    if value is MISSING:
        return None, None
    if kind is float and math.isfinite(value):
        return value, None
    if kind is list and all(type(item) is str for item in value):
        # Each character is at most 6 in JSON (\uXXXX), plus quotes and a comma per item.
        if 2 + sum(6 * len(item) + 3 for item in value) <= limit:
            return list(value), None
    plain = _plain(value)
    if isinstance(plain, str):
        return (plain[:limit] + CUT, len(plain)) if len(plain) > limit else (plain, None)
    if isinstance(plain, list | dict):
        size = _size(plain)
        if size > limit:
            return _shrink(plain, limit), size
    return plain, None


def _plain(value: Any) -> Any:
    if value is MISSING or value is None:
        return None
    if isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _size(plain: Any) -> int:
    return len(json.dumps(plain, ensure_ascii=False, separators=(",", ":")))


def _shrink(container: list[Any] | dict[str, Any], limit: int) -> list[Any] | dict[str, Any]:
    """The leading items of a container that fit in `limit` characters of compact JSON, marker included."""
    if isinstance(container, dict):
        kept: dict[str, Any] = {}
        used = 2 + _MAPPING_MARKER  # the braces, and room for the marker
        for key, item in container.items():
            head = _size(key) + 1 + (1 if kept else 0)  # "key": and the comma before it
            fitted = _fit(item, limit - used - head)
            if fitted is None:
                break
            piece, size = fitted
            kept[key] = piece
            used += head + size
            if piece is not item:
                break  # this item took the last of the room
        if len(kept) < len(container):
            kept[CUT] = CUT
        return kept
    items: list[Any] = []
    used = 2 + _LIST_MARKER
    for item in container:
        comma = 1 if items else 0
        fitted = _fit(item, limit - used - comma)
        if fitted is None:
            break
        piece, size = fitted
        items.append(piece)
        used += comma + size
        if piece is not item:
            break
    if len(items) < len(container):
        items.append(CUT)
    return items


def _fit(plain: Any, room: int) -> tuple[Any, int] | None:
    """`plain` itself when its JSON fits in `room`, else cut to fit; None when no useful piece fits."""
    size = _size(plain)
    if size <= room:
        return plain, size
    if room < _MIN_ROOM:
        return None
    if isinstance(plain, str):
        keep = room - 3  # the quotes and the `…`
        piece = plain[:keep] + CUT
        while (size := _size(piece)) > room:  # escaped characters take more than one
            keep = max(0, keep - (size - room))
            piece = plain[:keep] + CUT
        return piece, size
    if isinstance(plain, list | dict):
        piece = _shrink(plain, room)
        return piece, _size(piece)
    return None  # a number too long for the room left


class RecordingTracer:
    """Records each condition's path, verdict, and the (cut) values it saw.

    `secrets` are masked before anything is cut: a secret split by the cut would no longer be
    found whole afterwards, and its first characters would be stored and shown.
    """

    def __init__(self, secrets: frozenset[str] = frozenset()) -> None:
        self.conditions: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.secrets = secrets

    def condition(
        self, path: str, result: bool, value: Any = MISSING, expected: Any = None, error: str | None = None,
        about: dict[str, Any] | None = None,
    ) -> None:
        """`about`: what the condition is (op, field or path, modifiers), for its sentence."""
        if self.secrets:
            value, expected = self._masked(value), self._masked(expected)
        shown, length = cut(value)
        entry: dict[str, Any] = {"path": path, "result": result, "value": shown}
        if length is not None:
            entry["value_length"] = length
        entry["expected"], length = cut(expected)
        if length is not None:
            entry["expected_length"] = length
        if value is MISSING:
            entry["missing"] = True
        if error:
            entry["error"] = cut(self._masked(error), ERROR_LIMIT)[0]
        if about:
            entry.update(about)
        self.conditions.append(entry)

    def _masked(self, value: Any) -> Any:
        return redact(value, self.secrets) if self.secrets and value is not MISSING else value

    def note(self, text: str) -> None:
        self.notes.append(text)
