"""RQ job functions. Jobs carry ids, never objects: the event lives in Redis."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import redis
from rq import get_current_job

from engine.config import Settings, load_settings, with_generated_tokens
from engine.hana import normalize
from engine.runtime.events import EventStatus, EventStore

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What every job in this worker process shares; built once per process."""

    settings: Settings
    connection: redis.Redis

    @property
    def events(self) -> EventStore:
        return EventStore(self.connection, retention=self.settings.retention)


_context: WorkerContext | None = None


def configure(settings: Settings, connection: redis.Redis) -> WorkerContext:
    global _context
    _context = WorkerContext(settings=settings, connection=connection)
    return _context


def current() -> WorkerContext:
    """The configured context, or one built from the environment and the running job."""
    if _context is None:
        job = get_current_job()
        if job is None:
            raise RuntimeError("no worker context: call engine.runtime.jobs.configure() first")
        return configure(with_generated_tokens(load_settings()), job.connection)
    return _context


def process_event(event_id: str) -> str:
    """Normalize a stored event and record its context; safe to run twice."""
    context = current()
    store = context.events
    event = store.load(event_id)
    if event is None:
        log.warning("event %s: gone before processing (expired by retention?)", event_id)
        return "missing"
    if event.status in (EventStatus.DONE, EventStatus.QUARANTINED):
        return event.status.value
    store.start_processing(event_id)
    application = context.settings.application(event.application_id)
    if application is None and context.settings.uses_default_application:
        application = context.settings.applications[0]
    try:
        body = json.loads(event.body)
    except ValueError:  # the receiver only enqueues parsed bodies; a hand-edited one lands here
        store.finish(event_id, status=EventStatus.FAILED, warnings=["the stored body is not JSON"])
        return EventStatus.FAILED.value
    normalized = normalize(
        body,
        event_id=event.id,
        event_type=event.type,
        received_at=event.received_at,
        application_name=application.name if application else None,
    )
    store.finish(
        event_id,
        status=EventStatus.DONE,
        context=normalized.context,
        warnings=list(event.warnings + normalized.warnings),
    )
    log.info("event %s: %s processed", event_id, event.type)
    return EventStatus.DONE.value
