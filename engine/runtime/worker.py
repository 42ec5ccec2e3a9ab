"""The worker process: RQ's SimpleWorker with a JSON serializer, our maintenance, and self-healing.

SimpleWorker runs jobs in-process (≈250 no-op jobs/s here) instead of forking
per job (≈55/s); our jobs are short and stateless, so the fork buys nothing.
Its maintenance (at least every 15 s) also revives entity queues nobody
drains, moves on actions whose lease expired or whose job is gone, and trims
finished events (by age, by count, and early when Redis nears `maxmemory`).
A worker that RQ's loop gave up on (Redis full or gone for a while) starts
again by itself instead of exiting.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from engine.config import Settings
from engine.rules.ruleset import RuleSet
from engine.runtime import context as worker_context
from engine.runtime import delivery, jobs
from engine.runtime.action_state import GRACE_MS
from engine.runtime.embedded import die_with_parent
from engine.runtime.queues import ACTIONS_QUEUE, DRAFTS_QUEUE, EVENTS_QUEUE, queue

log = logging.getLogger(__name__)

#: The worker's registration TTL; the idle dequeue blocks for TTL - 15 s, so maintenance
#: (which re-enqueues the jobs of dead workers) runs at least every 15 s.
WORKER_TTL = 30
MAINTENANCE_INTERVAL = 15
#: Between two starts of a worker whose loop ended on an error, at most this long.
MAX_RESTART_WAIT = 30.0


class HanaWorker(SimpleWorker):
    """RQ's SimpleWorker, whose maintenance also keeps events and actions moving."""

    stop_asked = False  # SIGTERM/SIGINT came: RQ's loop ended on purpose, not on an error

    def request_stop(self, signum: int, frame: object) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)

    def clean_registries(self) -> None:
        context = worker_context.current()
        tasks = (
            ("making room", context.retention.make_room),  # first: near maxmemory, RQ's bookkeeping needs room
            ("RQ's registries", super().clean_registries),
            ("stalled queues", lambda: jobs.sweep_stalled_queues(self.connection)),
            ("open actions", lambda: delivery.rescue_actions(context)),
            ("retention", lambda: context.retention.trim(max_events=context.settings.max_events)),
            ("attribute catalogue", context.catalogue.flush),  # what this worker gathered while others took the rest
        )
        for name, task in tasks:  # each on its own: one failing must not skip the others
            try:
                task()
            except redis.RedisError as exc:
                log.warning("maintenance: %s skipped (%s)", name, exc)


def build_worker(
    settings: Settings, connection: redis.Redis, *, name: str | None = None, rule_set: RuleSet | None = None
) -> HanaWorker:
    worker_context.configure(settings, connection, rule_set)
    return HanaWorker(
        # Actions first: RQ takes from the first non-empty queue, and a steady stream of events
        # would otherwise starve the actions they produce. Each event makes a bounded number of actions.
        # Drafts last: a user's dry run waits for Hana's work, one short chunk at a time (dry_runs.py).
        [queue(connection, ACTIONS_QUEUE), queue(connection, EVENTS_QUEUE), queue(connection, DRAFTS_QUEUE)],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        worker_ttl=WORKER_TTL,
        maintenance_interval=MAINTENANCE_INTERVAL,
    )


def run_worker(settings: Settings, connection: redis.Redis, *, burst: bool = False) -> bool:
    """Work until asked to stop; when RQ's loop ends on an error (Redis full, gone), start again."""
    # RQ's scheduler runs in a forked child: without this, a worker killed with -9 leaves it
    # running on its own, for ever.
    os.register_at_fork(after_in_child=die_with_parent)
    stop = threading.Event()
    worked = False
    wait = 1.0
    worker: HanaWorker | None = None
    previous: HanaWorker | None = None  # the worker whose loop ended on an error, until buried
    while True:
        try:
            if previous is not None:
                previous.register_death()  # so its job, left `started`, is known to be nobody's
            worker = build_worker(settings, connection)
            context = worker_context.current()
            delivery.adopt_legacy_actions(context)
            if previous is not None:
                # The jobs this worker held when Redis failed are gone with their failure: drain every
                # lead nobody drains now, and give back the actions it had taken, rather than in a minute
                # (one it had begun to deliver waits for its lease: whether it was sent is unknown).
                jobs.sweep_stalled_queues(connection, older_than=0)
                delivery.rescue_actions(context, ahead_ms=GRACE_MS)
                previous = None
            log.info("worker: rule set %s, %d rules", context.rule_set.version, len(context.rule_set.rules))
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
            worked = worker.work(burst=burst, with_scheduler=True, logging_level=level) or worked
            _flush_catalogue(context)
            if burst or worker.stop_asked:
                return worked
            log.error("worker: RQ's loop ended on an error; starting again in %.0fs", wait)
        except redis.OutOfMemoryError:
            log.error("worker: Redis is full (maxmemory); making room before starting again")
            _make_room(connection, settings)
        except redis.RedisError as exc:
            if worker is not None and worker.stop_asked:
                # Asked to stop as Redis went away (serve killed: both are told at once). RQ's handler
                # took the signal, so nobody else will see it: honour it, never loop on a dead Redis.
                log.info("worker: stopping as asked (Redis is gone: %s)", exc)
                return worked
            log.error("worker: Redis unavailable (%s); starting again in %.0fs", exc, wait)
        previous = previous or worker
        _stop_on_signal(stop)
        if stop.wait(wait):
            return worked
        wait = min(wait * 2, MAX_RESTART_WAIT)


def _flush_catalogue(context: worker_context.WorkerContext) -> None:
    """The attribute names this worker gathered and had not written yet: best effort, on the way out."""
    try:
        context.catalogue.flush()
    except redis.RedisError as exc:
        log.warning("worker: attribute catalogue not written on the way out (%s)", exc)


def _make_room(connection: redis.Redis, settings: Settings) -> None:
    from engine.runtime.retention import Retention

    try:
        Retention(connection, retention=settings.retention).make_room()
    except redis.RedisError as exc:
        log.warning("worker: could not make room in Redis (%s)", exc)


def _stop_on_signal(stop: threading.Event) -> None:
    """Between two starts, SIGTERM/SIGINT end the worker at once (RQ's handlers are gone then)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
