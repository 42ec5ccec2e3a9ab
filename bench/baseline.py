"""The baseline every worker benchmark is set beside: how fast the same workers drain no-op RQ jobs."""

from __future__ import annotations

import time

import redis
from rq import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer


def drain_noop(client: redis.Redis, count: int, *, timeout: float = 300) -> float:
    """Enqueue `count` jobs of `os.getpid` and return how many per second the running workers finished."""
    queue = Queue("events", connection=client, serializer=JSONSerializer)
    registry = StartedJobRegistry(queue=queue)
    started = time.perf_counter()
    with client.pipeline() as pipe:
        for _ in range(count):
            queue.enqueue("os.getpid", result_ttl=0, pipeline=pipe)
        pipe.execute()
    deadline = time.monotonic() + timeout
    while client.llen("rq:queue:events") or registry.count:
        if time.monotonic() > deadline:
            raise SystemExit("the workers did not drain the no-op jobs in time")
        time.sleep(0.01)
    return count / (time.perf_counter() - started)
