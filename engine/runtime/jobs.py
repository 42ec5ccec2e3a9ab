"""RQ job functions. Jobs carry ids, never objects: events and state live in Redis.

`process_event(event_id)` drains the queue of the lead/opportunity the event
belongs to, oldest first, under that entity's lock: events of one entity are
evaluated in the order received however many workers run, and events of
different entities run in parallel. The lock expires, so a dead worker's
entity is taken over; each event's effects are committed atomically and only
while the lock is still ours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import time
from typing import Any

import redis
from rq import Retry

from engine.hana import entity_of, normalize
from engine.redaction import redact
from engine.rules.ruleset import Evaluation, RuleResult
from engine.rules.templates import TemplateRenderError
from engine.runtime.action_plan import plan_actions
from engine.runtime.context import WorkerContext, current
from engine.runtime.events import (
    ENTITY_LOCK_PREFIX,
    ENTITY_QUEUE_PREFIX,
    WAITING_QUEUES,
    EventStatus,
    StoredEvent,
    entity_key,
    event_key,
    received_us_of,
)
from engine.runtime.fields import catalogue_writes
from engine.runtime.indexes import index_write
from engine.runtime.metrics import ECHOES, EVENTS_MISSING, HELD, RULE_MATCHES
from engine.runtime.queues import DRAIN_QUEUE, EVENTS_QUEUE, JOB_TIMEOUT, PROCESS_EVENT_RETRIES, queue
from engine.runtime.queues import queue_key as rq_queue_key
from engine.runtime.state_store import Commit, CommitPlan, StateChange, state_key, state_received_key
from engine.state import NextState, apply_known_state, next_state, stale_attributes

log = logging.getLogger(__name__)

LOCK_TTL_MS = 30_000
#: One job drains at most this much, then hands over to a fresh job: fair to other entities,
#: and far inside the job timeout.
MAX_EVENTS_PER_JOB = 200
MAX_SECONDS_PER_JOB = 10.0
#: Events each rule matched: GET /admin/rules shows them.
MATCH_COUNTS = "hr:stats:matched"
#: Ids of an entity's queued events found gone when their turn came, noted on its next event.
MISSING_PREFIX = "hr:missing:"
EVENTS_QUEUE_KEY = rq_queue_key(EVENTS_QUEUE)
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def process_event(event_id: str) -> int:
    """Drain the queue of the entity this event belongs to; returns how many events were processed."""
    context = current()
    event = context.events.load(event_id)
    if event is None:
        # Its queue cannot be found from a missing event; the sweeper drains it past this one.
        log.warning("event %s: gone before processing (deleted, or lost by Redis)", event_id)
        return 0
    return drain(context, event.queue_key())


def drain_queue(queue_key: str) -> int:
    """Drain one entity's queue, named directly: works even when its head event is gone."""
    return drain(current(), queue_key)


def drain(context: WorkerContext, queue_key: str) -> int:
    connection = context.connection
    lock_key = ENTITY_LOCK_PREFIX + queue_key.removeprefix(ENTITY_QUEUE_PREFIX)
    token = secrets.token_hex(8)
    if not connection.set(lock_key, token, nx=True, px=LOCK_TTL_MS):
        return 0  # another worker drains this entity, and will reach our event in order
    processed = 0
    started = time.monotonic()
    try:
        while processed < MAX_EVENTS_PER_JOB and time.monotonic() - started < MAX_SECONDS_PER_JOB:
            head = connection.lindex(queue_key, 0)
            if head is None:
                break
            context.rules.current()  # a reload reaches this worker before its next event
            outcome = process_one(context, head.decode(), token=token, lock_key=lock_key, queue_key=queue_key)
            if outcome is Commit.LOST_LOCK:
                log.warning("entity %s: lock lost to another worker; it carries on", queue_key)
                return processed
            processed += 1
    finally:
        connection.eval(_RELEASE, 1, lock_key, token)
    if connection.llen(queue_key):  # more arrived, or the batch was full: hand over to a fresh job
        enqueue_drain(connection, queue_key, token)
    return processed


