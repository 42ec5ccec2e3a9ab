"""What every job of one worker process shares: settings, Redis, the rule set and the stores.

Built once per process by `configure` (the worker does it at start); jobs call
`current()`. Its own module so that event processing (`jobs`) and action
delivery (`delivery`) can both use it without importing each other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from rq import get_current_job

from engine.actions.outbound import OutboundClient
from engine.actions.policy import OutboundPolicy
from engine.config import Settings, load_settings, with_generated_tokens
from engine.rules.ruleset import RuleSet
from engine.runtime.action_state import ActionStore
from engine.runtime.connection import ReplicaCount, replicated
from engine.runtime.echo import EchoMemory
from engine.runtime.events import EventStore
from engine.runtime.fields import Pending
from engine.runtime.loading import RuleRegistry
from engine.runtime.retention import Retention
from engine.runtime.state_store import StateStore
from engine.runtime.throttle import SlidingWindow

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    connection: redis.Redis
    rules: RuleRegistry

    @property
    def rule_set(self) -> RuleSet:
        return self.rules.rule_set

    @property
    def secrets(self) -> frozenset[str]:
        """Every value that must never be shown: from the settings and from the running rule set."""
        return self.settings.secrets | self.rules.rule_set.secrets

    def settle(self) -> None:
        """With replicas (Sentinel), wait until one has what this worker just wrote, so that a failover
        right after does not take back a commit or a delivery record (best effort, 1 s)."""
        if self.replicas and self.replicas.online() and not self.connection.wait(1, 1000):
            log.warning("no replica acknowledged the last write within 1 s; a failover now could take it back")

    def __post_init__(self) -> None:
        self.replicas = ReplicaCount(self.connection) if replicated(self.settings.redis_target) else None
        self.events = EventStore(self.connection)
        self.states = StateStore(self.connection)
        self.actions = ActionStore(self.connection)
        self.run_template = self.actions.run_template
        self.echoes = EchoMemory(self.connection)
        self.retention = Retention(self.connection, retention=self.settings.retention)
        self.catalogue = Pending(self.connection)  # attribute names events carried, not written yet (fields.py)
        self.throttle = SlidingWindow(self.connection, "hr:throttle:")
        self.loop_guard = SlidingWindow(self.connection, "hr:guard:")
        self.outbound = OutboundClient(
            OutboundPolicy.from_settings(self.settings), timeout=self.settings.outbound.timeout
        )


_context: WorkerContext | None = None


def configure(settings: Settings, connection: redis.Redis, rule_set: RuleSet | None = None) -> WorkerContext:
    """Load the rule set (raising RuleSetError listing every mistake) and share it with every job.

    The version published in Redis, when there is one, replaces the files on disk.
    """
    global _context
    registry = RuleRegistry(connection, settings, rule_set) if rule_set else RuleRegistry.start(connection, settings)
    _context = WorkerContext(settings=settings, connection=connection, rules=registry)
    return _context


def current() -> WorkerContext:
    """The configured context, or one built from the environment and the running job."""
    if _context is None:
        job = get_current_job()
        if job is None:
            raise RuntimeError("no worker context: call engine.runtime.context.configure() first")
        return configure(with_generated_tokens(load_settings()), job.connection)
    return _context
