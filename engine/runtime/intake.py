"""What the receiver does with one POST, free of Flask: authenticate, judge, store.

The answer must come back in milliseconds and must be 200 for anything Hana
could send with a valid token: a non-2xx answer counts toward Hana switching
the event off. So a bad body is quarantined (kept, shown to admins), and an
unreachable Redis sends the event to the local journal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson
import redis

from engine.config import Application, Settings
from engine.hana import application_id_of, entity_id_of, entity_of, iso_from_microseconds
from engine.runtime.connection import ReplicaCount, replicated
from engine.runtime.events import EventStatus, EventStore, Outcome, ReceivedEvent, StoredEvent, new_event_id
from engine.runtime.journal import Journal

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
#: With Sentinel, how long an answer waits for a replica to have the event (then it is journaled too).
REPLICA_WAIT_MS = 100
#: With Sentinel, how long a journal's feed waits for a replica before trying again later.
FEED_REPLICA_WAIT_MS = 500  # inside the receiver client's 1 s read timeout
#: Hana's bodies are four levels deep; anything past this is not an event.
MAX_DEPTH = 32


class JournalUnavailable(Exception):
    """Neither Redis nor the journal could keep the event: the only case for a 503."""


@dataclass(frozen=True)
class Receipt:
    outcome: Outcome
    event_id: str
    reason: str | None = None

    def as_json(self) -> dict[str, str]:
        answer = {"status": self.outcome.value, "event_id": self.event_id}
        if self.reason:
            answer["reason"] = self.reason
        return answer


class ReplayRefused(Exception):
    """A stored event that cannot be processed again, and why (in words for the admin)."""


class Intake:
    def __init__(self, settings: Settings, store: EventStore, journal: Journal) -> None:
        self.settings = settings
        self.store = store
        self.journal = journal
        self._tokens = tuple((app.webhook_token.encode(), app) for app in settings.applications)
        self._replicas = ReplicaCount(store.connection) if replicated(settings.redis_target) else None

    def feed(self, events: list[ReceivedEvent]) -> list[tuple[Outcome, str]]:
        """The journal's feed: into Redis, and with replicas online, only once one has them (the
        journal forgets them right after; a failover must not take them back)."""
        waiting = self._replicas is not None and self._replicas.online() > 0
        return self.store.feed(events, replica_within_ms=FEED_REPLICA_WAIT_MS if waiting else None)

    def authenticate(self, token: str | None) -> Application | None:
        """The application owning `token`, compared in constant time against every token."""
        if not token:
            return None
        offered = token.encode()
        found = None
        for expected, app in self._tokens:
            if hmac.compare_digest(offered, expected):
                found = app
        return found

    def receive(self, event_type: str, body: bytes, application: Application) -> Receipt:
        event = self.judge(event_type, body, application)
        return self.keep(event)

    def judge(self, event_type: str, body: bytes, application: Application) -> ReceivedEvent:
        """Parse and classify; never raises for any body."""
        received_us = time.time_ns() // 1000  # the index's score: arrival order to the microsecond
        common: dict[str, Any] = {
            "id": new_event_id(received_us),
            "type": event_type,
            "received_at": iso_from_microseconds(received_us),
            "received_us": received_us,
            "body": body,
        }
        parsed, reason = _parse(body)
        if reason is not None:
            return ReceivedEvent(**common, application_id=application.id, entity_id=None,
                                 fingerprint=None, quarantine_reason=reason)  # fmt: skip
        body_application = application_id_of(parsed)
        if application.id is not None and body_application not in (None, application.id):
            return ReceivedEvent(
                **common, application_id=application.id, entity_id=None, fingerprint=None,
                quarantine_reason=(
                    f"the body names application {body_application!r}, but the token belongs to "
                    f"{application.name!r}; a token never lets one application act as another"
                ),
            )  # fmt: skip
        return ReceivedEvent(
            **common,
            application_id=application.id or body_application,
            entity_id=entity_id_of(parsed, entity_of(event_type)),
            fingerprint=hashlib.blake2b(_canonical(parsed), digest_size=16).hexdigest(),
        )

    def replay(self, event: StoredEvent) -> Receipt:
        """Process a stored event again as a new one (admin API and console): a new id and no
        fingerprint, so a replay is never taken for Hana's retry. ReplayRefused says why not."""
        if event.status is EventStatus.QUARANTINED:
            raise ReplayRefused("a quarantined event has no rules to run; fix the sender and let Hana send it again")
        application = next((a for a in self.settings.applications if a.id in (event.application_id, None)), None)
        if application is None:
            raise ReplayRefused(f"application {event.application_id!r} is no longer configured")
        return self.keep(replace(self.judge(event.type, event.body, application), fingerprint=None))

    def keep(self, event: ReceivedEvent) -> Receipt:
        """Redis if it answers, else the fsynced journal; 503 only when both fail."""
        outage = False
        if not self.journal.queues_behind(event):
            try:
                outcome, event_id = self.store.accept(event)
                if self._replicas and self._replicas.online() and outcome is not Outcome.DUPLICATE and not (
                        self.store.replicated(timeout_ms=REPLICA_WAIT_MS)):  # fmt: skip
                    # Only the master has it: a failover now would lose it. Keep a copy; feeding it
                    # later is a no-op if the master kept it, and stores it again if it did not.
                    self.journal.append(event, outage=False)
                return Receipt(outcome, event_id, event.quarantine_reason)
            except redis.RedisError as exc:
                log.warning("event %s: Redis unavailable (%s); writing to the journal", event.id, exc)
                outage = True
        try:
            self.journal.append(event, outage=outage)
        except Exception as exc:
            log.error("event %s: the journal cannot be written either: %s", event.id, exc)
            raise JournalUnavailable(str(exc)) from exc
        outcome = Outcome.QUARANTINED if event.quarantine_reason else Outcome.ACCEPTED
        return Receipt(outcome, event.id, event.quarantine_reason)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _canonical(parsed: Any) -> bytes:
    """One spelling per JSON value (keys sorted, no spaces): what "equal as JSON" compares."""
    try:
        return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits, which only the standard library reads
        return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _parse(body: bytes) -> tuple[Any, str | None]:
    """(parsed object, None) or (None, a sentence saying why the body is quarantined).

    orjson reads the bodies Hana sends several times faster than the standard library;
    whatever it refuses (integers beyond 64 bits, lone surrogates, deep nesting, bad JSON)
    gets the standard library's verdict and its explanation.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed, reason = _load_with_stdlib(body)
        if reason is not None:
            return None, reason
    if not isinstance(parsed, dict):
        kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(parsed), "null")
        return None, f"the body is a JSON {kind}, not an object"
    # Counting openers is C-fast; only a body with many of them needs the real walk.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _depth(parsed) > MAX_DEPTH:
        return None, f"the body is nested more than {MAX_DEPTH} levels deep"
    return parsed, None


def _load_with_stdlib(body: bytes) -> tuple[Any, str | None]:
    if not body.strip():
        return None, "the body is empty; Hana sends a JSON object"
    try:
        parsed = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        return None, f"the body is nested more than {MAX_DEPTH} levels deep"
    except ValueError as exc:  # includes UnicodeDecodeError
        return None, f"the body is not valid JSON ({exc})"
    try:
        json.dumps(parsed, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # JSON's grammar allows an escaped half of a UTF-16 pair, but it is not text: nothing
        # downstream (Redis, rules, Hana's API) could store or send it.
        return None, "the body contains a lone UTF-16 surrogate escape (such as \\ud800), which is not text"
    return parsed, None


def _depth(value: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest
