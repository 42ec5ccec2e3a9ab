"""RQ job functions. Jobs carry ids, never objects: the event lives in Redis."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import redis
from rq import get_current_job

from engine.config import Settings, load_settings, with_generated_tokens
from engine.hana import normalize
from engine.redaction import redact
from engine.rules.compiler import load_rule_set
from engine.rules.ruleset import Evaluation, RuleSet
from engine.runtime.events import EventStatus, EventStore
from engine.state import apply_known_state

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What every job in this worker process shares; built once per process."""

    settings: Settings
    connection: redis.Redis
    rule_set: RuleSet

    @property
    def events(self) -> EventStore:
        return EventStore(self.connection, retention=self.settings.retention)


_context: WorkerContext | None = None


def configure(settings: Settings, connection: redis.Redis, rule_set: RuleSet | None = None) -> WorkerContext:
    """Load the rule set (raising RuleSetError listing every mistake) and share it with every job."""
    global _context
    rule_set = rule_set or load_rule_set(settings.rules_dir)
    _context = WorkerContext(settings=settings, connection=connection, rule_set=rule_set)
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
    evaluation = evaluate(context.rule_set, normalized.context, body)
    secrets = context.settings.secrets | context.rule_set.secrets
    store.finish(
        event_id,
        status=EventStatus.DONE,
        context=redact(normalized.context, secrets),
        warnings=list(event.warnings + normalized.warnings),
        version=context.rule_set.version,
        matched=[result.rule.id for result in evaluation.matched],
        evaluation=redact(evaluation.as_json(), secrets),
        actions=redact(pending_actions(evaluation), secrets),
    )
    log.info("event %s: %s processed, matched %s", event_id, event.type, [r.rule.id for r in evaluation.matched])
    return EventStatus.DONE.value


def evaluate(rule_set: RuleSet, context: dict[str, Any], body: Any) -> Evaluation:
    """Known state arrives with the state store; until then every attribute counts as changed."""
    apply_known_state(context, None)
    return rule_set.evaluate(context, body=body, trace=True)


def pending_actions(evaluation: Evaluation) -> list[dict[str, Any]]:
    """The actions to run, in order, as SPEC §8 lists them on an event."""
    actions = []
    for result in evaluation.matched:
        for action in result.actions:
            entry = {"rule": result.rule.id, **action.as_json(), "status": "failed" if action.error else "pending",
                     "attempts": []}  # fmt: skip
            actions.append(entry)
    return actions
