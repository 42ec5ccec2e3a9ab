"""Running actions: one RQ job per action, retried alone, recorded the moment its answer arrives.

An action is keyed `event_id:rule_id:index`. Its record in Redis holds the
rendered payload, its status and every attempt; `done` is the completion
record that makes any later run of the same action (crash recovery, a
duplicate job) a no-op. Failures are retried on the `delivery` schedule
through RQ's scheduler, parked (Hana refused the token) or dead-lettered.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Retry

from engine.actions.errors import ActionError, Response
from engine.actions.kinds import ActionEnvironment, execute
from engine.actions.retry import next_delay
from engine.hana import ENTITIES, entity_of, now_iso, update_body
from engine.redaction import redact
from engine.rules.ruleset import RenderedAction, RuleResult, render_actions
from engine.runtime.metrics import ACTIONS, RETRIES
from engine.runtime.queues import ACTIONS_QUEUE, JOB_TIMEOUT, PROCESS_EVENT_RETRIES, RUN_ACTION, queue
from engine.runtime.state_store import JobWrite

log = logging.getLogger(__name__)

ACTION_PREFIX = "hr:action:"
DEAD_LETTERS = "hr:dead"
PARKED_APPS = "hr:parked-apps"
PARKED_PREFIX = "hr:parked:"
WROTE_PREFIX = "hr:wrote:"
#: Actions that failed for good, per rule: GET /admin/rules shows them.
FAILURE_COUNTS = "hr:stats:failed"
#: SPEC §6 Loops: an update whose changes are exactly what we wrote this recently is an echo.
ECHO_WINDOW_SECONDS = 300


def action_id(event_id: str, rule_id: str, index: int | str) -> str:
    return f"{event_id}:{rule_id}:{index}"


def action_key(identifier: str) -> str:
    return f"{ACTION_PREFIX}{identifier}"


def action_job_id(identifier: str, attempt: int = 1) -> str:
    base = "act-" + identifier.replace(":", "-")
    return base if attempt <= 1 else f"{base}-a{attempt}"


@dataclass
class ActionRecord:
    id: str
    event_id: str
    rule: str
    index: int
    kind: str
    status: str
    payload: Any = None
    application_id: str | None = None
    entity_key: str | None = None
    error: str | None = None
    response: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    attempt_base: int = 0  # attempts before the last admin retry
    request: Any = None  # redacted copy, kept with a dead letter

    def as_dead_letter(self) -> dict[str, Any]:
        """SPEC §8's shape; the request is the redacted copy, the payload is never shown."""
        return redact({
            "id": self.id, "event_id": self.event_id, "rule": self.rule, "kind": self.kind, "status": self.status,
            "error": self.error, "attempts": self.attempts, "request": self.request, "response": self.response,
        })  # fmt: skip


#: Fields of an action record that always hold JSON (a `log` payload is a JSON string too).
JSON_FIELDS = frozenset(("payload", "attempts", "response", "request"))


def record_fields(**values: Any) -> dict[str, str]:
    """One encoding for every write of an action record."""
    return {
        name: json.dumps(value, ensure_ascii=False, default=str) if name in JSON_FIELDS else str(value)
        for name, value in values.items()
    }


def new_record(event_id: str, result: RuleResult, action: RenderedAction, *, status: str,
               application_id: str | None, entity_key: str | None) -> dict[str, str]:  # fmt: skip
    return record_fields(
        event_id=event_id, rule=result.rule.id, index=action.index, kind=action.kind, status=status,
        payload=action.payload, application_id=application_id or "", entity_key=entity_key or "", attempts=[],
        attempt_base=0, error=action.error or "", created_at=now_iso(),
    )  # fmt: skip


