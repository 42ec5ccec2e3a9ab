"""The admin API of SPEC §8: Bearer admin token on every endpoint, JSON in and out.

Views parse, authenticate and call one function; the work lives in the runtime.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request

from engine.config import Settings
from engine.hana import canonical_event_type, now_iso
from engine.redaction import redact
from engine.rules.errors import RuleSetError
from engine.rules.testing import simulate
from engine.runtime import dry_runs
from engine.runtime.action_state import ActionStore, DamagedRecord
from engine.runtime.drafts import (
    ChecksBusy,
    DraftPathError,
    ValidationResult,
    compile_draft_texts,
    files_from_body,
    one_check_at_a_time,
    validate_draft,
)
from engine.runtime.dry_run import DEFAULT_EVENTS, dry_run
from engine.runtime.events import EventStore, StoredEvent
from engine.runtime.fields import Catalogue, entity_name
from engine.runtime.file_lock import RulesBusy
from engine.runtime.intake import ReplayRefused
from engine.runtime.loading import RuleRegistry, load_rules
from engine.runtime.overview import rule_rows
from engine.runtime.views import EventFilter, list_events
from engine.sentences import LANGUAGES, describe, language_of
from engine.web.admin_rules import blueprint as rule_files_blueprint
from engine.web.admin_rules import published_by, refusal
from engine.web.errors import error

blueprint = Blueprint("admin", __name__, url_prefix="/admin")
blueprint.register_blueprint(rule_files_blueprint)  # rule files, history, rollback: behind the same token
MAX_LIMIT = 1000


def _settings() -> Settings:
    return current_app.extensions["hana_rules.settings"]


def _rules() -> RuleRegistry:
    return current_app.extensions["hana_rules.registry"]


def _events() -> EventStore:
    return current_app.extensions["hana_rules.intake"].store


def _actions() -> ActionStore:
    return current_app.extensions["hana_rules.actions"]


def _secrets() -> frozenset[str]:
    return _settings().secrets | _rules().rule_set.secrets


@blueprint.before_request
def authenticate() -> tuple[Response, int] | None:
    header = request.headers.get("Authorization", "")
    offered = header[7:].encode() if header.startswith("Bearer ") else b""
    expected = (_settings().admin_token or "").encode()
    if not expected or not hmac.compare_digest(offered, expected):
        return error(401, "missing or wrong admin token; send Authorization: Bearer <admin token>")
    return None


def catalogue_names(connection: Any) -> Any:
    """The attribute names events carried, for validation's warnings; None (no warnings) when Redis is away.

    Read at most every NAMES_FRESH_SECONDS per process: the editor asks at each pause in typing, and the
    names change when Hana sends a new attribute, not from one keystroke to the next.
    """
    now = time.monotonic()
    kept = _names_read.get(id(connection))
    if kept is not None and now - kept[0] < NAMES_FRESH_SECONDS:
        return kept[1]
    try:
        names = Catalogue(connection).seen()
    except redis.RedisError:
        return None
    if names:  # none yet: read again next time, so the first event's names count at once
        _names_read[id(connection)] = (now, names)
    return names


NAMES_FRESH_SECONDS = 5.0
_names_read: dict[int, tuple[float, Any]] = {}


def _body() -> dict[str, Any]:
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # JSON nested thousands deep: not a body any endpoint takes
        data = None
    return data if isinstance(data, dict) else {}


def _drafts_body() -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body and the drafts in it; ValueError with the sentence to answer (400), never a 500."""
    try:
        body = json.loads(request.get_data())
    except (ValueError, RecursionError) as exc:
        raise ValueError('the body must be JSON such as {"files": {"vip.yaml": "rules: …"}}') from exc
    files = files_from_body(body)
    return body, files


@blueprint.post("/validate")
def validate() -> tuple[Response, int]:
    """The editor's check as you type: the same loader, schema and compiler as reload (SPEC §10)."""
    try:
        _, files = _drafts_body()
    except ValueError as exc:
        return error(400, str(exc))
    try:
        with one_check_at_a_time():
            seen = catalogue_names(current_app.extensions["hana_rules.redis"])
            result = validate_draft(_settings(), files, seen=seen)
    except DraftPathError as exc:
        return error(400, str(exc))
    except ChecksBusy as exc:
        return error(429, str(exc))
    return jsonify(result.as_json()), 200


