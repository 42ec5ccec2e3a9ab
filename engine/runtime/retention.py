"""What leaves Redis, and when: finished events only, by age, by count, and when memory runs out.

An event is *finished* once it is done, failed or quarantined and none of its
actions is pending, running, waiting, scheduled or parked; the scripts that
end its last action put it in the finished index (`hr:finished`, scored by
when it finished). Retention (`retention`), the cap (`max_events`) and
memory pressure remove from that index only, oldest first, so an event
waiting in a backlog, or whose delay runs for days, is never removed,
whatever its age. Nothing here expires by itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from engine.runtime import lua
from engine.runtime.action_state import ACTION_PREFIX, DEAD_LETTERS, DUE_ACTIONS
from engine.runtime.events import EVENT_KEY_PREFIX, EVENTS_INDEX, FINISHED_EVENTS
from engine.runtime.fields import Catalogue
from engine.runtime.indexes import (
    ENTITY_INDEX_PREFIX,
    ENTITY_KEYS_PREFIX,
    INDEXED_FIELD,
    INDEXED_STATUSES,
    Sweep,
    status_index_key,
)
from engine.runtime.metrics import TRIMMED

log = logging.getLogger(__name__)

#: Past this share of `maxmemory`, finished events are removed early, oldest first: Redis
#: refuses writes at `maxmemory` (noeviction), and new events matter more than old stories.
MEMORY_PRESSURE = 0.9


@dataclass(frozen=True)
class Memory:
    used: int
    maximum: int  # 0: no maxmemory set

    @property
    def pressed(self) -> bool:
        return self.maximum > 0 and self.used >= self.maximum * MEMORY_PRESSURE

    @property
    def full(self) -> bool:
        """Redis refuses writes now (maxmemory reached with noeviction)."""
        return self.maximum > 0 and self.used >= self.maximum

    def describe(self) -> str:
        return f"{self.used / 2**20:.1f} MiB used of maxmemory {self.maximum / 2**20:.1f} MiB"


def memory_of(connection: redis.Redis) -> Memory:
    info = connection.info("memory")
    return Memory(used=int(info.get("used_memory", 0)), maximum=int(info.get("maxmemory", 0)))


class Retention:
    """Removes finished events; on each trim it also brings the console's indexes of quarantined events up to date."""

    def __init__(self, connection: redis.Redis, *, retention: float) -> None:
        self.connection = connection
        self.retention = retention
        source = lua.render("forget.lua", finished_index=FINISHED_EVENTS, event_prefix=EVENT_KEY_PREFIX,
                            action_prefix=ACTION_PREFIX, dead_letters=DEAD_LETTERS, due_index=DUE_ACTIONS,
                            events_index=EVENTS_INDEX, indexed_field=INDEXED_FIELD,
                            entity_index_prefix=ENTITY_INDEX_PREFIX, entity_keys_prefix=ENTITY_KEYS_PREFIX)  # fmt: skip
        self._forget = connection.register_script(source)
        self.sweep = Sweep(connection)
        self.catalogue = Catalogue(connection)

    def forget(self, event_ids: list[str]) -> int:
        """Remove these events if they are finished; how many were."""
        return int(self._forget(keys=[], args=event_ids)) if event_ids else 0

    def _now_ms(self) -> int:
        seconds, microseconds = self.connection.time()
        return seconds * 1000 + microseconds // 1000

    def trim(self, *, max_events: int, batch: int = 500) -> int:
        """Retention and the cap, on finished events only; how many events left."""
        now_ms = self._now_ms()
        removed_by_age = removed_by_count = 0
        while ids := self._members(self.connection.zrangebyscore(
                FINISHED_EVENTS, "-inf", now_ms - self.retention * 1000, 0, batch)):  # fmt: skip
            removed_by_age += self.forget(ids)
        overflow = int(self.connection.zcard(EVENTS_INDEX)) - max_events
        while overflow > 0:
            count = self.forget(self._members(self.connection.zrange(FINISHED_EVENTS, 0, min(overflow, batch) - 1)))
            if count == 0:
                break  # every event left is still unfinished: none may go
            removed_by_count += count
            overflow -= count
        TRIMMED.labels("retention").inc(removed_by_age)
        TRIMMED.labels("max_events").inc(removed_by_count)
        if removed_by_age or removed_by_count:
            log.info("retention: %d finished event(s) past retention and %d past max_events removed",
                     removed_by_age, removed_by_count)  # fmt: skip
        removed = removed_by_age + removed_by_count + self._drop_dangling(now_ms, batch)
        self.catalogue.forget_before(now_ms - self.retention * 1000)  # names not seen within the retention
        self._index_quarantined()
        return removed

    def _index_quarantined(self) -> None:
        """The console's indexes of what no worker commits, with the rest of the events' upkeep (indexes.py).

        Last, and on its own: retention frees memory whatever happens here, and near `maxmemory`
        Redis refuses the sweep's writes (it catches up on the next run).
        """
        try:
            self.sweep.run()
        except redis.OutOfMemoryError as exc:
            log.warning("console indexes: quarantined events not indexed this time (%s)", exc)

    def _drop_dangling(self, now_ms: int, batch: int) -> int:
        """Index entries past retention whose event is gone (deleted by hand, expired by an older version)."""
        cutoff_us = (now_ms - self.retention * 1000) * 1000
        old = self._members(self.connection.zrangebyscore(EVENTS_INDEX, "-inf", cutoff_us, 0, batch))
        if not old:
            return 0
        with self.connection.pipeline(transaction=False) as pipe:
            for event_id in old:
                pipe.exists(f"{EVENT_KEY_PREFIX}{event_id}")
            gone = [event_id for event_id, exists in zip(old, pipe.execute(), strict=True) if not exists]
        if gone:
            # Its entity and rule indexes are named only by its hash, gone too: the views skip those ids.
            with self.connection.pipeline(transaction=False) as pipe:
                for index in (EVENTS_INDEX, *map(status_index_key, INDEXED_STATUSES)):
                    pipe.zrem(index, *gone)
                pipe.execute()
        return len(gone)

    def make_room(self, *, batch: int = 200) -> int:
        """Near `maxmemory`, remove finished events oldest first until Redis has room again."""
        memory = memory_of(self.connection)
        removed = 0
        while memory.pressed:
            ids = self._members(self.connection.zrange(FINISHED_EVENTS, 0, batch - 1))
            if not ids:
                log.error("Redis memory: %s, and no finished event is left to remove; raise maxmemory, or let the "
                          "workers catch up", memory.describe())  # fmt: skip
                break
            removed += self.forget(ids)
            memory = memory_of(self.connection)
        if removed:
            TRIMMED.labels("memory").inc(removed)
            log.warning("Redis memory: %d finished event(s) removed early to make room (now %s)", removed,
                        memory.describe())  # fmt: skip
        return removed

    @staticmethod
    def _members(raw: list[bytes]) -> list[str]:
        return [member.decode() for member in raw]