class ActionStore:
    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def load(self, identifier: str) -> ActionRecord | None:
        raw = {k.decode(): v.decode() for k, v in self.connection.hgetall(action_key(identifier)).items()}
        if not raw:
            return None
        return ActionRecord(
            id=identifier, event_id=raw["event_id"], rule=raw["rule"], index=int(raw["index"]), kind=raw["kind"],
            status=raw["status"], payload=json.loads(raw.get("payload") or "null"),
            application_id=raw.get("application_id") or None, entity_key=raw.get("entity_key") or None,
            error=raw.get("error") or None, response=json.loads(raw["response"]) if raw.get("response") else None,
            attempts=json.loads(raw.get("attempts") or "[]"), attempt_base=int(raw.get("attempt_base") or 0),
            request=json.loads(raw["request"]) if raw.get("request") else None,
        )  # fmt: skip

    def update(self, identifier: str, **values: Any) -> None:
        self.connection.hset(action_key(identifier), mapping=record_fields(**values, updated_at=now_iso()))

    def for_event(self, event_id: str) -> list[ActionRecord]:
        """The event's actions, in rule order then action order, from the list its commit wrote."""
        raw = self.connection.hget(f"hr:event:{event_id}", "actions")
        entries = json.loads(raw) if raw else []
        records = [self.load(action_id(event_id, entry["rule"], entry["index"])) for entry in entries]
        return [record for record in records if record is not None]

    # dead letters --------------------------------------------------------------------------
    def dead_letter(self, identifier: str, error: str, response: Response | None, *, request: Any) -> None:
        """`request`: what was sent, already redacted: the only form an admin ever sees."""
        with self.connection.pipeline() as pipe:
            pipe.hset(action_key(identifier), mapping=record_fields(
                status="failed", error=error, updated_at=now_iso(),
                response=response.as_json() if response else None, request=request,
            ))  # fmt: skip
            pipe.zadd(DEAD_LETTERS, {identifier: time.time()})
            pipe.execute()

    def dead_letters(self, limit: int = 100) -> list[ActionRecord]:
        ids = [i.decode() for i in self.connection.zrevrange(DEAD_LETTERS, 0, limit - 1)]
        parked = [i.decode() for app in self.connection.smembers(PARKED_APPS)
                  for i in self.connection.smembers(PARKED_PREFIX + app.decode())]  # fmt: skip
        records = [self.load(i) for i in [*parked, *ids]]
        return [r for r in records if r is not None]

    # parking -------------------------------------------------------------------------------
    def is_parked(self, application: str) -> bool:
        return bool(self.connection.sismember(PARKED_APPS, application))

    def park(self, application: str, identifier: str, reason: str, *, request: Any = None) -> None:
        values = record_fields(status="parked", error=reason, updated_at=now_iso())
        if request is not None:
            values.update(record_fields(request=request))
        with self.connection.pipeline() as pipe:
            pipe.sadd(PARKED_APPS, application)
            pipe.sadd(PARKED_PREFIX + application, identifier)
            pipe.hset(action_key(identifier), mapping=values)
            pipe.execute()

    # admin ---------------------------------------------------------------------------------
    def retry(self, identifier: str) -> bool:
        """An admin's retry: a fresh round of attempts; for a parked action, its whole application resumes."""
        record = self.load(identifier)
        if record is None or record.status not in ("failed", "parked"):
            return False
        identifiers = [identifier]
        if record.status == "parked":
            application = record.application_id or "-"
            members = self.connection.smembers(PARKED_PREFIX + application)
            identifiers = sorted({identifier, *(member.decode() for member in members)})
            self.connection.delete(PARKED_PREFIX + application)
            self.connection.srem(PARKED_APPS, application)
        for each in identifiers:
            current = self.load(each)
            if current is None:
                continue
            self.update(each, status="pending", error="", attempt_base=len(current.attempts))
            self.connection.zrem(DEAD_LETTERS, each)
            enqueue_action(self.connection, each, attempt=len(current.attempts) + 1, delay=0)
        return True

    def purge(self, identifier: str | None = None) -> int:
        identifiers = [identifier] if identifier else [i.decode() for i in self.connection.zrange(DEAD_LETTERS, 0, -1)]
        for each in identifiers:
            self.connection.zrem(DEAD_LETTERS, each)
            self.update(each, status="purged")
        return len(identifiers)

    # echo memory -----------------------------------------------------------------------------
    def remember_write(self, application: str | None, body: dict[str, Any]) -> None:
        for entity in ENTITIES:
            part = body.get(entity)
            if not part:
                continue
            key = f"{WROTE_PREFIX}{application or '-'}:{entity}:{part['id']}"
            values = {name: json.dumps(value, ensure_ascii=False) for name, value in part.items() if name != "id"}
            if values:
                with self.connection.pipeline() as pipe:
                    pipe.hset(key, mapping=values)
                    pipe.expire(key, ECHO_WINDOW_SECONDS)
                    pipe.execute()

    def is_echo(self, entity_key: str, context: dict[str, Any]) -> bool:
        """True when every attribute this update changed holds exactly what we wrote recently."""
        changes = context.get("changes") or []
        if not changes or context["event"]["type"].split(".")[1] != "updated":
            return False
        wrote = {k.decode(): json.loads(v) for k, v in self.connection.hgetall(WROTE_PREFIX + entity_key).items()}
        current = context.get(context["event"]["entity"]) or {}
        return all(name in wrote and _same(wrote[name], current.get(name)) for name in changes)


