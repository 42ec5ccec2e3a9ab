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
from redis.sentinel import Sentinel

from engine.config import RedisSentinel


def receiver_client(target: str | RedisSentinel) -> redis.Redis:
    """For the web hot path: fail fast so the journal can take over well inside Hana's 5 s."""
    return _client(target, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0),
                   health_check_interval=0)  # fmt: skip


def worker_client(target: str | RedisSentinel) -> redis.Redis:
    """For workers and admin work: patient, with redis-py's default retries."""
    return _client(target, socket_connect_timeout=5.0, socket_timeout=30.0)


def _client(target: str | RedisSentinel, **options: Any) -> redis.Redis:
    """A URL (`redis://`, `rediss://` for TLS, with its query options), or Sentinel: a client of the
    current master, which asks the sentinels again when its connection fails (a failover)."""
    if isinstance(target, str):
        return redis.Redis.from_url(target, **options)
    sentinel_options = {"socket_connect_timeout": options["socket_connect_timeout"],
                        "socket_timeout": options["socket_timeout"], "ssl": target.tls}  # fmt: skip
    if target.sentinel_password:
        sentinel_options["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_options, ssl=target.tls)
    return sentinel.master_for(target.master, password=target.password, **options)


def describe(target: str | RedisSentinel | None) -> str | None:
    """Where Redis is, for runtime.json and logs: a URL without its password, or the Sentinel setup."""
    if isinstance(target, RedisSentinel):
        nodes = ",".join(f"{host}:{port}" for host, port in target.nodes)
        return f"redis+sentinel://{nodes}/{target.master}"
    if target and "@" in target:
        scheme, _, rest = target.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"
    return target


def replicated(target: str | RedisSentinel | None) -> bool:
    """Whether writes go to a master with replicas that a failover may promote (Sentinel)."""
    return isinstance(target, RedisSentinel)


class ReplicaCount:
    """How many replicas the master has online, looked at most once a second.

    Waiting for a replica (WAIT) only makes sense when one is there: a master whose replicas
    are all gone cannot be failed over from (a new replica copies it whole when it joins).
    """

    LOOK_SECONDS = 1.0

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._count = 0
        self._looked = -self.LOOK_SECONDS

    def online(self) -> int:
        now = time.monotonic()
        if now - self._looked >= self.LOOK_SECONDS:
            self._looked = now
            try:
                self._count = int(self.client.info("replication").get("connected_slaves", 0))
            except redis.RedisError:
                self._count = 0
        return self._count


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
