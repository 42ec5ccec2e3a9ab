"""Dry runs of a draft as worker jobs: the draft against the last N stored events, with progress.

Replaying thousands of events through two rule sets takes seconds of CPU (about
0.5 s per 1,000 on one core); on a request thread it would hold up Hana's
answers. So the admin API only compiles the draft (a broken one is refused at
once) and records it; workers run it from the `drafts` queue, which they take
from only when actions and events are empty, CHUNK events per job, each job
queueing the next behind whatever arrived meanwhile: a dry run never holds
Hana's events up for more than one chunk (about 0.15 s).

Everything lives in one Redis hash with a TTL (the event ids compared in a list
beside it): status, progress (`done`, every PROGRESS_EVERY events: a few bytes),
and the tally, saved with the position it counts up to (`tallied`) at the end of
each chunk. A retried job (its worker died) runs its chunk again from its start,
so no event is counted twice; the tally (up to ~300 KB) is written 4 times per
1,000 events; each event is read without its trace. The candidate is the whole
set's text as the admin API merged it, so every worker compiles the very set
that was validated, whatever its own disk holds.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis
from rq import Retry

from engine.hana import now_iso
from engine.redaction import redact
from engine.rules.ruleset import RuleSet
from engine.runtime import context as worker_context
from engine.runtime.dry_run import comparable, matched_rules
from engine.runtime.events import EventStore, StoredEvent, event_key
from engine.runtime.loading import compile_rules
from engine.runtime.queues import DRAFTS_QUEUE, JOB_TIMEOUT, queue

log = logging.getLogger(__name__)

KEY_PREFIX = "hr:dry-run:"  # hash: status, progress, texts, result; `<key>:ids`: the event ids, newest first
RUN_CHUNK = "engine.runtime.dry_runs.run_chunk"
TTL_SECONDS = 3600
DEFAULT_EVENTS = 1000
MAX_EVENTS = 10_000
CHUNK = 250
PROGRESS_EVERY = 50
#: Changed events listed per rule (the counts are whole): enough to look at, bounded in Redis and on the page.
MAX_LISTED = 50
_ID = re.compile(r"[0-9a-f]{16}")


class DryRunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


def _key(run_id: str) -> str:
    return KEY_PREFIX + run_id


def start(connection: redis.Redis, candidate: RuleSet, texts: Mapping[str, str], *, drafts: list[str],
          events: int = DEFAULT_EVENTS) -> str:  # fmt: skip
    """Record a dry run of `candidate` (compiled from `texts`) and queue its first chunk; returns its id."""
    run_id = secrets.token_hex(8)
    now = now_iso()
    with connection.pipeline(transaction=True) as pipe:
        pipe.hset(_key(run_id), mapping={
            "status": DryRunStatus.QUEUED.value, "events": events, "done": 0, "tallied": 0, "total": 0,
            "candidate": candidate.version, "drafts": json.dumps(drafts), "texts": json.dumps(dict(texts)),
            "created_at": now, "updated_at": now,
        })  # fmt: skip
        pipe.expire(_key(run_id), TTL_SECONDS)
        pipe.execute()
    _enqueue(connection, run_id, 0)
    return run_id


def _enqueue(connection: redis.Redis, run_id: str, start_at: int) -> None:
    queue(connection, DRAFTS_QUEUE).enqueue(
        RUN_CHUNK, run_id, start_at, job_id=f"dry-{run_id}-{start_at}", result_ttl=0, failure_ttl=TTL_SECONDS,
        job_timeout=JOB_TIMEOUT, retry=Retry(max=2),
    )  # fmt: skip


_SHOWN = ("status", "error", "events", "done", "total", "running", "candidate", "drafts", "created_at", "updated_at",
          "finished_at", "result")  # fmt: skip


def read(connection: redis.Redis, run_id: str) -> dict[str, Any] | None:
    """The run's progress and result so far, as the admin API answers it; None when unknown or expired."""
    if not _ID.fullmatch(run_id):
        return None
    values: list[Any] = connection.hmget(_key(run_id), list(_SHOWN))
    if values[0] is None:
        return None
    raw = {name: value.decode(errors="replace") for name, value in zip(_SHOWN, values, strict=True) if value}
    result = _json(raw.get("result"))
    result = result if isinstance(result, dict) else {}  # damaged by hand: shown empty, never a 500
    drafts = _json(raw.get("drafts"))
    return {
        "id": run_id, "status": raw.get("status"), "error": raw.get("error"),
        "events": _int(raw.get("events")), "done": _int(raw.get("done")), "total": _int(raw.get("total")),
        "compared": _int(result.get("compared")), "skipped": _int(result.get("skipped")),
        "running": raw.get("running"), "candidate": raw.get("candidate"),
        "drafts": drafts if isinstance(drafts, list) else [], "created_at": raw.get("created_at"),
        "updated_at": raw.get("updated_at"), "finished_at": raw.get("finished_at"),
        "rules": result.get("rules") if isinstance(result.get("rules"), list) else [],
    }  # fmt: skip