def enqueue_drain(connection: redis.Redis, queue_key: str, suffix: str) -> None:
    digest = hashlib.blake2b(queue_key.encode(), digest_size=10).hexdigest()
    queue(connection, EVENTS_QUEUE).enqueue(
        DRAIN_QUEUE, queue_key, job_id=f"dq-{digest}-{suffix}", result_ttl=0, job_timeout=JOB_TIMEOUT,
        retry=Retry(max=PROCESS_EVENT_RETRIES),
    )  # fmt: skip


def sweep_stalled_queues(connection: redis.Redis, *, older_than: float = 60.0, limit: int = 500) -> int:
    """Re-enqueue entity queues that waited past `older_than` with nobody draining them.

    The safety net for a drain job that exhausted its retries (say, a long Redis outage), or
    whose event went missing: later events of that entity found its queue non-empty and
    enqueued no job. Ages are measured on Redis's clock (a queue's score is its receiver's):
    a score further ahead than `older_than` comes from a receiver whose clock runs fast and is
    looked at too, rather than left waiting until that clock's time comes.
    """
    seconds, microseconds = connection.time()
    now_us = seconds * 1_000_000 + microseconds
    window_us = older_than * 1_000_000
    stalled = connection.zrangebyscore(WAITING_QUEUES, "-inf", now_us - window_us, start=0, num=limit)
    stalled += connection.zrangebyscore(WAITING_QUEUES, f"({now_us + window_us}", "+inf", start=0, num=limit)
    revived = 0
    for raw in stalled:
        queue_key = raw.decode()
        if connection.exists(ENTITY_LOCK_PREFIX + queue_key.removeprefix(ENTITY_QUEUE_PREFIX)):
            continue  # being drained right now
        if not connection.llen(queue_key):
            connection.zrem(WAITING_QUEUES, queue_key)
            continue
        connection.zadd(WAITING_QUEUES, {queue_key: now_us})  # not again before `older_than`
        enqueue_drain(connection, queue_key, f"sweep{seconds}")
        revived += 1
    if revived:
        log.warning("sweeper: %d entity queue(s) had nobody draining them; re-enqueued", revived)
    return revived


def process_one(context: WorkerContext, event_id: str, *, token: str, lock_key: str, queue_key: str) -> Commit:
    """Evaluate one event against the known state and commit its effects atomically."""
    event = context.events.load(event_id)
    entity = entity_key(event.application_id, event.type, event.entity_id) if event else ""

    def commit(plan: CommitPlan) -> Commit:
        return context.states.commit(plan, lock_key=lock_key, token=token, queue_key=queue_key,
                                     event_key=event_key(event_id), event_id=event_id, entity_key=entity,
                                     lock_ttl_ms=LOCK_TTL_MS)  # fmt: skip

    if event is None:
        # Deleted by hand or lost in a Redis crash: skip it (never wedge the entity), and say so.
        outcome = commit(CommitPlan())
        if outcome is Commit.OK:
            missing_key = MISSING_PREFIX + queue_key.removeprefix(ENTITY_QUEUE_PREFIX)
            context.connection.rpush(missing_key, event_id)
            context.connection.expire(missing_key, max(int(context.settings.retention), 1))
            EVENTS_MISSING.inc()
            log.warning("event %s: gone when its turn came in %s; skipped", event_id, queue_key)
        return outcome
    if event.status in (EventStatus.DONE, EventStatus.QUARANTINED, EventStatus.FAILED, EventStatus.DUPLICATE):
        return commit(CommitPlan())  # nothing (more) to do: just take it off the queue
    context.events.start_processing(event_id)
    try:
        plan = evaluate_event(context, event)
    except (redis.RedisError, TimeoutError):
        raise  # Redis trouble: the job fails and RQ retries it; nothing was committed
    except Exception as exc:  # a poison event must not block its entity's queue
        log.exception("event %s: processing failed", event_id, extra={"event_id": event_id})
        failed = {"status": EventStatus.FAILED.value, "open": 0,
                  "error": redact(f"{type(exc).__name__}: {exc}", context.secrets)}  # fmt: skip
        indexes = index_write(event.id, application_id=event.application_id, event_type=event.type,
                              entity_id=event.entity_id, status=EventStatus.FAILED.value)  # fmt: skip
        return commit(CommitPlan(event_fields=failed, finished=True, indexes=indexes))
    outcome = commit(plan)
    if outcome is Commit.OK:
        context.settle()
        context.catalogue.committed()
    if outcome is Commit.OK and plan.event_fields.get("matched"):
        with context.connection.pipeline(transaction=False) as pipe:
            for rule_id in plan.event_fields["matched"]:
                pipe.hincrby(MATCH_COUNTS, rule_id, 1)
                RULE_MATCHES.labels(rule_id).inc()
            pipe.execute()
    if outcome is Commit.OK and plan.event_fields.get("echo"):
        ECHOES.inc()
    if outcome is Commit.OK and plan.event_fields.get("missing_before"):
        context.connection.delete(MISSING_PREFIX + entity)
    return outcome


