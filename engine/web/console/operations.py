"""Console pages that act: dead letters and parked applications (each change behind a confirmation
page, as Django admin does, never a JavaScript confirm()), and the playground (nothing is sent)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _

from engine.hana import EVENT_TYPES, canonical_event_type
from engine.redaction import redact
from engine.rules.explain import first_failure, fold_negations
from engine.rules.testing import simulate
from engine.runtime.action_state import DamagedRecord
from engine.runtime.events import EventStore
from engine.web.console.pages import blueprint, redis_connection, running_rules, secrets_now

MAX_DEAD_LETTERS_SHOWN = 200


def _actions() -> Any:
    return current_app.extensions["hana_rules.actions"]


@blueprint.get("/failed")
def failed() -> Any:
    letters = _letters()
    return render_template("failed.html", letters=letters, groups=_groups(letters), done=request.args.get("done"),
                           group=request.args.get("group"))  # fmt: skip


def _letters() -> list[dict[str, Any]]:
    secrets = secrets_now()
    return [record.shown(secrets) for record in _actions().dead_letters(MAX_DEAD_LETTERS_SHOWN)]


def group_key(letter: dict[str, Any]) -> str:
    """Dead letters that failed alike: the same rule, kind, status and error (its first line, cut)."""
    error = (letter.get("error") or "").splitlines()[0][:120] if letter.get("error") else ""
    text = "\x1f".join((letter["rule"], letter["kind"], letter["status"], error))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _groups(letters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per kind of failure, biggest first: a hundred dead letters read as three lines."""
    groups: dict[str, dict[str, Any]] = {}
    for letter in letters:
        key = group_key(letter)
        first = {"key": key, "rule": letter["rule"], "kind": letter["kind"], "status": letter["status"],
                 "error": letter.get("error"), "ids": []}  # fmt: skip
        group = groups.setdefault(key, first)
        group["ids"].append(letter["id"])
    return sorted(groups.values(), key=lambda g: (-len(g["ids"]), g["rule"]))


def _group(key: str, verb: str) -> dict[str, Any] | None:
    """The group as listed now (not as it was shown), when the verb is one we do."""
    if verb not in ("retry", "delete"):
        return None
    return next((g for g in _groups(_letters()) if g["key"] == key), None)


def _gone_group() -> tuple[str, int]:
    reason = _("These failed actions are gone: they may have been retried or deleted.")
    return render_template("refused.html", reason=reason, title=_("Not found")), 404


@blueprint.get("/failed/group/<key>/<verb>")
def confirm_group(key: str, verb: str) -> Any:
    group = _group(key, verb)
    if group is None:
        return _gone_group()
    target = url_for("console.act_on_group", key=key, verb=verb)
    return render_template("confirm.html", verb=verb, count=len(group["ids"]), kind=group["kind"], rule=group["rule"],
                           error=group["error"], target=target)  # fmt: skip


@blueprint.post("/failed/group/<key>/<verb>")
def act_on_group(key: str, verb: str) -> Any:
    """Retry or delete every dead letter of one kind of failure."""
    group = _group(key, verb)
    if group is None:
        return _gone_group()
    for action_id in group["ids"]:
        if verb == "delete":
            _actions().purge(action_id)
            continue
        try:
            _actions().retry(action_id)
        except DamagedRecord:
            pass  # written half: it cannot be sent again, only deleted, and stays listed
    return redirect(url_for("console.failed", done="retried" if verb == "retry" else "deleted"))


def _no_letter(action_id: str) -> tuple[str, int]:
    reason = _("There is no failed action %(id)s any more: it may have been retried or deleted.", id=action_id)
    return render_template("refused.html", reason=reason, title=_("Not found")), 404


