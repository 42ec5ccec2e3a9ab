"""Redis clients with the timeouts each role needs."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import NoScriptError
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


class ThreadConnections:
    """One Redis connection per thread, for the receiver's single script call per request.

    redis-py's pool vets every connection it lends (a pid check, a non-blocking read,
    locks and bookkeeping): about six system calls and a third of the receiver's Redis
    time on a small VM. A connection its thread owns needs none of that, except after
    a pause, when Redis may have closed it meanwhile: then it is checked the pool's way.
    A failed call drops the connection; the next one reconnects.
    """

    #: An idle connection older than this is checked before use (Redis restarts, idle timeouts).
    IDLE_CHECK_SECONDS = 1.0

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()

    def _connection(self) -> redis.Connection:
        connection: redis.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # Made outside the pool's count: a thread's connection closes when its thread ends
            # (the pool never gets it back), and a server with a thread per request would
            # otherwise exhaust the pool's 100 connections with dead threads' ones.
            connection = self._local.connection = self._pool.connection_class(**self._pool.connection_kwargs)
        elif time.monotonic() - self._local.used > self.IDLE_CHECK_SECONDS:
            try:
                stale = connection.can_read()  # data nobody asked for, or closed by Redis
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                stale = True
            if stale:
                connection.disconnect()  # the next command connects afresh
        return connection

    def execute(self, *command: Any) -> Any:
        connection = self._connection()
        try:
            connection.send_command(*command, check_health=False)
            reply = connection.read_response()
        except redis.ResponseError:
            raise  # an error reply read in full: the connection is still in step
        except BaseException:
            connection.disconnect()  # a reply may be half read: never reuse this socket
            raise
        finally:
            self._local.used = time.monotonic()
        return reply

    def run_script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA, loading the script first if this Redis does not know it yet (e.g. restarted)."""
        try:
            return self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.execute("SCRIPT", "LOAD", script.script)
            return self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
