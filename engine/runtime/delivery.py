"""Delivering actions: claim, send, record the answer; retry, park or dead-letter; delays; the sweeper.

One RQ job per ticket of an action (`action_state`). The job claims the action
(atomically: two jobs never both deliver), sends it, and records the attempt
the moment the answer arrives. Whatever goes wrong in Python is an attempt
too, and takes the delivery rules (retry when transient, dead letter
otherwise), so no action is left `pending` or `running` with nothing to move
it on; should the worker itself die, its lease expires and the sweeper
(`rescue_actions`, in every worker's maintenance) takes it up again.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

import redis
from rq import get_current_job
from rq.timeouts import BaseTimeoutException

from engine.actions.errors import ActionError, Response
from engine.actions.kinds import ActionEnvironment, execute
from engine.actions.retry import next_delay
from engine.config import JOB_TIMEOUT, Settings
from engine.hana import entity_of, now_iso, update_body
from engine.redaction import redact
from engine.rules.ruleset import Rule, RuleSet, render_actions
from engine.runtime.action_plan import listing_entry, new_record
from engine.runtime.action_state import (
    ACTION_PREFIX,
    ActionRecord,
    ActionStatus,
    Successor,
    action_id,
    record_fields,
)
from engine.runtime.context import WorkerContext, current
from engine.runtime.events import entity_key
from engine.runtime.metrics import ACTIONS, RESCUES, RETRIES

log = logging.getLogger(__name__)

#: A delivery holds its action this much longer than `outbound.timeout` (its enforced total
#: deadline), for rendering and recording; past that its worker is taken for dead.
LEASE_MARGIN_SECONDS = 10.0
#: Set once the open actions of 0.1 were adopted (see adopt_legacy_actions).
LEGACY_MARK = "hr:upgraded:actions-0.2"
#: Recording an outcome keeps trying through a Redis blip or a Sentinel failover for as long as
#: the lease still holds (nobody else may retry the action until then), stopping this long
#: before the lease or the job timeout ends. Giving up is the one window for a repeated delivery:
#: the lease expires and the sweeper retries the action.
RECORD_MARGIN_SECONDS = 1.0


def lease_ms(settings: Settings) -> int:
    return int((settings.outbound.timeout + LEASE_MARGIN_SECONDS) * 1000)


def run_action(event_id: str, rule_id: str, index: str) -> str:
    """The RQ job of one ticket of one action; a no-op unless its ticket is still the action's."""
    job = get_current_job()
    outcome, kind = deliver(current(), action_id(event_id, rule_id, index), job.id if job else "")
    ACTIONS.labels(kind, "skipped" if kind == "-" else outcome).inc()
    if outcome == ActionStatus.WAITING:
        RETRIES.labels(kind).inc()
    return outcome


def deliver(context: WorkerContext, identifier: str, job_id: str) -> tuple[str, str]:
    """(outcome, kind) of one job's turn at an action."""
    store = context.actions
    claimed_at = time.monotonic()
    claimed = store.claim(identifier, job_id, lease_ms=lease_ms(context.settings))
    if claimed == "parked":
        return "parked", "hana_update"
    if claimed != "claimed":
        if claimed in ("missing", "damaged"):
            log.warning("action %s: %s; nothing to deliver", identifier, claimed)
        return claimed, "-"  # done, failed, dropped, held by another job, or a stale ticket
    context.settle()  # a claim a failover took back would let another job deliver it again
    record = store.load(identifier)
    assert record is not None  # claimed a moment ago; only retention removes records, and never open ones
    settings = context.settings
    started = time.monotonic()
    give_up = claimed_at + min(lease_ms(settings) / 1000, JOB_TIMEOUT) - RECORD_MARGIN_SECONDS
    if record.kind == "delay":
        try:
            return resume(context, record, job_id), "delay"
        except Exception as exc:  # noqa: BLE001 - a delay's end that broke is an attempt, like any other
            broke = _unexpected(exc, settings)
            outcome, retry_in = _judge(record, broke, settings)
            _record(context, record, job_id, outcome, started=started, response=None, failure=broke,
                    retry_in=retry_in, give_up=give_up)  # fmt: skip
            return outcome.value, "delay"
    application = settings.application(record.application_id) or (
        settings.applications[0] if settings.uses_default_application else None)  # fmt: skip
    environment = ActionEnvironment(settings=settings, client=context.outbound, application=application,
                                    event_id=record.event_id, rule_id=record.rule)  # fmt: skip
    response: Response | None = None
    failure: ActionError | None = None
    try:
        response = execute(record.kind, record.payload, environment)
    except ActionError as exc:
        failure = exc
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is an attempt and follows the delivery rules
        failure = _unexpected(exc, settings)
    outcome, retry_in = _judge(record, failure, settings)
    _record(context, record, job_id, outcome, started=started, response=response, failure=failure,
            retry_in=retry_in, give_up=give_up)  # fmt: skip
    if outcome is ActionStatus.DONE and record.kind == "hana_update":
        context.echoes.remember(record.application_id, update_body(record.payload))
    return outcome.value, record.kind