def _same(written: Any, seen: Any) -> bool:
    if isinstance(written, int | float) and isinstance(seen, int | float) and not isinstance(seen, bool):
        return float(written) == float(seen)
    return bool(written == seen)


def enqueue_action(connection: redis.Redis, identifier: str, *, attempt: int, delay: float) -> None:
    event_id, rule_id, index = identifier.rsplit(":", 2)
    target = queue(connection, ACTIONS_QUEUE)
    options = {"job_id": action_job_id(identifier, attempt), "result_ttl": 0, "job_timeout": JOB_TIMEOUT,
               "retry": Retry(max=PROCESS_EVENT_RETRIES)}  # fmt: skip
    if delay > 0:
        target.enqueue_in(timedelta(seconds=delay), RUN_ACTION, event_id, rule_id, index, **options)
    else:
        target.enqueue(RUN_ACTION, event_id, rule_id, index, **options)


def _job(template: Any, job_id: str, *args: str, at: int | None = None) -> JobWrite:
    fields = template.job_fields(*args, status="queued" if at is None else "scheduled")
    return JobWrite(key=f"{template.job_key_prefix}{job_id}", id=job_id, queue_key=template.queue_key,
                    scheduled_key=template.scheduled_key, fields=fields, at=at)  # fmt: skip


Records = list[tuple[str, dict[str, Any]]]


def plan_actions(
    results: list[RuleResult],
    *,
    event_id: str,
    application_id: str | None,
    entity_key: str | None,
    run_template: Any,
    resume_template: Any,
) -> tuple[Records, list[JobWrite]]:
    """Action records and the jobs that run them, written by the commit of one event.

    Actions before a rule's first `delay` run now; the delay itself becomes a job scheduled in
    RQ's scheduler (so it survives restarts and reloads); what follows waits, `scheduled`.
    """
    records: list[tuple[str, dict[str, Any]]] = []
    jobs: list[JobWrite] = []
    for result in results:
        if result.skipped:
            continue
        waiting = False
        for action in result.actions:
            identifier = action_id(event_id, result.rule.id, action.index)
            arguments = (event_id, result.rule.id, str(action.index))
            if action.kind == "delay":
                if not waiting:
                    due = int(time.time() + float(action.payload["delay"])) + 1
                    jobs.append(_job(resume_template, "resume-" + identifier.replace(":", "-"), *arguments, at=due))
                waiting = True
                continue
            if waiting:
                status = "scheduled"
            elif action.error:
                status = "failed"  # a template error: clear in the trace, not retried
            else:
                status = "pending"
                jobs.append(_job(run_template, action_job_id(identifier), *arguments))
            record = new_record(event_id, result, action, status=status, application_id=application_id,
                                entity_key=entity_key)  # fmt: skip
            records.append((action_key(identifier), record))
    return records, jobs


def run_action(event_id: str, rule_id: str, index: str) -> str:
    """Deliver one action; a no-op once its completion record says done."""
    outcome, kind = _run_action(event_id, rule_id, index)
    ACTIONS.labels(kind, outcome).inc()
    if outcome == "retrying":
        RETRIES.labels(kind).inc()
    return outcome