@dataclass
class Tally:
    """Per rule: how many compared events each set matched, and the events whose verdict differs."""

    compared: int = 0
    skipped: int = 0
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: Mapping[str, Any] | None) -> Tally:
        if not result:
            return cls()
        counts = {row["id"]: {k: row[k] for k in ("matched", "matched_before", "changed", "events")}
                  for row in result.get("rules", [])}  # fmt: skip
        return cls(result.get("compared", 0), result.get("skipped", 0), counts)

    def add(self, running: RuleSet, candidate: RuleSet, event: StoredEvent | None) -> None:
        replayable = comparable(event)
        if replayable is None:
            self.skipped += 1
            return
        event, context, body = replayable
        self.compared += 1
        before, after = set(matched_rules(running, context, body)), set(matched_rules(candidate, context, body))
        for rule_id in before | after:
            row = self.counts.setdefault(rule_id, {"matched": 0, "matched_before": 0, "changed": 0, "events": []})
            row["matched"] += rule_id in after
            row["matched_before"] += rule_id in before
            if (rule_id in before) != (rule_id in after):
                row["changed"] += 1
                if len(row["events"]) < MAX_LISTED:
                    row["events"].append({"id": event.id, "type": event.type, "received_at": event.received_at,
                                          "entity_id": event.entity_id,  # which customer: what a reader looks for
                                          "before": rule_id in before, "after": rule_id in after})  # fmt: skip

    def result(self, running: RuleSet, candidate: RuleSet) -> dict[str, Any]:
        """Every rule of the draft (a rule it matched nowhere too), then the running rules it drops."""
        rows = []
        seen: set[str] = set()
        secrets = running.secrets | candidate.secrets  # a name may be written with ${NAME}
        for rule, in_draft in [*((r, True) for r in candidate.rules), *((r, False) for r in running.rules)]:
            if rule.id in seen or (not in_draft and candidate.rule(rule.id) is not None):
                continue
            seen.add(rule.id)
            counts = self.counts.get(rule.id, {"matched": 0, "matched_before": 0, "changed": 0, "events": []})
            rows.append({"id": rule.id, "name": redact(rule.name, secrets), "file": rule.file, "line": rule.line,
                         "in_draft": in_draft, "in_running": running.rule(rule.id) is not None, **counts})  # fmt: skip
        return {"compared": self.compared, "skipped": self.skipped, "rules": rows}


_compiled: dict[str, RuleSet] = {}  # the candidate of the run this worker works on: compiled once per run


def run_chunk(run_id: str, start_at: int) -> None:
    """RQ job: compare the chunk of events from `start_at`, save the tally, queue the next chunk."""
    context = worker_context.current()
    connection = context.connection
    fields: list[Any] = connection.hmget(_key(run_id), "status", "tallied")
    status, tallied = fields
    if status is None:
        log.info("dry run %s: gone (expired); nothing to do", run_id)
        return
    if status.decode() in (DryRunStatus.FINISHED, DryRunStatus.FAILED):
        return
    if _int(tallied) == start_at + CHUNK:  # done, but its worker died before queueing the next
        _enqueue(connection, run_id, start_at + CHUNK)
        return
    if _int(tallied) != start_at:
        return  # a job of this run that another one has taken further: each event is counted once
    try:
        _run(context, run_id, start_at)
    except redis.RedisError:
        raise  # RQ tries again (Retry): the chunk runs again from its start, its tally unsaved
    except Exception as exc:  # the job's boundary: the page says why instead of waiting for ever
        log.exception("dry run %s: failed", run_id)
        _save(connection, run_id, status=DryRunStatus.FAILED.value, error=f"{type(exc).__name__}: {exc}",
              finished_at=now_iso())  # fmt: skip


