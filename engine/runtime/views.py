"""Read models for the console and the admin API: one way to list and filter events, two faces.

Listing reads only the few fields a row shows (HMGET in a pipeline, a batch at a time),
never the bodies. Filters apply while walking the events index newest first, so a page
costs what it skips; the per-entity and per-rule indexes of issue 13 (point 6) replace the
walk for those filters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from engine.hana import canonical_event_type
from engine.runtime.events import EVENTS_INDEX, EventStatus, event_key

ROW_FIELDS = ("type", "received_at", "status", "matched", "application_id", "entity_id")
#: How many ids one round trip reads while walking the index.
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
    next_offset: int | None  # where the next page starts in the index (None: no more)
    scanned_all: bool  # False when the walk stopped at MAX_SCANNED before the end


def list_events(connection: redis.Redis, wanted: EventFilter, *, limit: int, offset: int = 0) -> EventPage:
    """Newest first, `limit` rows from position `offset` of the events index."""
    rows: list[dict[str, Any]] = []
    position = offset
    for position, row in _walk(connection, offset):
        if position - offset >= MAX_SCANNED:
            return EventPage(rows, position, scanned_all=False)
        if wanted.keeps(row):
            rows.append(row)
            if len(rows) == limit:
                more = connection.zcard(EVENTS_INDEX) > position + 1
                return EventPage(rows, position + 1 if more else None, scanned_all=True)
    return EventPage(rows, None, scanned_all=True)


def _walk(connection: redis.Redis, offset: int) -> Iterator[tuple[int, dict[str, Any]]]:
    start = offset
    while True:
        ids = [i.decode() for i in connection.zrevrange(EVENTS_INDEX, start, start + BATCH - 1)]
        if not ids:
            return
        with connection.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hmget(event_key(event_id), ROW_FIELDS)
            found = pipe.execute()
        for index, (event_id, values) in enumerate(zip(ids, found, strict=True)):
            if values[0] is None and values[2] is None:
                continue  # removed meanwhile by retention
            yield start + index, row(event_id, values)
        start += BATCH


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