@blueprint.get("/failed/<action_id>/<verb>")
def confirm(action_id: str, verb: str) -> Any:
    """The page that asks before a retry or a delete: what will happen, in words, and one button."""
    if verb not in ("retry", "delete"):
        return render_template("refused.html", reason=_("Unknown action."), title=_("Not found")), 404
    record = _actions().load(action_id)
    if record is None or record.status not in ("failed", "parked"):
        return _no_letter(action_id)
    letter = record.shown(secrets_now())
    return render_template("confirm.html", verb=verb, count=1, kind=letter["kind"], rule=letter["rule"],
                           error=letter["error"], target=url_for(f"console.{verb}", action_id=action_id))  # fmt: skip


@blueprint.post("/failed/<action_id>/retry")
def retry(action_id: str) -> Any:
    try:
        resumed = _actions().retry(action_id)
    except DamagedRecord as exc:
        return render_template("refused.html", reason=str(exc), title=_("Refused")), 409
    if not resumed:
        return _no_letter(action_id)
    return redirect(url_for("console.failed", done="retried"))


@blueprint.post("/failed/<action_id>/delete")
def delete(action_id: str) -> Any:
    if not _actions().purge(action_id):
        return _no_letter(action_id)
    return redirect(url_for("console.failed", done="deleted"))


@blueprint.route("/playground", methods=["GET", "POST"])
def playground() -> Any:
    """A pasted body or a recent event, an optional previous state, the running rule set: verdicts
    and rendered actions, nothing sent (the admin API's simulate)."""
    form = {"event_type": "lead.created", "body": "", "previous": ""}
    if request.method == "GET" and request.args.get("event"):
        form = form_from_event(request.args["event"]) or form
    problem, rules = None, None
    if request.method == "POST":
        form = {name: request.form.get(name, "") for name in form}
        problem, rules = simulate_form(form, running_rules())
    return render_template("playground.html", form=form, problem=problem, rules=rules, event_types=EVENT_TYPES)


def form_from_event(event_id: str) -> dict[str, str] | None:
    """The playground's fields filled from a stored event: its type, its body, the state known before it."""
    stored = EventStore(redis_connection()).load(event_id)
    if stored is None:
        return None
    context = stored.context or {}
    entity = context.get("event", {}).get("entity")
    previous = (context.get("previous") or {}).get(entity) if entity else None
    secrets = secrets_now()  # the form is shown and may be saved as a test: no secret in it
    body = redact(stored.shown_body, secrets)
    previous = redact(previous, secrets)
    return {"event_type": stored.type,
            "body": json.dumps(body, ensure_ascii=False, indent=2) if isinstance(body, dict | list) else body,
            "previous": json.dumps({entity: previous}, ensure_ascii=False, indent=2) if previous else ""}  # fmt: skip


def simulate_form(form: dict[str, str], rule_set: Any) -> tuple[str | None, list[dict[str, Any]] | None]:
    """(a sentence saying what to fix, None) or (None, each listening rule's verdict, sentences and actions)."""
    event_type = canonical_event_type(form["event_type"])
    if event_type is None:
        return _("Choose the kind of event."), None
    try:
        body = json.loads(form["body"])
    except ValueError as exc:
        return _("The body is not JSON: %(error)s", error=str(exc)), None
    except RecursionError:
        return _("The body is nested too deeply to be one Hana sends."), None
    try:
        previous = json.loads(form["previous"]) if form["previous"].strip() else None
    except ValueError as exc:
        return _("The previous state is not JSON: %(error)s", error=str(exc)), None
    except RecursionError:
        return _("The body is nested too deeply to be one Hana sends."), None
    if not isinstance(body, dict) or (previous is not None and not isinstance(previous, dict)):
        return _("The body and the previous state must be JSON objects, as Hana sends them."), None
    secrets = secrets_now() | rule_set.secrets  # a draft's own ${NAME} values too
    evaluation = simulate(rule_set, event_type, body, previous, secrets=secrets).as_json()
    rules = []
    for rule in redact(evaluation["rules"], secrets):
        conditions = rule.get("conditions") or []
        rules.append({**rule, "reading": fold_negations(conditions),
                      "blame": None if rule.get("matched") else first_failure(conditions)})  # fmt: skip
    return None, rules
