"""The console's indexes of events: by lead/opportunity, by rule, by type, by final status.

Each index is a sorted set of event ids scored by receive time in µs, the score the
events index (`hr:events`) gives them, so any index reads newest first or oldest first
like that one. The worker's commit (commit.lua) writes them with the event's outcome,
atomically; the receiver never does, so its hot path pays nothing for the console.

    hr:idx:entity:<application>:<lead|opportunity>:<id>   every processed event of one entity
    hr:idx:entity-keys:<id>                               the entity indexes of one id (any application
                                                          or kind): a timeline asked for by id alone
    hr:idx:rule:<rule id>                                 the latest RULE_HEARD_KEPT events the rule
                                                          listened to, matched or not
    hr:idx:matched:<rule id>                              events it matched (`matched`: not throttled
                                                          or held), what the list's rule filter wants
    hr:idx:type:<event type>                              events of one type
    hr:idx:status:<done|failed|quarantined>               the status the event ended with
    hr:idx:status:duplicate                               Hana's retries: written by the accept script
                                                          (events.DUPLICATES_INDEX), they have no commit
    hr:idx:since                                          Redis time (µs) of the first indexed commit
    hr:idx:swept                                          receive time (µs) up to which the sweep went

Quarantined events never reach a worker: the accept script stores them finished. The
workers' maintenance (`sweep`, run with retention) walks the events received since its
last run, oldest first, and indexes the quarantined ones by status and type; it stops at
the first event not committed yet, so everything received before `hr:idx:swept` is in
the type and status indexes. Views walk what came after it (seconds of traffic), and what
came before `hr:idx:since` (events stored by an older version; gone after one retention).

The event's hash keeps the list of sorted sets it joined (`indexed`), so retention
(forget.lua) takes it out of each when it removes the event, and a second commit of
the same event (put back in its queue and processed again) leaves those it no longer
belongs to. The receiver's replay makes a new event, indexed on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from engine.runtime import events, lua
from engine.runtime.events import EVENT_KEY_PREFIX, EVENTS_INDEX, EventStatus, entity_key, event_key, received_us_of

ENTITY_INDEX_PREFIX = "hr:idx:entity:"
ENTITY_KEYS_PREFIX = "hr:idx:entity-keys:"
RULE_INDEX_PREFIX = "hr:idx:rule:"
MATCHED_INDEX_PREFIX = "hr:idx:matched:"
TYPE_INDEX_PREFIX = "hr:idx:type:"
STATUS_INDEX_PREFIX = "hr:idx:status:"
INDEXED_SINCE = "hr:idx:since"
SWEPT = "hr:idx:swept"
#: The field of an event's hash naming the sorted sets it is in (a JSON list; events.py, whose
#: accept script indexes the duplicates itself).
INDEXED_FIELD = events.INDEXED_FIELD
#: The statuses a commit can give an event: indexed as soon as it is committed.
COMMITTED_STATUSES = (EventStatus.DONE.value, EventStatus.FAILED.value)
#: Every status with an index (quarantined ones are indexed by the sweep).
INDEXED_STATUSES = (*COMMITTED_STATUSES, EventStatus.QUARANTINED.value)
#: The kinds of entity an event is about (`ticket.*` arrives as `opportunity.*`).
ENTITY_KINDS = ("lead", "opportunity")
#: A rule's page shows the recent events it heard; every event a type's rules hear, kept for the
#: whole retention, would cost an entry per event and listening rule (20 for a big rule set).
RULE_HEARD_KEPT = 1000
#: One sweep reads events a batch per round trip, at most this many batches per maintenance run.
SWEEP_BATCH = 1000
SWEEP_ROUNDS = 20
#: The sweep waits at an event not committed yet (its indexes are to come), unless it has waited
#: this long: an event stuck in a queue must not stop the sweep for good.
STUCK_US = 600 * 1_000_000
_UNCOMMITTED = frozenset((EventStatus.RECEIVED.value.encode(), EventStatus.PROCESSING.value.encode()))


@dataclass(frozen=True)
class IndexWrite:
    """What one commit adds to the indexes: the event's score, its sorted sets, its entity's id entry."""

    score: int  # receive time, µs: the event's score in hr:events
    keys: tuple[str, ...]
    entity_keys: str = ""  # the hr:idx:entity-keys set to add `entity_index` to ('' = no entity)
    entity_index: str = ""

    def listing(self) -> str:
        """The `indexed` field: JSON, because an entity or rule id may hold any character."""
        return json.dumps(self.keys, ensure_ascii=False, separators=(",", ":"))


def entity_index_key(application_id: str | None, event_type: str, entity_id: str) -> str:
    return ENTITY_INDEX_PREFIX + entity_key(application_id, event_type, entity_id)


def entity_keys_key(entity_id: str) -> str:
    return ENTITY_KEYS_PREFIX + entity_id


def rule_index_key(rule_id: str) -> str:
    return RULE_INDEX_PREFIX + rule_id


def matched_index_key(rule_id: str) -> str:
    return MATCHED_INDEX_PREFIX + rule_id


def status_index_key(status: str) -> str:
    return STATUS_INDEX_PREFIX + status


def type_index_key(event_type: str) -> str:
    return TYPE_INDEX_PREFIX + event_type


def entity_index_parts(entity_index: str, entity_id: str) -> tuple[str | None, str]:
    """(application or None, kind) of an entity index key of this id; the application and the id may hold ':'."""
    middle = entity_index[len(ENTITY_INDEX_PREFIX) : -(len(entity_id) + 1)]  # "<application>:<kind>"
    application, _, kind = middle.rpartition(":")
    return (None if application == "-" else application), kind


def index_write(event_id: str, *, application_id: str | None, event_type: str, entity_id: str | None,
                status: str, listened: Iterable[str] = (), matched: Iterable[str] = ()) -> IndexWrite:  # fmt: skip
    """The indexes one event belongs to, in a fixed order (entity, status, type, rules)."""
    keys: list[str] = []
    entity_keys = entity_index = ""
    if entity_id is not None:
        entity_index = entity_index_key(application_id, event_type, entity_id)
        entity_keys = entity_keys_key(entity_id)
        keys.append(entity_index)
    if status in INDEXED_STATUSES:
        keys.append(status_index_key(status))
    keys.append(type_index_key(event_type))
    keys += [rule_index_key(rule_id) for rule_id in dict.fromkeys(listened)]
    keys += [matched_index_key(rule_id) for rule_id in dict.fromkeys(matched)]
    return IndexWrite(received_us_of(event_id), tuple(keys), entity_keys, entity_index)


def indexed_since(connection: redis.Redis) -> int | None:
    """When indexing began (µs, Redis's clock); None before the first indexed commit."""
    return _number(connection.get(INDEXED_SINCE))


def swept_until(connection: redis.Redis, since: int) -> int:
    """Receive time (µs) up to which every event is in the type and status indexes."""
    swept = _number(connection.get(SWEPT))
    return swept if swept is not None and swept >= since else since - 1


def _number(raw: Any) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


class Sweep:
    """The maintenance step that indexes quarantined events (see the module's docstring)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        source = lua.render("sweep.lua", event_prefix=EVENT_KEY_PREFIX, indexed_field=INDEXED_FIELD, swept=SWEPT)
        self._index = connection.register_script(source)

    def run(self, *, batch: int = SWEEP_BATCH, rounds: int = SWEEP_ROUNDS) -> int:
        """Index the quarantined events received since the last sweep; how many there were."""
        since = indexed_since(self.connection)
        if since is None:
            return 0  # no commit indexed yet: the views walk every event
        seconds, microseconds = self.connection.time()
        stuck_before = seconds * 1_000_000 + microseconds - STUCK_US
        cursor, indexed = swept_until(self.connection, since), 0
        for _ in range(rounds):
            entries = self.connection.zrangebyscore(EVENTS_INDEX, f"({cursor}", "+inf", start=0, num=batch,
                                                    withscores=True)  # fmt: skip
            if not entries:
                break
            reached, writes, waiting = self._read(entries, cursor, stuck_before, full=len(entries) == batch)
            arguments: list[str | int] = [reached, EventStatus.QUARANTINED.value]
            for event_id, write in writes:
                arguments += [event_id, write.score, write.listing(), len(write.keys), *write.keys]
            if writes or reached != cursor:
                self._index(keys=[], args=arguments)
            indexed += len(writes)
            if waiting or len(entries) < batch or reached == cursor:
                break
            cursor = reached
        return indexed

    def _read(self, entries: list[Any], cursor: int, stuck_before: int,
              *, full: bool) -> tuple[int, list[tuple[str, IndexWrite]], bool]:  # fmt: skip
        """(cursor reached, the quarantined events to index, whether an uncommitted event stopped it)."""
        with self.connection.pipeline(transaction=False) as pipe:
            for member, _ in entries:
                pipe.hmget(event_key(member.decode()), "status", "type")
            found = pipe.execute()
        reached, waiting = cursor, False
        writes: list[tuple[str, IndexWrite]] = []
        for (member, score), (status, event_type) in zip(entries, found, strict=True):
            if status in _UNCOMMITTED and score >= stuck_before:
                waiting = True
                break
            if status == EventStatus.QUARANTINED.value.encode() and event_type:
                event_id = member.decode()
                write = index_write(event_id, application_id=None, event_type=event_type.decode(), entity_id=None,
                                    status=EventStatus.QUARANTINED.value)  # fmt: skip
                writes.append((event_id, write))
            reached = int(score)
        if full and not waiting:
            # The next batch starts after `reached`: events sharing the last score and left out of this
            # batch would be skipped, so stop before that score (its events are read again, harmlessly).
            earlier = [int(score) for _, score in entries if int(score) < reached]
            reached = max(earlier) if earlier else reached
        return reached, writes, waiting