def evaluate_event(context: WorkerContext, event: StoredEvent) -> CommitPlan:
    settings, rule_set = context.settings, context.rule_set
    application = settings.application(event.application_id)
    if application is None and settings.uses_default_application:
        application = settings.applications[0]
    body = json.loads(event.body)
    normalized = normalize(body, event_id=event.id, event_type=event.type, received_at=event.received_at,
                           application_name=application.name if application else None,
                           application_id=event.application_id)  # fmt: skip
    rule_context = normalized.context
    carried = catalogue_writes(rule_context, context.secrets)  # what the event carried, before the known state
    entity = entity_of(event.type)
    the_entity = entity_key(event.application_id, event.type, event.entity_id)
    entity_attributes = dict(rule_context.get(entity) or {})
    known, known_at, missing_before, idle = (_known_state(context, the_entity) if event.entity_id
                                             else (None, {}, [], True))  # fmt: skip
    received_us = received_us_of(event.id)
    stale = stale_attributes(entity_attributes, known_at, received_us)
    apply_known_state(rule_context, known, stale=stale)
    echo = event.entity_id is not None and context.echoes.is_echo(the_entity, rule_context)
    rule_context["event"]["echo"] = echo
    evaluation = rule_set.evaluate(rule_context, body=body, trace=True, secrets=context.secrets)
    apply_throttles(context, evaluation, rule_context, event.id)
    apply_loop_guard(context, evaluation, the_entity, event.id)

    if event.entity_id is None:
        change, state = StateChange.KEEP, NextState(None, None)
    else:  # a delete removes the state after the rules saw `previous`
        state = next_state(event.type, entity_attributes, received_us, known, known_at)
        change = StateChange.DELETE if state.values is None else StateChange.SET
    actions = plan_actions(evaluation.matched, event_id=event.id, application_id=event.application_id,
                           entity_key=the_entity, template=context.run_template)  # fmt: skip
    secrets_ = context.secrets
    warnings = list(event.warnings + normalized.warnings)
    if missing_before:
        warnings.append(f"earlier event(s) of this {entity} were gone when their turn came (deleted, or lost by "
                        f"Redis) and were skipped: {', '.join(missing_before)}")  # fmt: skip
    if stale:
        warnings.append(f"received before newer events of this {entity} that were processed first (it came "
                        f"late, from a machine's journal): its older values of {', '.join(stale)} were not applied")
    fields = {
        "status": EventStatus.DONE.value,
        "processed_by": f"{socket.gethostname()}:{os.getpid()}",
        "echo": echo,
        "previous": known,  # with the body, all it takes to show the context again (StoredEvent.context)
        "application_name": application.name if application else "",
        "warnings": warnings,
        "version": rule_set.version,
        "matched": [r.rule.id for r in evaluation.matched if not r.skipped],
        "evaluation": redact(evaluation.as_json(), secrets_),
        "actions": redact(actions.listing, secrets_),
        "open": actions.open,
    }
    if missing_before:
        fields["missing_before"] = missing_before
    if stale:
        fields["stale"] = stale  # with the body and `previous`, what rebuilds the context (StoredEvent.context)
    log.info("event %s: %s processed, matched %s%s", event.id, event.type, fields["matched"], " (echo)" if echo else "",
             extra={"event_id": event.id})  # fmt: skip
    # A rule limited to other applications never heard this event: its page would only fill with them.
    application_id = rule_context.get("application", {}).get("id")  # as RuleSet.evaluate reads it
    listened = [r.rule.id for r in evaluation.results
                if r.rule.applications is None or application_id in r.rule.applications]  # fmt: skip
    indexes = index_write(event.id, application_id=event.application_id, event_type=event.type,
                          entity_id=event.entity_id, status=fields["status"], listened=listened,
                          matched=fields["matched"])  # fmt: skip
    return CommitPlan(change=change, state=state.values, state_received=state.received, event_fields=fields,
                      records=actions.records, jobs=actions.jobs, finished=actions.open == 0,
                      indexes=indexes, catalogue=context.catalogue.offer(carried, idle=idle))  # fmt: skip


