"""Read models for the console and the admin API: one way to list and filter events, two faces.

Listing reads only the few fields a row shows (HMGET in a pipeline, a batch at a time),
never the bodies. A filter by lead/opportunity, rule, type or status walks that filter's
index (engine/runtime/indexes.py: written by the worker's commit, and for quarantined
events by the workers' maintenance) instead of every event, so a rare lead or type costs
what its own events cost. The other filters still apply to each row read, so an index
only has to hold every event the filter could keep.

Indexes hold the events committed since indexing began (`hr:idx:since`). The events
received before it (stored by an older version, or waiting when it was installed) are
found as before, by walking the events index, but only that older part of it: on a fresh
install it is empty, after an upgrade it ages out with retention. A filter by application
alone, or by the status of events not processed yet (received, processing), walks the
events index newest first: those are the newest. The sweep (indexes.py) passes an event
left unprocessed for over 10 minutes, and never sees one fed late from a journal after a
Redis outage: a type filter finds those once a worker commits them, and the quarantined
ones among the late only in the unfiltered list.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from engine.hana import canonical_event_type, entity_of
from engine.runtime.events import ENTITY_QUEUE_PREFIX, EVENTS_INDEX, EventStatus, event_key, received_us_of
from engine.runtime.indexes import (
    COMMITTED_STATUSES,
    ENTITY_INDEX_PREFIX,
    ENTITY_KINDS,
    entity_index_key,
    entity_index_parts,
    entity_keys_key,
    indexed_since,
    matched_index_key,
    rule_index_key,
    status_index_key,
    swept_until,
    type_index_key,
)

ROW_FIELDS = ("type", "received_at", "status", "matched", "application_id", "entity_id")
#: How many ids one round trip reads while walking an index (the first read takes only what a page needs).
BATCH = 200
#: A filtered list gives up after looking at this many events (the page says so).
MAX_SCANNED = 20_000


@dataclass(frozen=True)
class EventFilter:
    type: str | None = None
    status: str | None = None
    rule: str | None = None
    application: str | None = None
    entity: str | None = None  # a lead or opportunity id

    @classmethod
    def from_arguments(cls, arguments: Any) -> EventFilter:
        """From a query string; empty values mean "any". Raises ValueError with the reason."""

        def value(name: str) -> str | None:
            text = (arguments.get(name) or "").strip()
            return text or None

        event_type = value("type")
        if event_type and canonical_event_type(event_type) is None:
            raise ValueError(f"unknown event type {event_type!r}")
        status = value("status")
        if status and status not in {s.value for s in EventStatus}:
            raise ValueError(f"status must be one of {', '.join(s.value for s in EventStatus)}")
        return cls(type=canonical_event_type(event_type) if event_type else None, status=status,
                   rule=value("rule"), application=value("application"), entity=value("entity"))  # fmt: skip

    @property
    def active(self) -> bool:
        return any((self.type, self.status, self.rule, self.application, self.entity))

    def keeps(self, row: dict[str, Any]) -> bool:
        return ((not self.type or row["type"] == self.type) and (not self.status or row["status"] == self.status)
                and (not self.rule or self.rule in row["matched"])
                and (not self.application or row["application_id"] == self.application)
                and (not self.entity or row["entity_id"] == self.entity))  # fmt: skip


@dataclass(frozen=True)
class EventPage:
    rows: list[dict[str, Any]]
    next_offset: int | None  # where the next page starts in the index walked (None: no more)
    scanned_all: bool  # False when the walk stopped at MAX_SCANNED before the end


def list_events(connection: redis.Redis, wanted: EventFilter, *, limit: int, offset: int = 0) -> EventPage:
    """Newest first, `limit` rows from position `offset` of the index the filter walks.

    The index is chosen by a fixed order (lead/opportunity, rule, status, type), not by
    size: the next page's offset must mean the same position in the same index.
    """
    source = _source_for(connection, wanted)
    rows: list[dict[str, Any]] = []
    for position, row in _walk(connection, source, offset, first=limit):
        if position - offset >= MAX_SCANNED:
            return EventPage(rows, position, scanned_all=False)
        if wanted.keeps(row):
            rows.append(row)
            if len(rows) == limit:
                more = source.size(connection) > position + 1
                return EventPage(rows, position + 1 if more else None, scanned_all=True)
    return EventPage(rows, None, scanned_all=True)


def entity_events(connection: redis.Redis, entity_id: str, *, application: str | None = None,
                  limit: int = 200) -> list[dict[str, Any]]:  # fmt: skip
    """A lead's or opportunity's timeline: its latest `limit` events, oldest first, waiting ones included.

    Without `application`, every entity with this id (in any application, lead or
    opportunity) that a worker has indexed; with it, also one whose first events still wait.
    """
    wanted = EventFilter(entity=entity_id, application=application)
    return list(reversed(list_events(connection, wanted, limit=limit).rows))


def rule_events(connection: redis.Redis, rule_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """The latest events the rule listened to, newest first; `row["matched"]` says whether it matched.

    Only what the rule index holds: whether a rule listened to an event processed before
    indexing began is not in its row (the list's rule filter still finds those it matched).
    """
    walk = _walk(connection, _Range(rule_index_key(rule_id)), 0, first=limit)
    return [row for _, row in itertools.islice(walk, limit)]


def row(event_id: str, values: list[bytes | None]) -> dict[str, Any]:
    """One list row: the admin API's summary plus the application and the entity."""
    text = [v.decode(errors="replace") if v is not None else None for v in values]
    try:
        matched = json.loads(text[3]) if text[3] else []
    except ValueError:
        matched = []
    status = text[2] if text[2] in {s.value for s in EventStatus} else EventStatus.FAILED.value
    return {"id": event_id, "type": text[0] or "", "received_at": text[1] or "", "status": status,
            "matched": matched if isinstance(matched, list) else [], "application_id": text[4],
            "entity_id": text[5]}  # fmt: skip


# Sources: the ids a list walks, newest first, read a slice at a time ---------------------------------------------


class _Source(Protocol):
    def size(self, connection: redis.Redis) -> int: ...

    def ids(self, connection: redis.Redis, start: int, count: int) -> list[str]: ...


@dataclass(frozen=True)
class _Range:
    """The members of one sorted set scored from `low` to `high` (Redis score bounds), newest first."""

    key: str
    low: str = "-inf"
    high: str = "+inf"

    def size(self, connection: redis.Redis) -> int:
        if (self.low, self.high) == ("-inf", "+inf"):
            return int(connection.zcard(self.key))
        return int(connection.zcount(self.key, self.low, self.high))

    def ids(self, connection: redis.Redis, start: int, count: int) -> list[str]:
        found = connection.zrevrangebyscore(self.key, self.high, self.low, start=start, num=count)
        return [member.decode() for member in found]


@dataclass(frozen=True)
class _Listed:
    """Ids already read and ordered (one entity's: a few indexes and queues merged)."""

    members: Sequence[str]

    def size(self, connection: redis.Redis) -> int:
        return len(self.members)

    def ids(self, connection: redis.Redis, start: int, count: int) -> list[str]:
        return list(self.members[start : start + count])


@dataclass
class _Chain:
    """Sources one after the other: the indexed events, then the older ones walked."""

    parts: Sequence[_Source]
    _sizes: dict[int, int] = field(default_factory=dict)

    def _size_of(self, connection: redis.Redis, index: int) -> int:
        if index not in self._sizes:
            self._sizes[index] = self.parts[index].size(connection)
        return self._sizes[index]

    def size(self, connection: redis.Redis) -> int:
        return sum(self._size_of(connection, index) for index in range(len(self.parts)))

    def ids(self, connection: redis.Redis, start: int, count: int) -> list[str]:
        found: list[str] = []
        for index, part in enumerate(self.parts):
            size = self._size_of(connection, index)
            if start >= size:
                start -= size
                continue
            found += part.ids(connection, start, count - len(found))
            start = 0
            if len(found) >= count:
                break
        return found


def _source_for(connection: redis.Redis, wanted: EventFilter) -> _Source:
    """The index this filter walks, between the newest events not swept yet and those indexed before it began.

    Lead/opportunity, rule, done and failed are indexed by the commit itself: their index is
    whole up to now. Quarantined and type are whole up to the last sweep (`hr:idx:swept`), so
    the few seconds of events after it are walked first.
    """
    swept_only = wanted.status == EventStatus.QUARANTINED or (wanted.type and not wanted.status)
    if not (wanted.entity or wanted.rule or wanted.status in COMMITTED_STATUSES or swept_only):
        return _Range(EVENTS_INDEX)  # application, or a status only the newest events have
    since = indexed_since(connection)
    if since is None:
        return _Range(EVENTS_INDEX)  # nothing indexed yet: every event is walked, as before indexes
    older = _Range(EVENTS_INDEX, high=f"({since}")
    if wanted.entity:
        return _Chain([_entity_source(connection, wanted, since), older])
    if wanted.rule:
        return _Chain([_Range(matched_index_key(wanted.rule), low=str(since)), older])
    if wanted.status in COMMITTED_STATUSES:
        return _Chain([_Range(status_index_key(wanted.status), low=str(since)), older])
    swept = swept_until(connection, since)
    index = status_index_key(wanted.status) if wanted.status else type_index_key(wanted.type or "")
    return _Chain([_Range(EVENTS_INDEX, low=f"({swept}"), _Range(index, low=str(since), high=str(swept)), older])


def _entity_source(connection: redis.Redis, wanted: EventFilter, since: int) -> _Source:
    """The entity's indexed events and those waiting in its queues (received since `since`), newest first.

    One index and nothing waiting (the usual case) is read lazily, a page at a time; several
    (the same id in two applications, or as a lead and an opportunity) or events waiting are
    merged by receive time, each index read up to MAX_SCANNED.
    """
    assert wanted.entity is not None
    entity_id = wanted.entity
    kinds = (entity_of(wanted.type),) if wanted.type else ENTITY_KINDS
    keys = {raw.decode() for raw in connection.smembers(entity_keys_key(entity_id))}
    if wanted.application:  # its queues can be named before any of its events was committed
        keys |= {entity_index_key(wanted.application, kind, entity_id) for kind in kinds}
    chosen = []
    for key in sorted(keys):
        application, kind = entity_index_parts(key, entity_id)
        if kind in kinds and (not wanted.application or application == wanted.application):
            chosen.append(key)
    with connection.pipeline(transaction=False) as pipe:
        for key in chosen:
            pipe.lrange(ENTITY_QUEUE_PREFIX + key.removeprefix(ENTITY_INDEX_PREFIX), 0, -1)
        queues = pipe.execute() if chosen else []
    # An older one waiting is walked with the events from before indexing began.
    waiting = {raw.decode() for queue in queues for raw in queue if received_us_of(raw.decode()) >= since}
    if len(chosen) == 1 and not waiting:
        return _Range(chosen[0], low=str(since))
    with connection.pipeline(transaction=False) as pipe:
        for key in chosen:
            pipe.zrevrangebyscore(key, "+inf", since, start=0, num=MAX_SCANNED, withscores=True)
        replies = pipe.execute() if chosen else []
    scores = {event_id: float(received_us_of(event_id)) for event_id in waiting}
    for indexed in replies:
        scores.update((member.decode(), score) for member, score in indexed)
    return _Listed(sorted(scores, key=lambda event_id: (scores[event_id], event_id), reverse=True))


def _walk(connection: redis.Redis, source: _Source, offset: int, *, first: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(position, row) from `offset` on; the first read takes `first` ids, the next ones BATCH."""
    start, count = offset, max(1, min(first, BATCH))
    while True:
        ids = source.ids(connection, start, count)
        if not ids:
            return
        with connection.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hmget(event_key(event_id), ROW_FIELDS)
            found = pipe.execute()
        for index, (event_id, values) in enumerate(zip(ids, found, strict=True)):
            if values[0] is None and values[2] is None:
                continue  # removed meanwhile by retention (or by hand)
            yield start + index, row(event_id, values)
        start += len(ids)
        count = BATCH
