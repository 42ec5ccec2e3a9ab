"""Sliding windows in Redis: rule throttles and the loop guard, holding across workers.

A sorted set of the events that ran, per window key. The same event asking
twice (processed again after a crash) is answered as the first time without
using a slot. The window is measured on Redis's clock (TIME inside the
script): workers on several machines share it, and one whose clock is a
minute off must neither free a slot early nor count one twice.
"""

from __future__ import annotations

import hashlib

import redis

_SLIDING_WINDOW = """
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""


class SlidingWindow:
    def __init__(self, connection: redis.Redis, prefix: str) -> None:
        self.prefix = prefix
        self._allow = connection.register_script(_SLIDING_WINDOW)

    def allow(self, name: str, *, per: float, limit: int, event_id: str) -> bool:
        """Whether `event_id` may run within `limit` runs per `per` seconds for `name`."""
        digest = hashlib.blake2b(name.encode(), digest_size=12).hexdigest()
        window_ms = max(int(per * 1000), 1)
        return bool(self._allow(keys=[f"{self.prefix}{digest}"], args=[window_ms, limit, event_id]))
