"""The life of one action in Redis: its record, its states, and the only ways it changes.

An action (`event_id:rule_id:index`) is a small state machine whose every
transition is one call of `action.lua`, so no crash, RQ re-run or second job
can leave it half-changed or deliver it twice:

    pending → running (a lease) → done | waiting (a retry job at T) | parked | failed
    scheduled (behind a `delay`) → pending | dropped;   failed | parked → pending (an admin's retry)

Each open action (pending, running, waiting, a scheduled delay) sits in one
index scored by when something must have happened to it; the sweeper
(`delivery.rescue_actions`) looks at those whose time passed, so no action is
ever left with nothing queued for it. Records are read tolerantly: a damaged
one is shown as such and can be deleted, never a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis
from redis.commands.core import Script
from rq.worker import Worker

from engine.errors import HanaRulesError
from engine.hana import now_iso
from engine.redaction import redact
from engine.runtime import lua
from engine.runtime.events import EVENT_KEY_PREFIX, FINISHED_EVENTS
from engine.runtime.queues import ACTIONS_QUEUE, RUN_ACTION, SCHEDULED_PREFIX, JobTemplate

log = logging.getLogger(__name__)

ACTION_PREFIX = "hr:action:"
#: Open actions, scored (ms, Redis's clock) by when the sweeper must look at them.
DUE_ACTIONS = "hr:actions:due"
DEAD_LETTERS = "hr:dead"
PARKED_APPS = "hr:parked-apps"
PARKED_PREFIX = "hr:parked:"
#: Actions that failed for good, per rule: GET /admin/rules shows them.
FAILURE_COUNTS = "hr:stats:failed"
#: How long a queued job may wait before the sweeper checks it still exists.
GRACE_MS = 60_000
ACTION_JOB_PREFIX = "act-"


class DamagedRecord(HanaRulesError):
    """An action record written half (by hand, by an older version): shown, deletable, never run."""


class ActionStatus(StrEnum):
    PENDING = "pending"  # a job is queued to deliver it
    RUNNING = "running"  # a job holds its lease and is delivering it
    WAITING = "waiting"  # a retry job is scheduled
    SCHEDULED = "scheduled"  # behind a `delay`
    PARKED = "parked"  # Hana refused the application's token: waits for an admin
    DONE = "done"
    FAILED = "failed"  # a dead letter
    DROPPED = "dropped"  # a delay ended and its rule no longer wanted it
    PURGED = "purged"  # an admin deleted the dead letter


#: States in which an action keeps its event from being finished (and removed by retention).
OPEN = frozenset({ActionStatus.PENDING, ActionStatus.RUNNING, ActionStatus.WAITING, ActionStatus.SCHEDULED,
                  ActionStatus.PARKED})  # fmt: skip


def action_id(event_id: str, rule_id: str, index: int | str) -> str:
    return f"{event_id}:{rule_id}:{index}"


def action_key(identifier: str) -> str:
    return f"{ACTION_PREFIX}{identifier}"


def first_job_id(identifier: str) -> str:
    """The job of an action's first ticket; later tickets count up (`action.lua`'s `enqueue`)."""
    return f"{ACTION_JOB_PREFIX}{identifier.replace(':', '-')}-1"


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
    damaged: str | None = None  # what is wrong with a record written half, for the admin views

    @property
    def attempt_number(self) -> int:
        """The number of the attempt about to be made, counted since the last admin retry."""
        return len(self.attempts) - self.attempt_base + 1

    def shown(self, secrets: frozenset[str]) -> dict[str, Any]:
        """What admins see of the action (SPEC §8), every known secret masked: the one display form."""
        return redact({
            "id": self.id, "event_id": self.event_id, "rule": self.rule, "index": self.index, "kind": self.kind,
            "status": self.status, "error": self.error, "attempts": self.attempts, "request": self.request,
            "response": self.response, **({"damaged": self.damaged} if self.damaged else {}),
        }, secrets)  # fmt: skip


#: Fields of an action record that hold JSON (a `log` payload is a JSON string too).
JSON_FIELDS = frozenset(("payload", "attempts", "response", "request"))


def record_fields(**values: Any) -> dict[str, str]:
    """One encoding for every write of an action record."""
    return {
        name: json.dumps(value, ensure_ascii=False, default=str) if name in JSON_FIELDS else str(value)
        for name, value in values.items()
    }


def parse_record(identifier: str, raw: dict[bytes, bytes]) -> ActionRecord:
    """A record as stored, whatever state it is in; what could not be read is named in `damaged`."""
    text = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    problems: list[str] = []

    def document(name: str, default: Any) -> Any:
        value = text.get(name)
        if not value:
            return default
        try:
            return json.loads(value)
        except ValueError:
            problems.append(f"{name} is not JSON")
            return default

    missing = [name for name in ("event_id", "rule", "index", "kind", "status") if not text.get(name)]
    if missing:
        problems.append(f"lacks {', '.join(missing)}")
    parts = identifier.rsplit(":", 2)
    try:
        index = int(text.get("index") or (parts[2] if len(parts) == 3 else -1))
    except ValueError:
        problems.append("its index is not a number")
        index = -1
    attempts = document("attempts", [])
    if not isinstance(attempts, list):
        problems.append("its attempts are not a list")
        attempts = []
    try:
        attempt_base = int(text.get("attempt_base") or 0)
    except ValueError:
        attempt_base = 0
    return ActionRecord(
        id=identifier, event_id=text.get("event_id") or (parts[0] if len(parts) == 3 else ""),
        rule=text.get("rule") or (parts[1] if len(parts) == 3 else ""), index=index,
        kind=text.get("kind") or "unknown", status=text.get("status") or "damaged",
        payload=document("payload", None), application_id=text.get("application_id") or None,
        entity_key=text.get("entity_key") or None, error=text.get("error") or None,
        response=document("response", None), attempts=attempts, attempt_base=attempt_base,
        request=document("request", None),
        damaged=f"damaged record: {'; '.join(problems)}" if problems else None,
    )  # fmt: skip


class ActionStore:
    """Reads action records and changes them only through `action.lua`'s transitions."""

    def __init__(self, connection: redis.Redis, run_template: JobTemplate | None = None) -> None:
        """`run_template`: the RQ job of `run_action`, built here when not given."""
        self.connection = connection
        if run_template is None:
            run_template = JobTemplate.build(connection, RUN_ACTION, ACTIONS_QUEUE, arity=3, retries=0)
        self.run_template = run_template
        parts = run_template.data_parts()
        source = lua.render(
            "action.lua",
            action_prefix=ACTION_PREFIX, event_prefix=EVENT_KEY_PREFIX, due_index=DUE_ACTIONS,
            dead_letters=DEAD_LETTERS, parked_apps=PARKED_APPS, parked_prefix=PARKED_PREFIX,
            finished_index=FINISHED_EVENTS, failure_counts=FAILURE_COUNTS, grace_ms=GRACE_MS,
            job_id_prefix=ACTION_JOB_PREFIX, job_key_prefix=run_template.job_key_prefix,
            worker_prefix=Worker.redis_worker_namespace_prefix,
            rq_queue=run_template.queue_key, rq_scheduled=run_template.scheduled_key,
            data_0=parts[0], data_1=parts[1], data_2=parts[2], data_3=parts[3],
            job_fields=run_template.constant_fields(),
        )  # fmt: skip
        self._script: Script = connection.register_script(source)
        assert run_template.scheduled_key.startswith(SCHEDULED_PREFIX)

    def _transition(self, operation: str, identifier: str, *arguments: Any) -> list[str]:
        reply = self._script(keys=[], args=[operation, identifier, _rq_stamp(), *arguments])
        return [part.decode() if isinstance(part, bytes) else str(part) for part in reply]

    # reading ---------------------------------------------------------------------------------
    def load(self, identifier: str) -> ActionRecord | None:
        raw = self.connection.hgetall(action_key(identifier))
        return parse_record(identifier, raw) if raw else None

    def for_event(self, event_id: str) -> list[ActionRecord]:
        """The event's actions in rule order, then action order: the list its commit (and resumes) wrote."""
        raw = self.connection.hget(f"{EVENT_KEY_PREFIX}{event_id}", "actions")
        try:
            entries = json.loads(raw) if raw else []
        except ValueError:
            entries = []
        identifiers = [action_id(event_id, entry.get("rule"), entry.get("index"))
                       for entry in entries if isinstance(entry, dict)]  # fmt: skip
        with self.connection.pipeline(transaction=False) as pipe:
            for identifier in identifiers:
                pipe.hgetall(action_key(identifier))
            found = pipe.execute()
        return [parse_record(identifier, raw) for identifier, raw in zip(identifiers, found, strict=True) if raw]

    def dead_letters(self, limit: int = 100) -> list[ActionRecord]:
        """Parked actions first (they wait for an admin), then dead letters, newest first."""
        parked = [member.decode() for app in sorted(self.connection.smembers(PARKED_APPS))
                  for member in sorted(self.connection.smembers(PARKED_PREFIX + app.decode()))]  # fmt: skip
        dead = [member.decode() for member in self.connection.zrevrange(DEAD_LETTERS, 0, limit - 1)]
        records = []
        for identifier in [*parked, *dead][:limit]:
            record = self.load(identifier)
            records.append(record if record is not None else parse_record(identifier, {}))
        return records

    def is_parked(self, application: str) -> bool:
        return bool(self.connection.sismember(PARKED_APPS, application))

    # transitions -----------------------------------------------------------------------------
    def claim(self, identifier: str, job_id: str, *, lease_ms: int) -> str:
        """'claimed' when this job may deliver the action now; else why not (its status, 'stale', 'parked')."""
        return self._transition("claim", identifier, job_id, lease_ms)[0]

    def finish(self, identifier: str, job_id: str, outcome: ActionStatus, *, attempt: dict[str, Any],
               error: str = "", response: dict[str, Any] | None = None, request: Any = None,
               retry_in: float = 0.0) -> str:  # fmt: skip
        """Record an attempt and its outcome: done, waiting (retry in `retry_in` s), parked or failed."""
        return self._transition(
            "finish", identifier, job_id, outcome.value, _json(attempt), error, _json(response),
            "" if request is None else _json(request), max(int(retry_in * 1000), 1),
        )[0]

    def rescue(self, identifier: str, *, max_attempts: int, retry_in: float, attempt: dict[str, Any]) -> str:
        """The sweeper's look at an action whose time passed (see `action.lua`)."""
        return self._transition("rescue", identifier, max_attempts, max(int(retry_in * 1000), 1), _json(attempt))[0]

    def resume(self, identifier: str, job_id: str, *, attempt: dict[str, Any],
               successors: Sequence[Successor]) -> str:  # fmt: skip
        arguments: list[Any] = [job_id, _json(attempt), len(successors)]
        for successor in successors:
            arguments += [successor.id, successor.mode, "" if successor.job_in is None else
                          max(int(successor.job_in * 1000), 0), _json(successor.entry) if successor.entry else "",
                          len(successor.fields)]  # fmt: skip
            for name, value in successor.fields.items():
                arguments += [name, value]
        return self._transition("resume", identifier, *arguments)[0]

    def retry(self, identifier: str) -> int:
        """An admin's retry of a dead letter or a parked action (and its whole application); how many resumed.

        DamagedRecord when the record was written half: it cannot be sent again, only deleted.
        """
        reply = self._transition("retry", identifier)
        if reply[0] == "damaged":
            raise DamagedRecord(f"action {identifier} is a damaged record and cannot be retried; delete it")
        return int(reply[1]) if reply[0] == "retried" else 0

    def purge(self, identifier: str) -> bool:
        """An admin's delete of a dead letter or a parked action (a damaged record is deleted whole)."""
        return self._transition("purge", identifier)[0] in ("purged", "deleted")

    def due(self, *, limit: int = 500, ahead_ms: int = 0) -> list[str]:
        """Open actions whose time passed (or passes within `ahead_ms`), by Redis's clock."""
        seconds, microseconds = self.connection.time()
        until = seconds * 1000 + microseconds // 1000 + ahead_ms
        return [member.decode() for member in self.connection.zrangebyscore(DUE_ACTIONS, "-inf", until, 0, limit)]


@dataclass(frozen=True)
class Successor:
    """An action after a delay, as the delay's end leaves it.

    `mode`: update (a scheduled record takes `fields`), create (a reload added it: a whole new
    record, listed on its event with `entry`), drop (it no longer runs; `fields` say why).
    `job_in`: seconds until its job runs (None: no job, it waits for a later delay).
    """

    id: str
    mode: str
    fields: dict[str, str]
    job_in: float | None = None
    entry: dict[str, Any] | None = None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _rq_stamp() -> str:
    """RQ's timestamp format for created_at/enqueued_at (shown by RQ tools only)."""
    return now_iso()[:-1] + "000Z"
