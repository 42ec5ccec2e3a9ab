"""Tracers: evaluation calls `tracer.condition(...)` only when a tracer is given.

Production passes None (no cost); simulate, rule tests and event traces pass
a RecordingTracer. The closures are the same in both modes, so the
explanation can never disagree with the verdict.
"""

from __future__ import annotations

from typing import Any

from engine.rules.values import MISSING


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


class RecordingTracer:
    def __init__(self) -> None:
        self.conditions: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def condition(
        self, path: str, result: bool, value: Any = MISSING, expected: Any = None, error: str | None = None
    ) -> None:
        entry: dict[str, Any] = {"path": path, "result": result, "value": jsonable(value),
                                 "expected": jsonable(expected)}  # fmt: skip
        if value is MISSING:
            entry["missing"] = True
        if error:
            entry["error"] = error
        self.conditions.append(entry)

    def note(self, text: str) -> None:
        self.notes.append(text)