def _run(context: worker_context.WorkerContext, run_id: str, start_at: int) -> None:
    """One chunk: progress (`done`) every PROGRESS_EVERY events, a few bytes; the tally once, at its end."""
    connection = context.connection
    key, ids_key = _key(run_id), _key(run_id) + ":ids"
    fields: list[Any] = connection.hmget(key, "texts", "events", "total", "result")
    texts, events, stored_total, saved = fields
    candidate = _candidate(context, run_id, texts)
    running = context.rules.current()
    if start_at == 0:
        ids = context.events.recent(min(max(_int(events), 1), MAX_EVENTS))
        with connection.pipeline(transaction=True) as pipe:
            pipe.delete(ids_key)
            if ids:
                pipe.rpush(ids_key, *ids)
            pipe.execute()
        stored_total = len(ids)
        _save(connection, run_id, status=DryRunStatus.RUNNING.value, total=stored_total, running=running.version,
              started_at=now_iso())  # fmt: skip
    total = _int(stored_total)
    tally = Tally.from_result(_json(saved)) if start_at else Tally()
    position, end = start_at, min(start_at + CHUNK, total)
    while position < end:
        listed: list[Any] = connection.lrange(ids_key, position, min(position + PROGRESS_EVERY, end) - 1)
        batch = [i.decode() for i in listed]
        if not batch:
            raise RuntimeError("the list of events to compare is gone (expired)")
        for event in load_for_replay(connection, batch):
            tally.add(running, candidate, event)
        position += len(batch)
        if position < end:
            _save(connection, run_id, done=position)
    finished = {"status": DryRunStatus.FINISHED.value, "finished_at": now_iso()} if position >= total else {}
    _save(connection, run_id, done=position, tallied=position, result=json.dumps(tally.result(running, candidate)),
          **finished)  # fmt: skip
    if finished:
        _compiled.pop(run_id, None)
    else:
        _enqueue(connection, run_id, position)


#: What replaying an event reads (StoredEvent.context and comparable()): not its trace, ~85% of its hash,
#: which Redis would otherwise serve a thousand times per dry run, between the receiver's writes.
REPLAY_FIELDS = ("type", "received_at", "status", "body", "application_id", "entity_id", "context", "previous",
                 "stale", "application_name", "echo")  # fmt: skip


def load_for_replay(connection: redis.Redis, event_ids: list[str]) -> list[StoredEvent | None]:
    """The events as a replay needs them, in one round trip."""
    with connection.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hmget(event_key(event_id), list(REPLAY_FIELDS))
        found: list[Any] = pipe.execute()
    events = []
    for event_id, values in zip(event_ids, found, strict=True):
        raw = {name.encode(): value for name, value in zip(REPLAY_FIELDS, values, strict=True) if value is not None}
        events.append(EventStore.parse(event_id, raw))
    return events


def _candidate(context: worker_context.WorkerContext, run_id: str, texts: bytes | None) -> RuleSet:
    """The draft set, compiled here from the text the admin API validated (RuleSetError when it cannot be)."""
    if run_id not in _compiled:
        files = _json(texts)
        if not files or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("the draft's files are damaged in Redis")
        _compiled.clear()
        _compiled[run_id] = compile_rules(files, context.settings)
    return _compiled[run_id]


def _save(connection: redis.Redis, run_id: str, **fields: str | int) -> None:
    """Fields written together (progress with its tally), the TTL renewed while the run lives."""
    values: dict[str, str | int] = {**fields, "updated_at": now_iso()}
    with connection.pipeline(transaction=True) as pipe:
        pipe.hset(_key(run_id), mapping=values)  # type: ignore[arg-type]
        pipe.expire(_key(run_id), TTL_SECONDS)
        pipe.expire(_key(run_id) + ":ids", TTL_SECONDS)
        pipe.execute()


def _json(raw: str | bytes | None) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def _int(raw: Any) -> int:
    try:
        return int(raw or 0)
    except (TypeError, ValueError):
        return 0
