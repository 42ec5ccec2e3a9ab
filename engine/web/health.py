"""Liveness and readiness for process supervisors and load balancers."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, current_app, jsonify

from engine.runtime.actions import DEAD_LETTERS, PARKED_APPS
from engine.runtime.events import WAITING_QUEUES
from engine.runtime.metrics import RedisGauges, exposition
from engine.runtime.queues import ACTIONS_QUEUE, EVENTS_QUEUE, queue_key
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
        try:
            with connection.pipeline(transaction=False) as pipe:
                pipe.llen(queue_key(EVENTS_QUEUE)).llen(queue_key(ACTIONS_QUEUE))
                pipe.zcard(DEAD_LETTERS).scard(PARKED_APPS).zcard(WAITING_QUEUES)
                events, actions, dead, parked, entities = pipe.execute()
        except redis.RedisError:
            events = actions = dead = parked = entities = float("nan")
        return {"queues": {"events": events, "actions": actions}, "dead": dead, "parked": parked,
                "entities": entities, "journal": journal.depth(), "version": registry.rule_set.version}  # fmt: skip

    body, content_type = exposition(RedisGauges(read))
    return Response(body, content_type=content_type)


@blueprint.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    connection: redis.Redis = current_app.extensions["hana_rules.redis"]
    journal = current_app.extensions["hana_rules.journal"]
    try:
        connection.ping()
    except redis.RedisError:
        return error(
            503, "Redis is unreachable; events are kept in the local journal meanwhile", journal_depth=journal.depth()
        )
    rule_set = current_app.extensions["hana_rules.registry"].current()
    rules = {"version": rule_set.version, "count": len(rule_set.rules), "loaded_at": rule_set.loaded_at}
    return jsonify({"status": "ready", "redis": "ok", "journal_depth": journal.depth(), "rules": rules})