def _unexpected(exc: Exception, settings: Settings) -> ActionError:
    """An exception no action kind foresaw: transient when it smells of the network or the clock."""
    if isinstance(exc, BaseTimeoutException):
        return ActionError("the job ran out of time before the delivery ended", retryable=True)
    transient = isinstance(exc, OSError | TimeoutError | redis.RedisError)
    return ActionError(f"unexpected {type(exc).__name__} while delivering: {exc}"[:500], retryable=transient)


def _judge(record: ActionRecord, failure: ActionError | None, settings: Settings) -> tuple[ActionStatus, float]:
    """The delivery rules of SPEC §6: (outcome, seconds until the retry)."""
    if failure is None:
        return ActionStatus.DONE, 0.0
    attempt = record.attempt_number
    if failure.park:
        return ActionStatus.PARKED, 0.0
    if failure.retryable and attempt < settings.delivery.max_attempts:
        return ActionStatus.WAITING, next_delay(attempt, settings.delivery, failure.retry_after)
    return ActionStatus.FAILED, 0.0


def _record(context: WorkerContext, record: ActionRecord, job_id: str, outcome: ActionStatus, *, started: float,
            response: Response | None, failure: ActionError | None, retry_in: float,
            give_up: float) -> None:  # fmt: skip
    """Write the attempt and the outcome, trying until `give_up` (monotonic); every error, response and
    request stored is masked here."""
    secrets = context.secrets
    error = redact(str(failure), secrets) if failure else ""
    answer = response or (failure.response if failure else None)
    attempt = {"at": now_iso(), "status_code": answer.status_code if answer else None,
               "duration_ms": round((time.monotonic() - started) * 1000, 1), "error": error or None}  # fmt: skip
    shown = redact(answer.as_json(), secrets) if answer else None
    request = (redact({"kind": record.kind, "payload": record.payload}, secrets)
               if outcome in (ActionStatus.FAILED, ActionStatus.PARKED) else None)  # fmt: skip
    where = {"event_id": record.event_id, "rule_id": record.rule}
    if failure:
        log.warning("event %s rule %s: %s action failed (attempt %d): %s → %s", record.event_id, record.rule,
                    record.kind, record.attempt_number, error, outcome.value, extra=where)  # fmt: skip
    else:
        log.info("event %s rule %s: %s action done", record.event_id, record.rule, record.kind, extra=where)
    while True:
        try:
            context.actions.finish(record.id, job_id, outcome, attempt=attempt, error=error, response=shown,
                                   request=request, retry_in=retry_in)  # fmt: skip
            context.settle()
            return
        except (redis.ConnectionError, redis.OutOfMemoryError) as exc:
            # A `done` is recorded even at maxmemory (action.lua); a retry job needs room: make some.
            if isinstance(exc, redis.OutOfMemoryError):
                context.retention.make_room()
            if time.monotonic() > give_up:
                log.error("action %s: its outcome (%s) could not be recorded (%s); its lease will expire and the "
                          "sweeper retry it", record.id, outcome.value, exc, extra=where)  # fmt: skip
                raise
            time.sleep(0.2)


def resume(context: WorkerContext, delay: ActionRecord, job_id: str) -> str:
    """A `delay` came due: run what follows it with the rule as it is now, each step one atomic transition."""
    started = time.monotonic()
    event = context.events.load(delay.event_id)
    rule = context.rules.current().rule(delay.rule)
    followers = {r.index: r for r in context.actions.for_event(delay.event_id)
                 if r.rule == delay.rule and r.index > delay.index}  # fmt: skip
    why = ("the event is gone" if event is None else "the rule is gone from the current rule set" if rule is None
           else "the rule is disabled now" if not rule.enabled else None)  # fmt: skip
    successors: list[Successor] = []
    if why is None:
        assert event is not None and rule is not None
        rule_context: dict[str, Any] = dict(event.context or {})  # rebuilt from the body: secrets included
        entity = entity_of(event.type)
        if event.entity_id:
            latest = context.states.load(entity_key(event.application_id, event.type, event.entity_id))
            if latest:
                rule_context[entity] = latest
        try:
            body = json.loads(event.body)
        except ValueError:
            body = None
        result = RuleSet.evaluate_rule(rule, rule_context, body)
        written = next((a for a in rule.actions if a.index == delay.index and a.kind == "delay"), None)
        recheck = written.recheck if written else bool((delay.payload or {}).get("recheck"))
        if recheck and not result.matched:
            why = "the rule's conditions no longer hold"
        else:
            rule_context["vars"] = result.vars
            successors = _successors(context, delay, rule_context, followers, rule)
    if why is not None:
        dropped = record_fields(status=ActionStatus.DROPPED.value, error=f"delay ended, but {why}")
        successors = [Successor(f.id, "drop", dropped) for f in followers.values()
                      if f.status == ActionStatus.SCHEDULED]  # fmt: skip
    attempt = {"at": now_iso(), "status_code": None, "duration_ms": round((time.monotonic() - started) * 1000, 1),
               "error": f"dropped what follows: {why}" if why else None}  # fmt: skip
    outcome = context.actions.resume(delay.id, job_id, attempt=attempt, successors=successors)
    return "dropped" if why and outcome == "resumed" else outcome


