"""`POST /hooks/<event_type>`: the receiver Hana calls. SPEC §4 is its contract."""

from __future__ import annotations

import functools
import time

import orjson
from flask import Blueprint, Request, Response, current_app, request

from engine.hana import EVENT_TYPES, canonical_event_type
from engine.runtime.intake import MAX_BODY_BYTES, Intake, JournalUnavailable
from engine.runtime.metrics import EVENTS_RECEIVED, RECEIVE_SECONDS
from engine.web.errors import error

blueprint = Blueprint("hooks", __name__)

#: One counter per (type, outcome), both from short fixed lists: looked up once, not per request.
_events_received = functools.cache(EVENTS_RECEIVED.labels)


@blueprint.post("/hooks/<event_type>")
def receive(event_type: str) -> tuple[Response, int]:
    started = time.perf_counter()
    answer, status, outcome = _receive(event_type, request._get_current_object())  # one proxy lookup, not five
    _events_received(canonical_event_type(event_type) or "unknown", outcome).inc()
    RECEIVE_SECONDS.observe(time.perf_counter() - started)
    return answer, status


def _receive(event_type: str, request: Request) -> tuple[Response, int, str]:
    """(answer, status, outcome for the metrics): accepted, duplicate, quarantined, or the status code."""
    intake: Intake = current_app.extensions["hana_rules.intake"]
    token = request.headers.get("X-Webhook-Token") or request.args.get("token")
    application = intake.authenticate(token)
    if application is None:
        return (*error(401, "missing or wrong webhook token; use the URL printed by `hana-rules serve`"), "401")
    canonical = canonical_event_type(event_type)
    if canonical is None:
        valid = list(EVENT_TYPES) + [t.replace("opportunity", "ticket") for t in EVENT_TYPES[3:]]
        return (*error(404, f"unknown event type {event_type[:64]!r}", valid=valid), "404")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return (*error(413, "the body is larger than 1 MiB"), "413")
    # A chunked body has no length up front. Werkzeug stops such a stream at MAX_CONTENT_LENGTH
    # (one byte past our limit) without an error, so reading that extra byte is how we tell.
    body = request.get_data(cache=False)
    if len(body) > MAX_BODY_BYTES:
        return (*error(413, "the body is larger than 1 MiB"), "413")
    try:
        receipt = intake.receive(canonical, body, application)
    except JournalUnavailable:
        return (*error(503, "the event could not be stored (Redis and the local journal both failed); retry"), "503")
    # The hot path's answer: orjson straight into a Response, without Flask's JSON provider.
    return Response(orjson.dumps(receipt.as_json()), mimetype="application/json"), 200, receipt.outcome.value
