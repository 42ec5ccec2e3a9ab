"""Echo memory (SPEC §6 Loops): what our own `hana_update`s wrote, so Hana's echo of it is recognised.

Our update makes Hana send an `*.updated` event back. For a few minutes we
remember, per lead/opportunity, the values we wrote; an update whose changes
are exactly those values (compared as Hana types them: a date as an instant, a
number as a number, an enum as a set) is an echo, and rules skip it.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from engine.hana import ENTITIES, same_written_value

WROTE_PREFIX = "hr:wrote:"
#: An update whose changes are exactly what we wrote this recently is an echo.
ECHO_WINDOW_SECONDS = 300


class EchoMemory:
    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def remember(self, application: str | None, body: dict[str, Any]) -> None:
        """`body`: the update API body as sent (values typed for Hana)."""
        with self.connection.pipeline() as pipe:
            for entity in ENTITIES:
                part = body.get(entity)
                if not part:
                    continue
                values = {name: json.dumps(value, ensure_ascii=False) for name, value in part.items() if name != "id"}
                if values:
                    key = f"{WROTE_PREFIX}{application or '-'}:{entity}:{part['id']}"
                    pipe.hset(key, mapping=values)
                    pipe.expire(key, ECHO_WINDOW_SECONDS)
            pipe.execute()

    def is_echo(self, entity_key: str, context: dict[str, Any]) -> bool:
        """True when every attribute this update changed holds what we wrote recently."""
        changes = context.get("changes") or []
        if not changes or context["event"]["type"].split(".")[1] != "updated":
            return False
        wrote = {k.decode(): json.loads(v) for k, v in self.connection.hgetall(WROTE_PREFIX + entity_key).items()}
        entity = context["event"]["entity"]
        current = context.get(entity) or {}
        raw = (context.get("raw") or {}).get(entity) or {}
        return all(
            name in wrote and same_written_value(name, wrote[name], current.get(name), raw.get(name, current.get(name)))
            for name in changes
        )