def _successors(context: WorkerContext, delay: ActionRecord, rule_context: dict[str, Any],
                followers: dict[int, ActionRecord], rule: Rule) -> list[Successor]:  # fmt: skip
    """What follows the delay up to the next one (included): updated, created (a reload added it) or dropped."""
    rule_id = rule.id
    rendered = {a.index: a for a in render_actions(rule, rule_context)}
    successors: list[Successor] = []
    last_index = max((a.index for a in rule.actions), default=-1)
    for action in rule.actions:
        if action.index <= delay.index:
            continue
        this = rendered[action.index]
        identifier = action_id(delay.event_id, rule_id, action.index)
        job_in: float | None
        if action.kind == "delay":
            status, job_in = ActionStatus.SCHEDULED, float(action.delay or 0)
        elif this.error:
            status, job_in = ActionStatus.FAILED, None
        else:
            status, job_in = ActionStatus.PENDING, 0.0
        existing = followers.get(action.index)
        if existing is not None:
            fields = record_fields(status=status.value, kind=this.kind, payload=this.payload, error=this.error or "")
            successors.append(Successor(identifier, "update", fields, job_in))
        else:
            fields = new_record(delay.event_id, rule_id, this, status=status, application_id=delay.application_id,
                                entity_key=delay.entity_key)  # fmt: skip
            entry = redact(listing_entry(rule_id, this, status), context.secrets)
            successors.append(Successor(identifier, "create", fields, job_in, entry))
        if action.kind == "delay":
            break  # what follows waits for this delay's end
    gone = record_fields(status=ActionStatus.DROPPED.value, error="delay ended, but the rule no longer has this action")
    successors += [Successor(f.id, "drop", gone) for index, f in followers.items()
                   if index > last_index and f.status == ActionStatus.SCHEDULED]  # fmt: skip
    return successors


_RESCUED = {
    "waiting": "its worker stopped mid-delivery (lease expired); retried on the delivery schedule",
    "failed": "its worker stopped mid-delivery (lease expired) and no attempt is left; dead letter",
    "requeued": "its job was gone; queued again",
}


def adopt_legacy_actions(context: WorkerContext) -> int:
    """Once per installation: queue the open actions 0.1 left (no tickets; their jobs point at gone code)."""
    if not context.connection.set(LEGACY_MARK, now_iso(), nx=True):
        return 0
    adopted = 0
    for key in context.connection.scan_iter(match=f"{ACTION_PREFIX}*", count=1000):
        identifier = key.decode().removeprefix(ACTION_PREFIX)
        if context.connection.hget(key, "job") is None and context.connection.hget(key, "status") in (
                b"pending", b"retrying"):  # fmt: skip
            attempt = {"at": now_iso(), "status_code": None, "duration_ms": None, "error": None}
            if context.actions.rescue(identifier, max_attempts=1, retry_in=0, attempt=attempt) == "requeued":
                adopted += 1
    if adopted:
        log.warning("upgrade: %d open action(s) of hana-rules 0.1 queued again", adopted)
    return adopted


def rescue_actions(context: WorkerContext, *, limit: int = 500, ahead_ms: int = 0) -> Counter[str]:
    """The sweeper: every open action whose time passed gets a job again, or its expired lease ends.
    `ahead_ms`: also look now at those due that much later (whose job may have died already)."""
    outcomes: Counter[str] = Counter()
    delivery = context.settings.delivery
    for identifier in context.actions.due(limit=limit, ahead_ms=ahead_ms):
        record = context.actions.load(identifier)
        retry_in = next_delay(record.attempt_number if record else 1, delivery, None)
        attempt = {"at": now_iso(), "status_code": None, "duration_ms": None,
                   "error": "interrupted: the worker stopped during delivery (its lease expired)"}  # fmt: skip
        try:
            outcome = context.actions.rescue(identifier, max_attempts=delivery.max_attempts, retry_in=retry_in,
                                             attempt=attempt)  # fmt: skip
        except redis.ResponseError as exc:  # one record must not stop the sweep of every other
            log.error("action %s: the sweeper could not move it on (%s)", identifier, exc)
            outcome = "error"
        outcomes[outcome] += 1
        if outcome in _RESCUED:
            RESCUES.labels(outcome).inc()
            log.warning("action %s: %s", identifier, _RESCUED[outcome])
    return outcomes
