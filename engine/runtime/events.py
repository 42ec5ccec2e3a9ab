"""Events in Redis: the raw body as received, its status, its context and warnings.

One hash per event (`hr:event:<id>`) and one sorted set indexing them by
arrival for the admin views. Nothing here expires by itself: an event is
removed only once it is finished, by `retention.py`.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import redis
from redis.commands.core import Script

from engine.hana import normalize
from engine.runtime import lua
from engine.runtime.connection import ThreadConnections
from engine.runtime.queues import EVENTS_QUEUE, JobTemplate, event_job_id, queue_key
from engine.state import apply_known_state

EVENT_KEY_PREFIX = "hr:event:"
EVENTS_INDEX = "hr:events"
LAST_EVENT_PREFIX = "hr:last:"
ENTITY_QUEUE_PREFIX = "hr:queue:"
#: Held by the worker draining an entity's queue (jobs.drain).
ENTITY_LOCK_PREFIX = "hr:lock:"
#: Non-empty entity queues, scored by when they last became non-empty: the sweeper's index.
WAITING_QUEUES = "hr:queues"
#: Finished events (done, failed or quarantined, with no action still to run), scored by when
#: they finished (ms): the only events retention and the `max_events` cap may remove.
FINISHED_EVENTS = "hr:finished"
#: SPEC §4: Hana's retries come within this window.
DUPLICATE_WINDOW_SECONDS = 600
#: The duplicates, scored by receive time (µs): the status index (see indexes.py) of the one status
#: the accept script decides alone, so the overview charts Hana's retries. The field of an event's
#: hash naming the indexes it is in (retention's forget.lua takes it out of each) is written with it.
DUPLICATES_INDEX = "hr:idx:status:duplicate"
INDEXED_FIELD = "indexed"


class EventStatus(StrEnum):
    RECEIVED = "received"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    #: Hana's retry of an earlier event, kept dormant: revived if another machine's journal shows an
    #: event received in between (then it was a real change back). Not in the events index.
    DUPLICATE = "duplicate"


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    EXISTS = "exists"  # fed twice from the journal: already stored, nothing done


def new_event_id(received_us: int | None = None) -> str:
    """Sortable by arrival (microseconds first), unique by 40 random bits.

    The bits only need to be unique, not secret: `random` (reseeded in every forked
    process) spares the hot path the system call `secrets` makes each time.
    """
    if received_us is None:
        received_us = time.time_ns() // 1000
    return f"{received_us:014x}{random.getrandbits(40):010x}"


def received_us_of(event_id: str) -> int:
    """When the event was received (µs since the epoch, the receiving machine's clock): its id says."""
    try:
        return int(event_id[:14], 16)
    except ValueError:
        return 0


def event_key(event_id: str) -> str:
    return f"{EVENT_KEY_PREFIX}{event_id}"


def entity_key(application_id: str | None, event_type: str, entity_id: str | None) -> str:
    """`<application>:<lead|opportunity>:<id>`: events without an id share one key per kind."""
    return f"{application_id or '-'}:{event_type.split('.', 1)[0]}:{entity_id or '-'}"


def entity_queue_key(application_id: str | None, event_type: str, entity_id: str | None) -> str:
    """The list of this entity's events waiting, in the order received."""
    return f"{ENTITY_QUEUE_PREFIX}{entity_key(application_id, event_type, entity_id)}"


@dataclass(frozen=True)
class ReceivedEvent:
    """An event as the receiver accepted it, before any processing."""

    id: str
    type: str
    received_at: str
    received_us: int
    body: bytes
    application_id: str | None
    entity_id: str | None
    fingerprint: str | None  # None: not subject to duplicate detection
    quarantine_reason: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    id: str
    type: str
    received_at: str
    status: EventStatus
    body: bytes
    application_id: str | None
    entity_id: str | None
    reason: str | None
    runs: int
    duplicates: int
    warnings: tuple[str, ...] = field(default_factory=tuple)
    fields: dict[str, bytes] = field(default_factory=dict, repr=False)  # everything stored, for the admin views

    @functools.cached_property
    def context(self) -> dict[str, Any] | None:
        """The context the rules saw (secrets included: mask it to show it); None before processing.

        Stored once: processing keeps only what the body cannot tell — the entity's state
        before this event (`previous`), the application's name and the echo verdict — and
        the rest (normalized and raw values, the merged entity, `changes`) is derived here
        exactly as the worker derived it. Storing it whole tripled a big body's footprint.
        """
        if "context" in self.fields:  # processed by a version that stored it whole
            return self.document("context")
        if "previous" not in self.fields:
            return None
        try:
            body = json.loads(self.body)
        except ValueError:
            return None
        context = normalize(body, event_id=self.id, event_type=self.type, received_at=self.received_at,
                            application_name=self.text("application_name") or None,
                            application_id=self.application_id).context  # fmt: skip
        previous, stale = self.document("previous"), self.document("stale")
        apply_known_state(context, previous if isinstance(previous, dict) else None,
                          stale=stale if isinstance(stale, list) else ())  # fmt: skip
        context["event"]["echo"] = bool(self.document("echo"))
        return context

    def document(self, name: str) -> Any:
        """A JSON field written at processing (evaluation, actions, matched, echo…), or None.

        None too for a field that is not JSON (written half, or by hand): the admin views show
        what they can of a damaged event, and `damaged` says what could not be read.
        """
        raw = self.fields.get(name)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    @property
    def shown_body(self) -> Any:
        """The body as the admin views show it: its JSON, or its text when it is not JSON (quarantined)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body.decode("utf-8", errors="replace")

    @property
    def rule_results(self) -> list[dict[str, Any]]:
        """Each listening rule's traced result (simulate's shape), or none before processing."""
        evaluation = self.document("evaluation")
        rules = evaluation.get("rules", []) if isinstance(evaluation, dict) else []
        return [rule for rule in rules if isinstance(rule, dict)]

    @property
    def damaged(self) -> str | None:
        """What could not be read of this event, for the admin views; None when it is whole."""
        unreadable = []
        for name in ("previous", "matched", "evaluation", "actions", "warnings", "echo"):
            raw = self.fields.get(name)
            if raw:
                try:
                    json.loads(raw)
                except ValueError:
                    unreadable.append(name)
        return f"damaged record: {', '.join(unreadable)} not JSON" if unreadable else None

    def text(self, name: str) -> str | None:
        """A plain text field (version, processed_by, error…), or None."""
        raw = self.fields.get(name)
        return raw.decode() if raw is not None else None

    def queue_key(self) -> str:
        return entity_queue_key(self.application_id, self.type, self.entity_id)


class EventStore:
    """Reads and writes events; the only place that knows their Redis layout."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._accept: Script | None = None
        self._own_connections = ThreadConnections(connection)  # the hot path skips the pool's checks

    def _accept_script(self) -> Script:
        """The accept script with this process's constants written in; built on first use."""
        if self._accept is None:
            template = JobTemplate.for_events(self.connection)
            # RQ lists its queues in a set, for `rq info` and dashboards: once per process is enough.
            self.connection.sadd(template.queues_key, template.queue_key)
            data_prefix, data_suffix = template.data_parts()
            source = lua.render(
                "accept.lua",
                event_key_prefix=EVENT_KEY_PREFIX,
                last_event_prefix=LAST_EVENT_PREFIX,
                entity_queue_prefix=ENTITY_QUEUE_PREFIX,
                events_index=EVENTS_INDEX,
                finished_index=FINISHED_EVENTS,
                waiting_queues=WAITING_QUEUES,
                lock_prefix=ENTITY_LOCK_PREFIX,
                received=EventStatus.RECEIVED.value,
                duplicate=EventStatus.DUPLICATE.value,
                quarantined=EventStatus.QUARANTINED.value,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
                duplicates_index=DUPLICATES_INDEX,
                duplicate_listing=json.dumps([DUPLICATES_INDEX]),
                indexed_field=INDEXED_FIELD,
                rq_queue=template.queue_key,
                job_key_prefix=template.job_key_prefix + event_job_id(""),
                job_id_prefix=event_job_id(""),
                data_prefix=data_prefix,
                data_suffix=data_suffix,
                job_fields=template.constant_fields(),
            )
            self._accept = self.connection.register_script(source)
        return self._accept

    def accept(self, event: ReceivedEvent, *, from_journal: bool = False) -> tuple[Outcome, str]:
        """Store `event` and enqueue its processing; (outcome, id of the event that counts).

        `from_journal`: the event may already be stored (fed twice); then nothing is done.
        """
        reply = self._own_connections.run_script(self._accept_script(), (), self._arguments(event, from_journal))
        return self._outcome(event, reply)

    def feed(self, events: Sequence[ReceivedEvent], *,
             replica_within_ms: int | None = None) -> list[tuple[Outcome, str]]:  # fmt: skip
        """Store events a journal kept, in one round trip; an event already stored is left alone.

        Each is still its own atomic script call: a connection lost midway leaves some stored and
        some not, and feeding them all again stores each once. `replica_within_ms`: also wait that
        long for a replica to have them (WAIT, on the same connection); ConnectionError when none
        does, so the journal keeps them for the next round.
        """
        script = self._accept_script()
        with self.connection.pipeline(transaction=False) as pipe:
            for event in events:
                script(keys=[], args=self._arguments(event, True), client=pipe)
            if replica_within_ms is not None:
                pipe.execute_command("WAIT", 1, replica_within_ms)
            replies = pipe.execute()
        if replica_within_ms is not None and not replies.pop():
            raise redis.ConnectionError("no replica has the fed events yet; the journal keeps them")
        return [self._outcome(event, reply) for event, reply in zip(events, replies, strict=True)]

    def replicated(self, *, timeout_ms: int) -> bool:
        """Whether a replica has every write this thread made (WAIT): after a failover, it still will."""
        return int(self._own_connections.execute("WAIT", 1, timeout_ms)) >= 1

    @staticmethod
    def _arguments(event: ReceivedEvent, from_journal: bool) -> tuple[Any, ...]:
        return (
            event.id,
            entity_key(event.application_id, event.type, event.entity_id),
            f"{event.type}|{event.fingerprint}" if event.fingerprint else "",
            event.received_us,
            "1" if from_journal else "",
            event.type,
            event.received_at,
            event.body,
            event.application_id or "",
            event.entity_id or "",
            event.quarantine_reason or "",
        )

    @staticmethod
    def _outcome(event: ReceivedEvent, reply: Any) -> tuple[Outcome, str]:
        outcome, event_id = reply
        outcome = Outcome(outcome.decode() if isinstance(outcome, bytes) else outcome)
        event_id = event_id.decode() if isinstance(event_id, bytes) else event_id
        if outcome is Outcome.ACCEPTED and event.quarantine_reason:
            outcome = Outcome.QUARANTINED
        return outcome, event_id

    def load(self, event_id: str) -> StoredEvent | None:
        return self.parse(event_id, self.connection.hgetall(event_key(event_id)))

    def load_many(self, event_ids: list[str]) -> list[StoredEvent | None]:
        """Several events in one round trip (a timeline reads dozens)."""
        with self.connection.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.hgetall(event_key(event_id))
            found = pipe.execute()
        return [self.parse(event_id, raw) for event_id, raw in zip(event_ids, found, strict=True)]

    @staticmethod
    def parse(event_id: str, raw: dict[bytes, bytes]) -> StoredEvent | None:
        """An event as stored, from its hash (None when there is none)."""
        if not raw:
            return None
        text = {k.decode(): v for k, v in raw.items()}

        def string(name: str) -> str | None:
            value = text.get(name)
            return value.decode(errors="replace") if value is not None else None

        def number(name: str) -> int:
            try:
                return int(string(name) or 0)
            except ValueError:
                return 0

        try:
            status = EventStatus(string("status") or EventStatus.RECEIVED)
        except ValueError:
            status = EventStatus.FAILED  # a status nobody wrote: shown as failed, with its record damaged
        event = StoredEvent(
            id=event_id,
            type=string("type") or "",
            received_at=string("received_at") or "",
            status=status,
            body=text.get("body", b""),
            application_id=string("application_id"),
            entity_id=string("entity_id"),
            reason=string("reason"),
            runs=number("runs"),
            duplicates=number("duplicates"),
            fields=text,
        )
        warnings = event.document("warnings")
        return replace(event, warnings=tuple(map(str, warnings))) if isinstance(warnings, list) else event

    def start_processing(self, event_id: str) -> int:
        """Mark the event as being processed; returns how many times processing started."""
        with self.connection.pipeline(transaction=True) as pipe:
            pipe.hset(event_key(event_id), "status", EventStatus.PROCESSING.value)
            pipe.hincrby(event_key(event_id), "runs", 1)
            return int(pipe.execute()[1])

    def recent(self, limit: int) -> list[str]:
        return [i.decode() for i in self.connection.zrevrange(EVENTS_INDEX, 0, limit - 1)]

    def queued(self) -> int:
        return int(self.connection.llen(queue_key(EVENTS_QUEUE)))
