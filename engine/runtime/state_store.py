"""Last known state of every lead and opportunity, and the atomic commit of one processed event.

The commit is one Lua script: it checks that this worker still holds the
entity's lock and that the event is still at the head of the entity's queue,
then pops it and writes the new state, the event's outcome, its action
records and the RQ jobs that run them, together. A worker that dies before
the commit changed nothing (the event is processed again); one that dies
after it changed everything (the event is not processed again).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import redis

from engine.runtime import lua
from engine.runtime.action_state import ACTION_PREFIX, DUE_ACTIONS
from engine.runtime.events import FINISHED_EVENTS, WAITING_QUEUES
from engine.runtime.fields import commit_constants
from engine.runtime.indexes import INDEXED_FIELD, INDEXED_SINCE, RULE_HEARD_KEPT, RULE_INDEX_PREFIX

if TYPE_CHECKING:
    from engine.runtime.action_plan import RecordWrite
    from engine.runtime.fields import CatalogueWrite
    from engine.runtime.indexes import IndexWrite

STATE_PREFIX = "hr:state:"
#: When each attribute of an entity's state was received (µs): `engine.state.next_state`.
STATE_AT_PREFIX = "hr:state-at:"


class StateChange(StrEnum):
    SET = "set"  # created / updated: the merged attributes
    DELETE = "del"  # deleted: removed once the rules have seen it
    KEEP = "keep"  # nothing to track (no id, or a failed event)


class Commit(StrEnum):
    OK = "ok"
    LOST_LOCK = "lost-lock"  # another worker took the entity over: stop, it will go on
    NOT_HEAD = "not-head"  # already committed by someone else


@dataclass(frozen=True)
class JobWrite:
    """An RQ job written by the commit: run now, or in `delay` seconds through RQ's scheduler."""

    key: str
    id: str
    queue_key: str
    scheduled_key: str
    fields: list[Any]
    delay: float | None = None


@dataclass
class CommitPlan:
    change: StateChange = StateChange.KEEP
    state: dict[str, Any] | None = None
    state_received: dict[str, int] | None = None
    event_fields: dict[str, Any] = field(default_factory=dict)
    records: Sequence[RecordWrite] = ()
    jobs: Sequence[JobWrite] = ()
    finished: bool = False  # the event has no action left to run: retention may remove it
    indexes: IndexWrite | None = None  # the console's indexes the event joins (None: leave them as they are)
    catalogue: Sequence[CatalogueWrite] = ()  # the attributes it carried (fields.py)


def state_key(entity_key: str) -> str:
    return f"{STATE_PREFIX}{entity_key}"


def state_received_key(entity_key: str) -> str:
    return f"{STATE_AT_PREFIX}{entity_key}"


def encode(value: Any) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


class StateStore:
    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        source = lua.render("commit.lua", finished_index=FINISHED_EVENTS, due_index=DUE_ACTIONS,
                            action_prefix_length=str(len(ACTION_PREFIX)), indexed_field=INDEXED_FIELD,
                            indexed_since=INDEXED_SINCE, rule_index_prefix=RULE_INDEX_PREFIX,
                            rule_heard_kept=RULE_HEARD_KEPT, **commit_constants())  # fmt: skip
        self._commit = connection.register_script(source)

    def load(self, entity_key: str) -> dict[str, Any] | None:
        raw = self.connection.get(state_key(entity_key))
        return json.loads(raw) if raw else None

    def commit(self, plan: CommitPlan, *, lock_key: str, token: str, queue_key: str, event_key: str,
               event_id: str, entity_key: str, lock_ttl_ms: int) -> Commit:  # fmt: skip
        arguments: list[Any] = [token, event_id, plan.change.value, encode(plan.state or {}), lock_ttl_ms,
                                "1" if plan.finished else "", encode(plan.state_received or {}),
                                len(plan.event_fields)]  # fmt: skip
        for name, value in plan.event_fields.items():
            arguments += [name, encode(value)]
        indexes = plan.indexes
        if indexes is None:
            arguments += ["", "", "", "", 0]
        else:
            arguments += [indexes.score, indexes.listing(), indexes.entity_keys, indexes.entity_index,
                          len(indexes.keys), *indexes.keys]  # fmt: skip
        arguments.append(len(plan.records))
        for record in plan.records:
            arguments += [record.key, "" if record.due_in_ms is None else record.due_in_ms, len(record.fields)]
            for name, value in record.fields.items():
                arguments += [name, value]
        arguments.append(len(plan.jobs))
        for job in plan.jobs:
            arguments += [job.key, job.id, job.queue_key, job.scheduled_key, "" if job.delay is None else job.delay,
                          len(job.fields) // 2, *job.fields]  # fmt: skip
        arguments.append(len(plan.catalogue))
        for write in plan.catalogue:
            arguments += write.arguments()
        keys = [lock_key, queue_key, event_key, state_key(entity_key), WAITING_QUEUES, state_received_key(entity_key)]
        outcome = self._commit(keys=keys, args=arguments)
        return Commit(outcome.decode() if isinstance(outcome, bytes) else outcome)