def _run_action(event_id: str, rule_id: str, index: str) -> tuple[str, str]:
    from engine.runtime.jobs import current

    context = current()
    store = context.actions
    identifier = action_id(event_id, rule_id, index)
    record = store.load(identifier)
    if record is None:
        log.warning("event %s rule %s: action %s has no record (expired?)", event_id, rule_id, index)
        return "missing", "unknown"
    if record.status not in ("pending", "retrying"):
        return "skipped", record.kind  # done, failed, parked, dropped: nothing to do
    settings = context.settings
    application = settings.application(record.application_id) or (
        settings.applications[0] if settings.uses_default_application else None)  # fmt: skip
    application_key = record.application_id or "-"
    if record.kind == "hana_update" and store.is_parked(application_key):
        store.park(application_key, identifier, "waiting: this application's Hana token was refused")
        return "parked", record.kind
    attempt = len(record.attempts) - record.attempt_base + 1
    environment = ActionEnvironment(settings=settings, client=context.outbound, application=application,
                                    event_id=event_id, rule_id=rule_id)  # fmt: skip
    started = time.monotonic()
    try:
        response = execute(record.kind, record.payload, environment)
    except ActionError as exc:
        entry = _attempt(started, exc.response, str(exc))
        store.update(identifier, attempts=[*record.attempts, entry], error=str(exc),
                     response=exc.response.as_json() if exc.response else None)  # fmt: skip
        log.warning("event %s rule %s: %s action failed (attempt %d): %s", event_id, rule_id, record.kind, attempt,
                    redact(str(exc), context.secrets), extra={"event_id": event_id, "rule_id": rule_id})  # fmt: skip
        if exc.park:
            shown = redact({"kind": record.kind, "payload": record.payload}, context.secrets)
            store.park(application_key, identifier, str(exc), request=shown)
            return "parked", record.kind
        if exc.retryable and attempt < settings.delivery.max_attempts:
            delay = next_delay(attempt, settings.delivery, exc.retry_after)
            store.update(identifier, status="retrying", next_attempt_in=f"{delay:.1f}s")
            enqueue_action(context.connection, identifier, attempt=len(record.attempts) + 2, delay=delay)
            return "retrying", record.kind
        shown = redact({"kind": record.kind, "payload": record.payload}, context.secrets)
        store.dead_letter(identifier, redact(str(exc), context.secrets), exc.response, request=shown)
        context.connection.hincrby(FAILURE_COUNTS, rule_id, 1)
        return "failed", record.kind
    log.info("event %s rule %s: %s action done", event_id, rule_id, record.kind,
             extra={"event_id": event_id, "rule_id": rule_id})  # fmt: skip
    # The completion record, written the moment the answer arrived.
    store.update(identifier, status="done", error="", attempts=[*record.attempts, _attempt(started, response, None)],
                 response=response.as_json() if response else None)  # fmt: skip
    if record.kind == "hana_update":
        store.remember_write(record.application_id, update_body(record.payload))
    return "done", record.kind


def _attempt(started: float, response: Response | None, error: str | None) -> dict[str, Any]:
    return {"at": now_iso(), "status_code": response.status_code if response else None,
            "duration_ms": round((time.monotonic() - started) * 1000, 1), "error": error}  # fmt: skip


def resume_delayed(event_id: str, rule_id: str, delay_index: str) -> str:
    """A `delay` came due: run what follows it, with the rule as it is now."""
    from engine.runtime.jobs import current

    context = current()
    store = context.actions
    event = context.events.load(event_id)
    rule = context.rules.current().rule(rule_id)  # the rule as it is now, after any reload
    waiting = [r for r in store.for_event(event_id) if r.rule == rule_id and r.index > int(delay_index)
               and r.status == "scheduled"]  # fmt: skip
    if event is None or rule is None or not rule.enabled:
        why = "the rule is gone from the current rule set" if rule is None else (
            "the rule is disabled now" if rule is not None and not rule.enabled else "the event expired")  # fmt: skip
        for record in waiting:
            store.update(record.id, status="dropped", error=f"delay ended, but {why}")
        return "dropped"
    rule_context = dict(event.context or {})
    entity = entity_of(event.type)
    if event.entity_id:
        latest = context.states.load(f"{event.application_id or '-'}:{entity}:{event.entity_id}")
        if latest:
            rule_context[entity] = latest
    body = json.loads(event.body)
    from engine.rules.ruleset import RuleSet

    result = RuleSet._evaluate_rule(rule, rule_context, body, True)
    delay_action = next((a for a in rule.actions if a.index == int(delay_index)), None)
    if delay_action is not None and delay_action.recheck and not result.matched:
        for record in waiting:
            store.update(record.id, status="dropped", error="delay ended, but the rule's conditions no longer hold")
        return "dropped"
    rule_context["vars"] = result.vars
    rendered = {a.index: a for a in render_actions(rule, rule_context)}
    for action in rule.actions:
        if action.index <= int(delay_index):
            continue
        identifier = action_id(event_id, rule_id, action.index)
        if action.kind == "delay":  # another delay: schedule the rest
            due = datetime.now(UTC) + timedelta(seconds=float(action.delay or 0))
            queue(context.connection, ACTIONS_QUEUE).enqueue_at(
                due, "engine.runtime.actions.resume_delayed", event_id, rule_id, str(action.index),
                job_id=f"resume-{identifier.replace(':', '-')}", result_ttl=0)  # fmt: skip
            break
        current_action = rendered[action.index]
        if current_action.error:
            store.update(identifier, status="failed", error=current_action.error, payload=None)
            continue
        store.update(identifier, status="pending", payload=current_action.payload, kind=action.kind)
        enqueue_action(context.connection, identifier, attempt=1, delay=0)
    return "resumed"