@blueprint.post("/dry-runs")
def start_dry_run() -> tuple[Response, int]:
    """Queue the draft against the last N stored events on the workers; the page polls its progress."""
    try:
        body, files = _drafts_body()
    except ValueError as exc:
        return error(400, str(exc))
    limit = body.get("events", dry_runs.DEFAULT_EVENTS)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= dry_runs.MAX_EVENTS:
        return error(400, f"events must be a whole number from 1 to {dry_runs.MAX_EVENTS}")
    try:
        candidate, texts = compile_draft_texts(_settings(), files)
    except DraftPathError as exc:
        return error(400, str(exc))
    except RuleSetError as exc:
        return error(400, f"{len(exc.errors)} error(s) in the draft; nothing was run",
                     errors=ValidationResult(tuple(exc.errors), None).as_json()["errors"])  # fmt: skip
    run_id = dry_runs.start(current_app.extensions["hana_rules.redis"], candidate, texts, drafts=sorted(files),
                            events=limit)  # fmt: skip
    return jsonify({"id": run_id, "status": dry_runs.DryRunStatus.QUEUED.value}), 202


@blueprint.get("/dry-runs/<run_id>")
def dry_run_progress(run_id: str) -> tuple[Response, int]:
    found = dry_runs.read(current_app.extensions["hana_rules.redis"], run_id)
    if found is None:
        return error(404, f"no dry run {run_id!r} (a dry run is kept for an hour)")
    return jsonify(found), 200


@blueprint.get("/fields")
def fields() -> tuple[Response, int]:
    """The attribute catalogue: every attribute name real events carried (SPEC §10, the editor's completion)."""
    entity = request.args.get("entity") or None
    if entity is not None and (entity := entity_name(entity)) is None:
        return error(400, "entity must be lead or opportunity (or ticket)")
    catalogue = Catalogue(current_app.extensions["hana_rules.redis"])
    listing = catalogue.listing(application=request.args.get("application") or None, entity=entity)
    return jsonify(redact(listing, _secrets())), 200


@blueprint.get("/rules")
def rules() -> Response:
    rule_set = _rules().current()
    rows = rule_rows(current_app.extensions["hana_rules.redis"], rule_set)
    return jsonify({"version": rule_set.version, "loaded_at": rule_set.loaded_at, "rules": rows})


@blueprint.post("/reload")
def reload() -> tuple[Response, int]:
    body = _body()
    limit = body.get("events", DEFAULT_EVENTS)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10 * DEFAULT_EVENTS:
        return error(400, f"events must be a whole number from 1 to {10 * DEFAULT_EVENTS}")
    try:
        source, message = published_by(body)  # recorded in the history (the CLI says `cli`)
    except ValueError as exc:
        return error(400, str(exc))
    try:
        if body.get("dry_run"):
            candidate = load_rules(_settings())
            return jsonify(dry_run(_rules().current(), candidate, _events(), limit=limit)), 200
        rule_set = _rules().publish_from_disk(source=source, message=message)
    except RulesBusy as exc:
        return refusal(exc)
    except RuleSetError as exc:
        return jsonify({"error": f"{len(exc.errors)} error(s); the running rule set stays",
                        "errors": [e.as_json() for e in exc.errors]}), 422  # fmt: skip
    return jsonify({"version": rule_set.version, "rules": len(rule_set.rules)}), 200


