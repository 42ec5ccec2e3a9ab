"""`throttle: {key, per, limit}`: at most `limit` runs per `per` for each rendered key, across workers.

A sliding window in Redis (a sorted set of the events that ran), so it holds
however many workers share the Redis. The same event asking twice (processed
again after a crash) is answered as the first time, without using a slot.
"""

from __future__ import annotations

import hashlib
import time

import redis

_SLIDING_WINDOW = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""


class Throttle:
    def __init__(self, connection: redis.Redis) -> None:
        self._allow = connection.register_script(_SLIDING_WINDOW)

    def allow(self, rule_id: str, key: str, *, per: float, limit: int, event_id: str) -> bool:
        digest = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
        window_ms = max(int(per * 1000), 1)
        now_ms = time.time_ns() // 1_000_000
        return bool(self._allow(keys=[f"hr:throttle:{rule_id}:{digest}"], args=[now_ms, window_ms, limit, event_id]))
