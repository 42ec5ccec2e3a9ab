"""Redis clients with the timeouts each role needs."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def receiver_client(url: str) -> redis.Redis:
    """For the web hot path: fail fast so the journal can take over well inside Hana's 5 s."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def worker_client(url: str) -> redis.Redis:
    """For workers and admin work: patient, with redis-py's default retries."""
    return redis.Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=30.0)
