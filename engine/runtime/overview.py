"""What the console's overview and rules pages show, read from Redis in a few round trips.

The chart counts events per 10 minutes over the last 24 h with one ZCOUNT per bucket on
the events index (scored by receive time), pipelined: 144 cheap commands per series,
whatever the number of events stored (per minute, 4,320 of them cost 55 ms at 100,000
events: bench/console.py). Failed and quarantined events are counted from their status
index when the worker keeps one (views/indexes), so the chart shows them without reading
a single event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Worker

from engine.hana import iso_from_microseconds
from engine.rules.ruleset import RuleSet
from engine.runtime.action_state import DEAD_LETTERS, DUE_ACTIONS, FAILURE_COUNTS, PARKED_APPS, PARKED_PREFIX
from engine.runtime.events import DUPLICATES_INDEX, EVENTS_INDEX
from engine.runtime.indexes import matched_index_key, status_index_key
from engine.runtime.jobs import MATCH_COUNTS
from engine.runtime.queues import ACTIONS_QUEUE, EVENTS_QUEUE, queue_key
from engine.runtime.retention import memory_of

BUCKET_MS = 10 * 60_000
BUCKETS = 24 * 6  # 24 h of 10-minute buckets
#: Statuses charted as the troubled part of the received bar.
CHARTED_STATUSES = ("failed", "quarantined")


@dataclass
class Overview:
    per_bucket: list[int]  # events received in each of the last 144 ten-minute buckets, oldest first
    per_bucket_by_status: dict[str, list[int]]
    duplicates_per_bucket: list[int]  # Hana's retries, not among the received (they were not processed)
    first_bucket_ms: int  # the start of the first bucket, Unix ms
    queues: dict[str, int]
    dead_letters: int
    parked_applications: list[dict[str, Any]]
    open_actions: int
    workers: int
    memory_used: int | None
    memory_max: int | None
    top_rules: list[tuple[str, int]] = field(default_factory=list)
    failed_rules: list[tuple[str, int]] = field(default_factory=list)

    @property
    def received_24h(self) -> int:
        return sum(self.per_bucket)

    @property
    def duplicates_24h(self) -> int:
        return sum(self.duplicates_per_bucket)


def read_overview(connection: redis.Redis, rule_set: RuleSet, *, now_ms: int | None = None) -> Overview:
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    first = (now_ms // BUCKET_MS - BUCKETS + 1) * BUCKET_MS
    with connection.pipeline(transaction=False) as pipe:
        for key in (EVENTS_INDEX, *(status_index_key(status) for status in CHARTED_STATUSES), DUPLICATES_INDEX):
            for bucket in range(BUCKETS):
                start_us = (first + bucket * BUCKET_MS) * 1000
                pipe.zcount(key, start_us, f"({start_us + BUCKET_MS * 1000}")
        counts = pipe.execute()
    with connection.pipeline(transaction=False) as pipe:
        pipe.llen(queue_key(EVENTS_QUEUE)).llen(queue_key(ACTIONS_QUEUE)).zcard(DEAD_LETTERS)
        pipe.smembers(PARKED_APPS).zcard(DUE_ACTIONS).hgetall(MATCH_COUNTS).hgetall(FAILURE_COUNTS)
        events_queue, actions_queue, dead, parked, open_actions, matched, failed = pipe.execute()
    parked_apps = sorted(member.decode() for member in parked)
    with connection.pipeline(transaction=False) as pipe:
        for application in parked_apps:
            pipe.scard(PARKED_PREFIX + application)
        parked_counts = pipe.execute() if parked_apps else []
    try:
        memory = memory_of(connection)
        used, maximum = memory.used, memory.maximum
    except redis.RedisError:
        used = maximum = None
    known = {rule.id for rule in rule_set.rules}
    return Overview(
        per_bucket=counts[:BUCKETS],
        per_bucket_by_status={status: counts[BUCKETS * (i + 1):BUCKETS * (i + 2)]
                              for i, status in enumerate(CHARTED_STATUSES)},
        duplicates_per_bucket=counts[-BUCKETS:],
        first_bucket_ms=first,
        queues={"events": int(events_queue), "actions": int(actions_queue)},
        dead_letters=int(dead),
        parked_applications=[{"id": app, "actions": int(n)} for app, n in zip(parked_apps, parked_counts, strict=True)],
        open_actions=int(open_actions),
        workers=Worker.count(connection=connection),
        memory_used=used, memory_max=maximum,
        top_rules=_top(matched, known), failed_rules=_top(failed, known),
    )  # fmt: skip


def _top(counts: dict[bytes, bytes], known: set[str], limit: int = 8) -> list[tuple[str, int]]:
    pairs = [(rule.decode(), int(count)) for rule, count in counts.items() if rule.decode() in known and int(count)]
    return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))[:limit]


def rule_rows(connection: redis.Redis, rule_set: RuleSet) -> list[dict[str, Any]]:
    """GET /admin/rules and the console's rules list: each rule with its matched and failed counts, and
    when it last matched (from its index: matches before indexing began are not dated)."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.hgetall(MATCH_COUNTS).hgetall(FAILURE_COUNTS)
        for rule in rule_set.rules:  # the newest event each rule matched: one index read each
            pipe.zrevrange(matched_index_key(rule.id), 0, 0, withscores=True)
        matched_raw, failed_raw, *newest = pipe.execute()
    matched = {k.decode(): int(v) for k, v in matched_raw.items()}
    failed = {k.decode(): int(v) for k, v in failed_raw.items()}
    return [{**rule.summary(), "matched": matched.get(rule.id, 0), "failed": failed.get(rule.id, 0),
             "applications": sorted(rule.applications) if rule.applications else None,
             "last_matched": iso_from_microseconds(int(last[0][1])) if last else None}
            for rule, last in zip(rule_set.rules, newest, strict=True)]  # fmt: skip


CHART_WIDTH, CHART_HEIGHT = 720, 120


def chart_bars(overview: Overview) -> list[dict[str, Any]]:
    """The chart's bars as SVG rectangles, one per 10 minutes: what was received, with the part that
    failed or was quarantined at its foot and Hana's retries (duplicates) stacked on top. Drawn on
    the server, so the overview needs no chart library and renders without JavaScript."""
    received = overview.per_bucket
    troubled = [sum(parts) for parts in zip(*overview.per_bucket_by_status.values(), strict=True)] or [0] * BUCKETS
    duplicates = overview.duplicates_per_bucket
    top = max(r + d for r, d in zip(received, duplicates, strict=True)) or 1
    step = CHART_WIDTH / len(received)
    bars = []
    for i, (total, bad, again) in enumerate(zip(received, troubled, duplicates, strict=True)):
        height = total / top * CHART_HEIGHT
        bad_height = min(bad, total) / top * CHART_HEIGHT
        again_height = again / top * CHART_HEIGHT
        bars.append({"x": round(i * step, 2), "width": round(max(step - 1, 1), 2), "y": round(CHART_HEIGHT - height, 2),
                     "height": round(height, 2), "bad_y": round(CHART_HEIGHT - bad_height, 2),
                     "bad_height": round(bad_height, 2), "count": total, "bad": bad, "duplicates": again,
                     "duplicates_y": round(CHART_HEIGHT - height - again_height, 2),
                     "duplicates_height": round(again_height, 2),
                     "start_ms": overview.first_bucket_ms + i * BUCKET_MS})  # fmt: skip
    return bars
