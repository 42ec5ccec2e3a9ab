"""Last known state of every lead and opportunity, and the atomic commit of one processed event.

The commit is one Lua script: it checks that this worker still holds the
entity's lock and that the event is still at the head of the entity's queue,
then pops it, writes the new state and the event's outcome together. A worker
that dies before the commit changed nothing (the event is processed again);
one that dies after it changed everything (the event is not processed again).
"""

from __future__ import annotations

import json
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


def state_key(entity_key: str) -> str:
    return f"{STATE_PREFIX}{entity_key}"


class StateStore:
    _commit_source = resources.files("engine.runtime").joinpath("commit.lua").read_text(encoding="utf-8")

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._commit = connection.register_script(self._commit_source)

    def load(self, entity_key: str) -> dict[str, Any] | None:
        raw = self.connection.get(state_key(entity_key))
        return json.loads(raw) if raw else None

    def commit(
        self,
        *,
        lock_key: str,
        token: str,
        queue_key: str,
        event_key: str,
        event_id: str,
        entity_key: str,
        change: StateChange,
        state: dict[str, Any] | None,
        event_fields: dict[str, str],
        lock_ttl_ms: int,
    ) -> Commit:
        arguments: list[Any] = [token, event_id, change.value, json.dumps(state or {}, ensure_ascii=False), lock_ttl_ms]
        for name, value in event_fields.items():
            arguments += [name, value]
        keys = [lock_key, queue_key, event_key, state_key(entity_key), WAITING_QUEUES]
        outcome = self._commit(keys=keys, args=arguments)
        return Commit(outcome.decode() if isinstance(outcome, bytes) else outcome)
