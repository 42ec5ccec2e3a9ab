"""Last known state, the pure part: merge an event into what we knew, and say what changed.

Redis persistence of the state lives in the runtime; this module only
computes, so `simulate`, rule tests and the worker agree by construction.

The state also remembers when each attribute's value was received (the
receiving machine's clock, in µs). Events of one lead are evaluated in the
order received, but one fed late from a machine's journal (it lost Redis while
another machine went on) can come after newer events were processed: its
values that are older than what we know are *stale* — not applied, not counted
as changes — so the state always ends at the latest value Hana sent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

_ABSENT = object()
#: In the receive times of a deleted entity: when the delete was received. Nothing received before it
#: brings the entity back.
DELETED = "__deleted__"


def stale_attributes(attributes: Mapping[str, Any], known_at: Mapping[str, int], received_us: int) -> list[str]:
    """The event's attributes whose known value, or the entity's deletion, was received after this event."""
    if known_at.get(DELETED, 0) > received_us:
        return list(attributes)
    return [name for name in attributes if known_at.get(name, 0) > received_us]


def apply_known_state(context: dict[str, Any], known: dict[str, Any] | None, *, stale: Collection[str] = ()) -> None:
    """Fill `previous`, `changes` and the merged entity into a normalized context (in place).

    With no known state every attribute in the event counts as changed from null. `stale`
    attributes of the event keep their known (newer) value.
    """
    entity = context["event"]["entity"]
    current = context.get(entity)
    if not isinstance(current, dict):
        current = {}
    if stale:
        current = {name: value for name, value in current.items() if name not in stale}
    if known is None:
        context["previous"] = {}
        context["changes"] = list(current)
        return
    context["previous"] = {entity: dict(known)}
    context["changes"] = [name for name, value in current.items() if known.get(name, _ABSENT) != value]
    context[entity] = {**known, **current}


@dataclass(frozen=True)
class NextState:
    """What an event leaves of its entity's state: values and when each was received (None: deleted)."""

    values: dict[str, Any] | None
    received: dict[str, int] | None


def next_state(
    event_type: str,
    attributes: Mapping[str, Any],
    received_us: int,
    known: Mapping[str, Any] | None,
    known_at: Mapping[str, int],
) -> NextState:
    """`*.created` replaces, `*.updated` merges, `*.deleted` removes — never over a newer value.

    A deleted entity keeps only when it was deleted (`values` None): an event received before
    that, fed late, does not bring it back.
    """
    deleted_at = known_at.get(DELETED, 0)
    if deleted_at > received_us:
        return NextState(None, {DELETED: deleted_at})
    newer = {name for name, at in known_at.items() if at > received_us and name != DELETED}
    fresh = {name: value for name, value in attributes.items() if name not in newer}
    kept = {name: value for name, value in (known or {}).items() if name in newer}
    if event_type.endswith(".deleted"):
        if kept:  # the entity changed after Hana sent this delete: keep what came later
            return NextState(kept, {name: known_at[name] for name in kept})
        return NextState(None, {DELETED: received_us})
    base = dict(known or {}) if event_type.endswith(".updated") else kept
    values = {**base, **fresh}
    received = {name: at for name, at in known_at.items() if name in values and name != DELETED}
    received.update(dict.fromkeys(fresh, received_us))
    return NextState(values, received)