def _known_state(
    context: WorkerContext, the_entity: str
) -> tuple[dict[str, Any] | None, dict[str, int], list[str], bool]:
    """The entity's last known state, when each value was received, the ids of its events found
    gone before this one, and whether no other event waits (the attribute catalogue writes what
    it gathered then, fields.py): one round trip."""
    with context.connection.pipeline(transaction=False) as pipe:
        pipe.get(state_key(the_entity))
        pipe.get(state_received_key(the_entity))
        pipe.lrange(MISSING_PREFIX + the_entity, 0, 99)
        pipe.llen(EVENTS_QUEUE_KEY)
        pipe.llen(ENTITY_QUEUE_PREFIX + the_entity)
        state, received, missing, queued, behind = pipe.execute()
    return (json.loads(state) if state else None), (json.loads(received) if received else {}), [
        m.decode() for m in missing], queued == 0 and behind <= 1  # fmt: skip


def apply_loop_guard(context: WorkerContext, evaluation: Evaluation, the_entity: str, event_id: str) -> None:
    """SPEC §6 Loops: a rule acts on one entity at most `limit` times per `per`, else it is held."""
    guard = context.settings.loop_guard
    for result in evaluation.matched:
        if result.skipped or not result.actions:
            continue
        name = f"{result.rule.id}:{the_entity}"
        hold_key = f"hr:hold:{name}"
        if context.connection.exists(hold_key):
            _skip(result, f"loop guard: held for this {the_entity.split(':')[1]} (acted more than {guard.limit} "
                          f"times in {guard.per:g}s)")  # fmt: skip
        elif not context.loop_guard.allow(name, per=guard.per, limit=guard.limit, event_id=event_id):
            context.connection.set(hold_key, event_id, ex=max(int(guard.hold), 1))
            HELD.labels(result.rule.id).inc()
            log.warning("event %s rule %s: loop guard holds it for %s for %gs", event_id, result.rule.id,
                        the_entity, guard.hold, extra={"event_id": event_id, "rule_id": result.rule.id})  # fmt: skip
            _skip(result, f"loop guard: acted more than {guard.limit} times in {guard.per:g}s on this entity; "
                          f"held for {guard.hold:g}s")  # fmt: skip


def apply_throttles(
    context: WorkerContext, evaluation: Evaluation, rule_context: dict[str, Any], event_id: str
) -> None:
    """A throttled rule still matched, but runs no action; the trace says why."""
    for result in evaluation.matched:
        throttle = result.rule.throttle
        if throttle is None:
            continue
        rule_context["vars"] = result.vars
        try:
            key = str(throttle.key.render(rule_context))
        except TemplateRenderError as exc:
            _skip(result, f"throttle key could not be rendered ({exc}); not run")
            continue
        name = f"{result.rule.id}:{key}"
        if not context.throttle.allow(name, per=throttle.per, limit=throttle.limit, event_id=event_id):
            _skip(
                result, f"throttled: already ran {throttle.limit} time(s) in the last {throttle.per:g}s for key {key!r}"
            )
    rule_context["vars"] = {}


def _skip(result: RuleResult, reason: str) -> None:
    result.skipped = reason
    result.actions = []
