"""Last known state, the pure part: merge an event into what we knew, and say what changed.

Redis persistence of the state lives in the runtime; this module only
computes, so `simulate`, rule tests and the worker agree by construction.
"""

from __future__ import annotations

from typing import Any

_ABSENT = object()


def apply_known_state(context: dict[str, Any], known: dict[str, Any] | None) -> None:
    """Fill `previous`, `changes` and the merged entity into a normalized context (in place).

    With no known state every attribute in the event counts as changed from null.
    """
    entity = context["event"]["entity"]
    current = context.get(entity)
    if not isinstance(current, dict):
        current = {}
    if known is None:
        context["previous"] = {}
        context["changes"] = list(current)
        return
    context["previous"] = {entity: dict(known)}
    context["changes"] = [name for name, value in current.items() if known.get(name, _ABSENT) != value]
    context[entity] = {**known, **current}
