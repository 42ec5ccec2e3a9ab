"""The admin API's side for changing rules (SPEC §10 page 7): rule files, save, history, rollback.

Nested in the admin blueprint, so the same Bearer token guards it. Views parse and
call one function of `engine.runtime.rule_files` or `engine.runtime.history`; every
refusal is an answer that says what to do (400, 403, 404, 409, 422, 503), never a 500.
`console.read_only` refuses save and rollback (403); reload stays allowed, since it
publishes files that are managed elsewhere, which is what read-only is for.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from engine.errors import HanaRulesError
from engine.rules.errors import RuleSetError
from engine.runtime import history, rule_files
from engine.runtime.file_lock import RulesBusy
from engine.runtime.history import Source
from engine.runtime.loading import RuleRegistry
from engine.web.errors import error

blueprint = Blueprint("rule_files", __name__)
#: Who may say where a publish through the API came from: the API itself, or the CLI that calls it.
API_SOURCES = (Source.API, Source.CLI)
_STATUS: tuple[tuple[type[HanaRulesError], int], ...] = (
    (rule_files.RefusedPath, 400), (rule_files.RefusedText, 400), (rule_files.ReadOnly, 403),
    (rule_files.UnknownVersion, 404), (rule_files.Conflict, 409), (RulesBusy, 503), (rule_files.WriteFailed, 503),
)  # fmt: skip


def _registry() -> RuleRegistry:
    return current_app.extensions["hana_rules.registry"]


def _json_body() -> dict[str, Any]:
    """The request's JSON object; ValueError with the sentence to answer (400) for anything else."""
    try:
        body = json.loads(request.get_data() or b"{}")
    except (ValueError, RecursionError) as exc:
        raise ValueError("the body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def published_by(body: dict[str, Any]) -> tuple[Source, str]:
    """The `source` (api, or cli for the CLI) and `message` a publish through the API is recorded with."""
    source = body.get("source", Source.API.value)
    if source not in [s.value for s in API_SOURCES]:
        raise ValueError(f"source must be one of {', '.join(s.value for s in API_SOURCES)}")
    message = body.get("message")
    if message is None:
        message = ""
    if not isinstance(message, str) or len(message) > history.MAX_MESSAGE:
        raise ValueError(f"message must be a text of at most {history.MAX_MESSAGE} characters")
    return Source(source), message


def refusal(exc: HanaRulesError) -> tuple[Response, int]:
    """A refused save or rollback as its answer: the status, the sentence, and what the caller needs to act."""
    if isinstance(exc, RuleSetError):
        return error(422, f"{len(exc.errors)} error(s); nothing was written and the running rule set stays",
                     errors=[e.as_json() for e in exc.errors])  # fmt: skip
    if isinstance(exc, rule_files.Conflict):
        return error(409, str(exc), disk=exc.disk, submitted=exc.submitted)
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)
    return error(status, str(exc))


@blueprint.get("/rules/files")
def list_rule_files() -> tuple[Response, int]:
    """Every rule file with its exact text and sha256: what the editor opens (and sends back as `expected`)."""
    settings = _registry().settings
    files = [found.as_json() for found in rule_files.list_files(settings.rules_dir)]
    return jsonify({"files": files, "read_only": settings.console.read_only}), 200


@blueprint.put("/rules/files/<path:name>")
def save_rule_file(name: str) -> tuple[Response, int]:
    """`{text, expected, message}`: save exactly `text` if the file is still what the editor opened, then publish."""
    try:
        body = _json_body()
        text, expected = body.get("text"), body.get("expected")
        if not isinstance(text, str):
            raise ValueError("text must be the whole file, as a string")
        if expected is not None and not isinstance(expected, str):
            raise ValueError("expected must be the text (or sha256) of the file as it was opened, or null for a "
                             "new file")  # fmt: skip
        _, message = published_by({"message": body.get("message")})
    except ValueError as exc:
        return error(400, str(exc))
    try:
        saved = rule_files.save(_registry(), name, text, expected=expected, message=message, source=Source.API)
    except HanaRulesError as exc:
        return refusal(exc)
    return jsonify(saved.as_json()), 200


@blueprint.get("/history")
def list_history() -> tuple[Response, int]:
    """Published versions, newest first, each with the files it changed and its +/- line counts."""
    try:
        limit = int(request.args.get("limit", history.LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= history.LIMIT:
        return error(400, f"limit must be a whole number from 1 to {history.LIMIT}")
    summaries = history.versions(_registry().connection, limit)
    running = _registry().current().version
    return jsonify({"running": running, "versions": [summary.as_json() for summary in summaries]}), 200


@blueprint.get("/history/<version>")
def show_version(version: str) -> tuple[Response, int]:
    """One version: its files' text and its diff against the version before it."""
    found = history.version(_registry().connection, version)
    if found is None:
        return error(404, f"no version {version!r} in the history (the last {history.LIMIT} are kept)")
    return jsonify(found.as_json()), 200


@blueprint.post("/rollback")
def roll_back() -> tuple[Response, int]:
    """`{version, message}`: write that version's files, validate, publish; recorded as a rollback."""
    try:
        body = _json_body()
        version_id = body.get("version")
        if not isinstance(version_id, str) or not version_id:
            raise ValueError("version must be the id of a version in the history (see GET /admin/history)")
        source, message = published_by(body)
    except ValueError as exc:
        return error(400, str(exc))
    try:
        result = rule_files.rollback(_registry(), version_id, message=message, source=source)
    except HanaRulesError as exc:
        return refusal(exc)
    return jsonify(result.as_json()), 200
