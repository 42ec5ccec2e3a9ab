"""Liveness and readiness for process supervisors and load balancers."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, current_app, jsonify

from engine.runtime.action_state import DEAD_LETTERS, DUE_ACTIONS, PARKED_APPS
from engine.runtime.events import WAITING_QUEUES
from engine.runtime.metrics import RedisGauges, exposition
from engine.runtime.queues import ACTIONS_QUEUE, EVENTS_QUEUE, queue_key
from engine.runtime.retention import memory_of
from engine.web.errors import error

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@blueprint.get("/openapi.json")
def openapi() -> Response:
    from engine.web.openapi import DOCUMENT

    return jsonify(DOCUMENT)


@blueprint.get("/metrics")
def metrics() -> Response:
    connection: redis.Redis = current_app.extensions["hana_rules.redis"]
    journal = current_app.extensions["hana_rules.journal"]
    registry = current_app.extensions["hana_rules.registry"]

    def read() -> dict[str, object]:
        nan = float("nan")
        try:
            with connection.pipeline(transaction=False) as pipe:
                pipe.llen(queue_key(EVENTS_QUEUE)).llen(queue_key(ACTIONS_QUEUE))
                pipe.zcard(DEAD_LETTERS).scard(PARKED_APPS).zcard(WAITING_QUEUES).zcard(DUE_ACTIONS)
                events, actions, dead, parked, entities, open_actions = pipe.execute()
            memory = memory_of(connection)
            used, maximum = memory.used, memory.maximum
        except redis.RedisError:
            events = actions = dead = parked = entities = open_actions = used = maximum = nan
        return {"queues": {"events": events, "actions": actions}, "dead": dead, "parked": parked,
                "entities": entities, "open_actions": open_actions, "journal": journal.depth(),
                "version": registry.rule_set.version, "memory_used": used, "memory_max": maximum}  # fmt: skip

    body, content_type = exposition(RedisGauges(read))
    return Response(body, content_type=content_type)


@blueprint.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    connection: redis.Redis = current_app.extensions["hana_rules.redis"]
    journal = current_app.extensions["hana_rules.journal"]
    try:
        connection.ping()
        memory = memory_of(connection)
    except redis.RedisError:
        return error(
            503, "Redis is unreachable; events are kept in the local journal meanwhile", journal_depth=journal.depth()
        )
    if memory.full:
        return error(503, f"Redis is out of memory ({memory.describe()}); events are kept in the local journal, "
                          "and workers remove finished events, oldest first, until there is room",
                     journal_depth=journal.depth(), memory_used=memory.used, memory_max=memory.maximum)  # fmt: skip
    rule_set = current_app.extensions["hana_rules.registry"].current()
    rules = {"version": rule_set.version, "count": len(rule_set.rules), "loaded_at": rule_set.loaded_at}
    return jsonify({"status": "ready", "redis": "ok", "journal_depth": journal.depth(), "rules": rules,
                    "memory": {"used": memory.used, "max": memory.maximum, "pressed": memory.pressed}})