@blueprint.post("/simulate")
def simulate_event() -> tuple[Response, int]:
    body = _body()
    event_type = canonical_event_type(str(body.get("event_type", "")))
    if event_type is None:
        return error(400, "event_type must be one of lead.created … opportunity.deleted (or ticket.*)")
    if not isinstance(body.get("payload"), dict):
        return error(400, "payload must be the JSON object Hana sends")
    previous = body.get("previous")
    if previous is not None and not isinstance(previous, dict):
        return error(400, 'previous must be an object such as {"lead": {"attr": value}}')
    evaluation = simulate(_rules().current(), event_type, body["payload"], previous, secrets=_secrets()).as_json()
    evaluation["rules"] = with_sentences(evaluation["rules"], _language())
    return jsonify(redact(evaluation, _secrets())), 200


def _language() -> str:
    """`?lang=vi`, else the Accept-Language Hana's admin sends, else English."""
    return language_of(request.args.get("lang") or request.accept_languages.best_match(LANGUAGES))


def _summary(event: StoredEvent) -> dict[str, Any]:
    matched = event.document("matched")
    return {"id": event.id, "type": event.type, "received_at": event.received_at, "status": event.status.value,
            "matched": matched if isinstance(matched, list) else []}  # fmt: skip


@blueprint.get("/events")
def events() -> tuple[Response, int]:
    try:
        limit = int(request.args.get("limit", 100))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    try:
        wanted = EventFilter.from_arguments(request.args)
    except ValueError as exc:
        return error(400, str(exc))
    page = list_events(current_app.extensions["hana_rules.redis"], wanted, limit=limit)
    return jsonify({"events": page.rows}), 200


@blueprint.get("/events/<event_id>")
def event_detail(event_id: str) -> tuple[Response, int]:
    event = _events().load(event_id)
    if event is None:
        return error(404, f"no event {event_id!r} (events are kept for the retention period)")
    detail = {
        **_summary(event), "body": event.shown_body, "context": event.context, "warnings": list(event.warnings),
        "echo": event.document("echo") or False, "version": event.text("version"), "error": event.text("error"),
        "reason": event.reason, "duplicates": event.duplicates,
        "rules": with_sentences(event.rule_results, _language()),
        "actions": [_action_summary(r.shown(_secrets())) for r in _actions().for_event(event_id)],
    }  # fmt: skip
    if event.damaged:
        detail["damaged"] = event.damaged
    return jsonify(redact(detail, _secrets())), 200


def with_sentences(rules: list[dict[str, Any]], language: str) -> list[dict[str, Any]]:
    """Each condition gains `text`: its sentence in `language` (SPEC §10)."""
    return [{**rule, "conditions": [{**condition, "text": describe(condition, language).text}
                                    for condition in rule.get("conditions") or []]}
            for rule in rules if isinstance(rule, dict)]  # fmt: skip


def _action_summary(shown: dict[str, Any]) -> dict[str, Any]:
    keep = ("rule", "index", "kind", "status", "error", "attempts", "damaged")
    return {name: shown[name] for name in keep if name in shown}


@blueprint.post("/events/<event_id>/replay")
def replay(event_id: str) -> tuple[Response, int]:
    event = _events().load(event_id)
    if event is None:
        return error(404, f"no event {event_id!r}")
    try:
        receipt = current_app.extensions["hana_rules.intake"].replay(event)
    except ReplayRefused as exc:
        return error(409, str(exc))
    return jsonify({**receipt.as_json(), "replay_of": event_id, "at": now_iso()}), 200


@blueprint.get("/failed")
def failed() -> tuple[Response, int]:
    secrets = _secrets()
    return jsonify({"failed": [r.shown(secrets) for r in _actions().dead_letters(MAX_LIMIT)]}), 200


@blueprint.post("/failed/<action_id>/retry")
def retry_failed(action_id: str) -> tuple[Response, int]:
    try:
        retried = _actions().retry(action_id)
    except DamagedRecord as exc:
        return error(409, str(exc))
    if not retried:
        return error(404, f"no failed or parked action {action_id!r}")
    return jsonify({"status": "queued", "id": action_id, "actions": retried}), 200


@blueprint.delete("/failed/<action_id>")
def delete_failed(action_id: str) -> tuple[Response, int]:
    if not _actions().purge(action_id):
        return error(404, f"no failed or parked action {action_id!r}")
    return jsonify({"status": "deleted", "id": action_id}), 200
