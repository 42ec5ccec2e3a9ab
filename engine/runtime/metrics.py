"""Prometheus metrics, multiprocess-safe across gunicorn and worker processes.

Counters and histograms are recorded where things happen (receiver, workers);
`PROMETHEUS_MULTIPROC_DIR` (set by `serve`, `web` and `worker` to
`data_dir/metrics`, or given: docker compose shares one folder between the web
and worker containers) lets the web process add up every process's values. Gauges
that describe Redis (queue depth, dead letters, journal depth, the rule-set
version) are read at scrape time.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.runtime.metrics_folder import MULTIPROCESS_ENV

_HOST = socket.gethostname()


def _process_identifier() -> str:
    """Names this process's files in the shared folder: host and pid, since containers sharing one
    folder (docker compose: web and scaled workers) all have small, equal pids.

    Called on every counter update (prometheus_client checks for a fork each time): the host is
    read once, since `gethostname` hands the GIL over, which cost the receiver ~10 µs per call.
    """
    return f"{_HOST}_{os.getpid()}"


if os.environ.get(MULTIPROCESS_ENV):
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)

EVENTS_RECEIVED = Counter("hana_rules_events_received_total", "Events answered by the receiver.", ["type", "outcome"])
RECEIVE_SECONDS = Histogram(
    "hana_rules_receive_seconds", "Time to answer Hana.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip
RULE_MATCHES = Counter("hana_rules_rule_matches_total", "Rules matched by processed events.", ["rule"])
ACTIONS = Counter("hana_rules_actions_total", "Action runs by outcome.", ["kind", "outcome"])
RETRIES = Counter("hana_rules_retries_total", "Action retries scheduled.", ["kind"])
RELOADS = Counter("hana_rules_reloads_total", "Rule reloads by outcome.", ["outcome"])
HELD = Counter("hana_rules_loop_guard_holds_total", "Rules held by the loop guard.", ["rule"])
ECHOES = Counter("hana_rules_echoes_total", "Update events recognised as echoes of our own updates.")
RESCUES = Counter("hana_rules_action_rescues_total", "Open actions the sweeper moved on (lease expired, job gone).",
                  ["outcome"])  # fmt: skip
EVENTS_MISSING = Counter("hana_rules_events_missing_total",
                         "Queued events whose record was gone when their turn came (skipped, noted on the next).")
TRIMMED = Counter("hana_rules_events_trimmed_total", "Finished events removed, by reason.", ["reason"])


class RedisGauges(Collector):
    """Gauges computed from Redis at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = self.read()
        depth = GaugeMetricFamily("hana_rules_queue_depth", "Jobs waiting, per queue.", labels=["queue"])
        for queue, count in values["queues"].items():
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily("hana_rules_dead_letters", "Actions that failed for good.", value=values["dead"])
        yield GaugeMetricFamily("hana_rules_parked_applications", "Applications whose Hana token was refused.",
                                value=values["parked"])  # fmt: skip
        yield GaugeMetricFamily("hana_rules_journal_depth", "Events waiting in this machine's journal.",
                                value=values["journal"])  # fmt: skip
        yield GaugeMetricFamily("hana_rules_entities_waiting", "Leads/opportunities with events waiting.",
                                value=values["entities"])  # fmt: skip
        yield GaugeMetricFamily("hana_rules_actions_open", "Actions pending, running, waiting to retry or delayed.",
                                value=values["open_actions"])  # fmt: skip
        memory = GaugeMetricFamily("hana_rules_redis_memory_bytes", "Redis memory: used, and maxmemory (0: no limit).",
                                   labels=["kind"])  # fmt: skip
        memory.add_metric(["used"], values["memory_used"])
        memory.add_metric(["max"], values["memory_max"])
        yield memory
        info = GaugeMetricFamily("hana_rules_ruleset_info", "The running rule set.", labels=["version"])
        info.add_metric([values["version"]], 1)
        yield info


def exposition(extra: Collector) -> tuple[bytes, str]:
    """The /metrics page: every process's counters (multiprocess mode) plus the Redis gauges."""
    if os.environ.get(MULTIPROCESS_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the default registry's own collectors
            registry.register(collector)
    registry.register(extra)
    return generate_latest(registry), CONTENT_TYPE_LATEST
