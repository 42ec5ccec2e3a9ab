"""The worker process: RQ's SimpleWorker with a JSON serializer and fast dead-worker recovery.

SimpleWorker runs jobs in-process (≈250 no-op jobs/s here) instead of forking
per job (≈55/s); our jobs are short and stateless, so the fork buys nothing.
"""

from __future__ import annotations

import logging

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from engine.config import Settings
from engine.rules.ruleset import RuleSet
from engine.runtime import jobs
from engine.runtime.queues import ACTIONS_QUEUE, EVENTS_QUEUE, queue

log = logging.getLogger(__name__)

#: The worker's registration TTL; the idle dequeue blocks for TTL - 15 s, so maintenance
#: (which re-enqueues the jobs of dead workers) runs at least every 15 s.
WORKER_TTL = 30
MAINTENANCE_INTERVAL = 15


class HanaWorker(SimpleWorker):
    """RQ's SimpleWorker, whose maintenance also revives entity queues nobody drains."""

    def clean_registries(self) -> None:
        super().clean_registries()
        try:
            jobs.sweep_stalled_queues(self.connection)
            context = jobs.current()
            trimmed = context.events.trim(max_events=context.settings.max_events)
            if trimmed:
                log.info("retention: %d event(s) left the history", trimmed)
        except redis.RedisError as exc:
            log.warning("maintenance: skipped (%s)", exc)


def build_worker(
    settings: Settings, connection: redis.Redis, *, name: str | None = None, rule_set: RuleSet | None = None
) -> HanaWorker:
    jobs.configure(settings, connection, rule_set)
    return HanaWorker(
        # Actions first: RQ takes from the first non-empty queue, and a steady stream of events
        # would otherwise starve the actions they produce. Each event makes a bounded number of actions.
        [queue(connection, ACTIONS_QUEUE), queue(connection, EVENTS_QUEUE)],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        worker_ttl=WORKER_TTL,
        maintenance_interval=MAINTENANCE_INTERVAL,
    )


def run_worker(settings: Settings, connection: redis.Redis, *, burst: bool = False) -> bool:
    worker = build_worker(settings, connection)
    log.info("worker: rule set %s, %d rules", jobs.current().rule_set.version, len(jobs.current().rule_set.rules))
    return worker.work(
        burst=burst, with_scheduler=True, logging_level=logging.getLevelName(logging.getLogger().getEffectiveLevel())
    )
