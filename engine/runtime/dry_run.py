"""What a rule edit would change, before it goes live: replay stored events through both sets.

Each stored event is evaluated as it was processed (its recorded context: the
state before it, its changes) by the running set and by the candidate set from
disk. Nothing is sent, nothing is committed, throttles and the loop guard are
not consulted: this compares rules, not traffic.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from engine.rules.ruleset import RuleSet
from engine.runtime.events import EventStatus, EventStore, StoredEvent

DEFAULT_EVENTS = 1000


def dry_run(running: RuleSet, candidate: RuleSet, events: EventStore, *, limit: int = DEFAULT_EVENTS) -> dict[str, Any]:
    changed = []
    compared = 0
    for event_id in events.recent(limit):
        replayable = comparable(events.load(event_id))
        if replayable is None:
            continue
        event, context, body = replayable
        compared += 1
        before = matched_rules(running, context, body)
        after = matched_rules(candidate, context, body)
        if before != after:
            changed.append({"id": event.id, "type": event.type, "received_at": event.received_at,
                            "gained": [r for r in after if r not in before],
                            "lost": [r for r in before if r not in after]})  # fmt: skip
    return {"dry_run": True, "running": running.version, "candidate": candidate.version, "rules": len(candidate.rules),
            "events": compared, "changed": changed}  # fmt: skip


def comparable(event: StoredEvent | None) -> tuple[StoredEvent, dict[str, Any], Any] | None:
    """(event, the context its rules saw, its body), or None for one never processed to the end."""
    if event is None or event.status is not EventStatus.DONE or not event.context:
        return None
    try:
        return event, event.context, json.loads(event.body)
    except ValueError:
        return None


def matched_rules(rule_set: RuleSet, context: dict[str, Any], body: Any) -> list[str]:
    """Ids of the rules `rule_set` matches (evaluation writes `vars` into the context: each gets a copy)."""
    return [r.rule.id for r in rule_set.evaluate(copy.deepcopy(context), body=body).matched]
