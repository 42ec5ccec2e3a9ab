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
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import redis

from engine.runtime import lua
from engine.runtime.action_state import ACTION_PREFIX, DUE_ACTIONS
from engine.runtime.events import FINISHED_EVENTS, WAITING_QUEUES
from engine.runtime.fields import write_script
from engine.runtime.indexes import INDEXED_FIELD, INDEXED_SINCE, RULE_HEARD_KEPT, RULE_INDEX_PREFIX

if TYPE_CHECKING:
    from engine.runtime.action_plan import RecordWrite
    from engine.runtime.indexes import IndexWrite

log = logging.getLogger(__name__)

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
    catalogue: Sequence[str | int] = ()  # fields.lua's arguments: attributes events carried, written alongside


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
                            rule_heard_kept=RULE_HEARD_KEPT)  # fmt: skip
        self._commit = connection.register_script(source)
        self._fields = write_script(connection)

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
        keys = [lock_key, queue_key, event_key, state_key(entity_key), WAITING_QUEUES, state_received_key(entity_key)]
        if plan.catalogue:
            outcome = self._commit_with_fields(keys, arguments, plan.catalogue)
        else:
            outcome = self._commit(keys=keys, args=arguments)
        return Commit(outcome.decode() if isinstance(outcome, bytes) else outcome)

    def _commit_with_fields(self, keys: list[str], arguments: list[Any], fields: Sequence[str | int]) -> Any:
        """The commit and the attribute catalogue's observations (fields.py) in one round trip.

        Two scripts, not one: the catalogue's failure must never fail a commit. It is written
        whatever the commit answers: a commit refused for a lost lock (rare) counts its event twice.
        """
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._commit.sha, len(keys), *keys, *arguments)
            pipe.evalsha(self._fields.sha, 0, *fields)
            outcome, written = pipe.execute(raise_on_error=False)
        if isinstance(outcome, redis.exceptions.NoScriptError):  # Redis restarted, or its scripts flushed
            outcome = self._commit(keys=keys, args=arguments)
        elif isinstance(outcome, Exception):
            raise outcome
        if isinstance(written, redis.exceptions.NoScriptError):
            try:
                written = self._fields(keys=[], args=list(fields))
            except redis.RedisError as exc:
                written = exc
        if isinstance(written, Exception):
            log.warning("attribute catalogue: observations not written (%s)", written)
        return outcome
