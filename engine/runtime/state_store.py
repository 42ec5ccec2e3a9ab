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
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any

import redis

from engine.runtime.events import WAITING_QUEUES

STATE_PREFIX = "hr:state:"


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
    """An RQ job written by the commit: run now, or at `at` (unix seconds) by RQ's scheduler."""

    key: str
    id: str
    queue_key: str
    scheduled_key: str
    fields: list[Any]
    at: int | None = None


@dataclass
class CommitPlan:
    change: StateChange = StateChange.KEEP
    state: dict[str, Any] | None = None
    event_fields: dict[str, Any] = field(default_factory=dict)
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    jobs: list[JobWrite] = field(default_factory=list)


def state_key(entity_key: str) -> str:
    return f"{STATE_PREFIX}{entity_key}"


def encode(value: Any) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


class StateStore:
    _commit_source = resources.files("engine.runtime").joinpath("commit.lua").read_text(encoding="utf-8")

    def __init__(self, connection: redis.Redis, *, retention: float) -> None:
        self.connection = connection
        self.retention = max(int(retention), 1)
        self._commit = connection.register_script(self._commit_source)

    def load(self, entity_key: str) -> dict[str, Any] | None:
        raw = self.connection.get(state_key(entity_key))
        return json.loads(raw) if raw else None

    def commit(self, plan: CommitPlan, *, lock_key: str, token: str, queue_key: str, event_key: str,
               event_id: str, entity_key: str, lock_ttl_ms: int) -> Commit:  # fmt: skip
        arguments: list[Any] = [token, event_id, plan.change.value, encode(plan.state or {}), lock_ttl_ms,
                                self.retention, len(plan.event_fields)]  # fmt: skip
        for name, value in plan.event_fields.items():
            arguments += [name, encode(value)]
        arguments.append(len(plan.records))
        for key, values in plan.records:
            arguments += [key, len(values)]
            for name, value in values.items():
                arguments += [name, encode(value)]
        arguments.append(len(plan.jobs))
        for job in plan.jobs:
            arguments += [job.key, job.id, job.queue_key, job.scheduled_key, "" if job.at is None else job.at,
                          len(job.fields) // 2, *job.fields]  # fmt: skip
        keys = [lock_key, queue_key, event_key, state_key(entity_key), WAITING_QUEUES]
        outcome = self._commit(keys=keys, args=arguments)
        return Commit(outcome.decode() if isinstance(outcome, bytes) else outcome)
