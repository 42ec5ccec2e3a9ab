"""The console's pages (SPEC §10): thin views over the read models the admin API uses.

Each view reads its arguments, calls one function of `engine.runtime.views` (or the stores)
and renders a template; the words are in the templates and `engine/sentences.py`.
"""

from __future__ import annotations

import json
import posixpath
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import Babel, get_locale
from flask_babel import gettext as _

from engine.clock import local_time
from engine.config import Settings
from engine.hana import EVENT_TYPES
from engine.redaction import redact
from engine.rules.explain import first_failure, fold_negations
from engine.runtime.events import EventStatus, EventStore
from engine.runtime.intake import ReplayRefused
from engine.runtime.views import EventFilter, list_events
from engine.sentences import LANGUAGES, TRANSLATIONS, describe, language_of, translations, value_text
from engine.web.console import access
from engine.web.console.problems import history_message, in_words, rule_problem

blueprint = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
                      static_folder="static", static_url_path="/static")  # fmt: skip

PAGE_SIZE = 50
#: The statuses an event in the list can have (a duplicate is counted on its original, not listed).
LISTED_STATUSES = [s.value for s in EventStatus if s is not EventStatus.DUPLICATE]
#: Past any number of events Redis can hold; a larger one would overflow Redis's integers.
MAX_OFFSET = 10**12
#: How many newer pages an events page remembers the way back to.
MAX_BACK = 50
#: Pages anyone may open: the login form, its assets, and the language switch.
OPEN_ENDPOINTS = frozenset({"console.login", "console.static", "console.language"})


def install(app: Any, settings: Settings) -> None:
    """Mount the console on the receiver's app."""
    access.configure(app, settings)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    app.config["BABEL_DEFAULT_LOCALE"] = "en"
    Babel(app, locale_selector=reader_language)
    from engine.web.console import editor, insight, operations, versions  # noqa: F401 - their routes join the blueprint

    app.register_blueprint(blueprint)


def reader_language() -> str:
    """The switch remembered in the session, else what the browser accepts, else English."""
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return chosen
    return language_of(request.accept_languages.best_match(LANGUAGES))


def _settings() -> Settings:
    return current_app.extensions["hana_rules.settings"]


def redis_connection() -> Any:
    return current_app.extensions["hana_rules.redis"]


def running_rules() -> Any:
    return current_app.extensions["hana_rules.registry"].current()


def secrets_now() -> frozenset[str]:
    return _settings().secrets | current_app.extensions["hana_rules.registry"].current().secrets


@blueprint.before_request
def guard() -> Response | None:
    if request.method == "POST" and not access.csrf_ok(request):
        return Response(render_template("refused.html", reason=_("This form has expired or did not come from this "
                                                                  "console. Go back, reload the page and try again.")),
                        status=403)  # fmt: skip
    if request.endpoint not in OPEN_ENDPOINTS and not access.logged_in():
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    return None


@blueprint.after_request
def headers(response: Response) -> Response:
    return access.secure(response)


@blueprint.app_context_processor
def template_helpers() -> dict[str, Any]:
    language = str(get_locale() or "en")
    words = translations(language)
    return {
        "csrf_token": access.csrf_token,
        "language": language,
        "sentence": lambda entry: describe(entry, language),
        "shown": lambda value: value_text(value, words),
        "pretty": lambda value: json.dumps(value, ensure_ascii=False, indent=2),
        "moment": moment,
        "moment_ms": lambda ms: moment(datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")),
        "status_words": status_words(),
        "type_words": type_words(),
        "logged_in": access.logged_in(),
        "in_words": in_words,
        "rule_words": rule_problem,
        "history_words": history_message,
        "source_words": source_words(),
    }


def source_words() -> dict[str, str]:
    """Where a published version came from (engine.runtime.history.Source), as the history says it."""
    return {
        "console": _("the console"), "cli": _("the command line"), "api": _("the admin API"),
        "file-watch": _("a file change"), "signal": _("a reload signal"), "boot": _("a start"),
        "rollback": _("a rollback"),
    }  # fmt: skip


def status_words() -> dict[str, str]:
    """The same word for a status on every page."""
    return {
        "received": _("waiting"), "processing": _("processing"), "done": _("done"), "failed": _("failed"),
        "quarantined": _("quarantined"), "pending": _("pending"), "running": _("sending"),
        "waiting": _("retrying"), "parked": _("parked"), "scheduled": _("scheduled"), "dropped": _("dropped"),
    }  # fmt: skip


def moment(iso: str | None) -> str:
    """2026-12-02T01:55:39.830Z → 2026-12-02 08:55:39 (UTC+7): on the readers' clock (console.timezone)."""
    return local_time(iso, _settings().console.timezone)


def type_words() -> dict[str, str]:
    """Each event type in words, Hana's `ticket.*` spellings included."""
    words = {
        "lead.created": _("New customer"), "lead.updated": _("Customer updated"),
        "lead.deleted": _("Customer deleted"), "opportunity.created": _("New opportunity"),
        "opportunity.updated": _("Opportunity updated"), "opportunity.deleted": _("Opportunity deleted"),
    }  # fmt: skip
    return {**{alias.replace("opportunity.", "ticket."): text for alias, text in words.items()}, **words}


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    settings = _settings()
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=target, failed=False)
    address = access.client_address(request)
    if access.too_many_failures(redis_connection(), address):
        message = _("Too many failed logins from your address. Wait 15 minutes and try again.")
        return render_template("login.html", next=target, failed=True, message=message), 429
    if not access.token_ok(settings, request.form.get("token", "")):
        access.count_failure(redis_connection(), address)
        message = _("That is not the admin token. It is printed by hana-rules serve and kept in the configuration.")
        return render_template("login.html", next=target, failed=True, message=message), 401
    language = session.get("lang")
    access.log_in()
    if language:
        session["lang"] = language
    return redirect(target)


def _safe_next(target: str | None) -> str:
    """Only a console path of this site, normalised: never an open redirect, never `/console/../x`."""
    if not target or any(ord(c) < 32 or c == "\\" for c in target):
        return url_for("console.overview")
    parts = urlsplit(target)
    path = posixpath.normpath(parts.path) if parts.path else ""
    if parts.scheme or parts.netloc or not path.startswith("/console/") and path != "/console":
        return url_for("console.overview")
    return path + (f"?{parts.query}" if parts.query else "")


@blueprint.post("/logout")
def logout() -> Response:
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language
    return redirect(url_for("console.login"))


@blueprint.post("/language")
def language() -> Response:
    chosen = request.form.get("lang")
    if chosen in LANGUAGES:
        session["lang"] = chosen
    return redirect(_safe_next(request.form.get("back")))


@blueprint.get("/")
def home() -> Response:
    return redirect(url_for("console.overview"))


@blueprint.get("/events")
def events() -> Any:
    try:
        wanted = EventFilter.from_arguments(request.args)
        problem = None
    except ValueError as exc:
        wanted, problem = EventFilter(), str(exc)
    try:
        offset = min(max(int(request.args.get("offset", 0)), 0), MAX_OFFSET)
    except ValueError:
        offset = 0
    page = list_events(redis_connection(), wanted, limit=PAGE_SIZE, offset=offset)
    rules = sorted(rule.id for rule in current_app.extensions["hana_rules.registry"].current().rules)
    return render_template("events.html", page=redact(page.rows, secrets_now()), filters=wanted, problem=problem,
                           scanned_all=page.scanned_all, paging=_paging(offset, page.next_offset),
                           event_types=EVENT_TYPES, statuses=LISTED_STATUSES, rules=rules,
                           applications=[app for app in _settings().applications if app.id])  # fmt: skip


def _paging(offset: int, next_offset: int | None) -> dict[str, Any]:
    """Links to the newest, newer and older pages, keeping the filters.

    A page starts at a position in the index the filter walks, not at a row count (a filter
    skips rows), so a newer page cannot be computed backwards: each older page's link carries
    the start of the pages before it (`back`, the last MAX_BACK of them).
    """
    back = [int(part) for part in request.args.get("back", "").split(",") if part.isdigit()][-MAX_BACK:]
    back = [min(position, offset) for position in back]
    arguments = {name: value for name, value in request.args.items() if name not in ("offset", "back")}

    def link(start: int, behind: list[int]) -> str:
        return url_for("console.events", **arguments, **({"offset": start} if start else {}),
                       **({"back": ",".join(map(str, behind))} if behind else {}))  # fmt: skip

    return {
        "number": len(back) + 1 if back or not offset else None,
        "newest": link(0, []) if offset else None,
        "newer": (link(back[-1], back[:-1]) if back else link(0, [])) if offset else None,
        "older": link(next_offset, [*back, offset][-MAX_BACK:]) if next_offset else None,
    }


@blueprint.get("/events/<event_id>")
def event(event_id: str) -> Any:
    stored = EventStore(redis_connection()).load(event_id)
    if stored is None:
        return _no_event(event_id)
    secrets = secrets_now()
    rules = stored.rule_results
    for rule in rules:
        conditions = rule.get("conditions") or []
        rule["reading"] = fold_negations(conditions)
        rule["blame"] = first_failure(conditions) if not rule.get("matched") else None
    records = current_app.extensions["hana_rules.actions"].for_event(event_id)
    actions = [record.shown(secrets) for record in records]
    delivered = {(action["rule"], action["index"]): action for action in actions}
    for rule in rules:
        for rendered in rule.get("actions") or []:
            if isinstance(rendered, dict):
                rendered["record"] = delivered.get((rule.get("id"), rendered.get("index")))
    story = {
        "id": stored.id, "type": stored.type, "received_at": stored.received_at, "status": stored.status.value,
        "application_id": stored.application_id, "entity_id": stored.entity_id, "reason": stored.reason,
        "warnings": list(stored.warnings), "echo": stored.document("echo") or False,
        "version": stored.text("version"), "error": stored.text("error"), "damaged": stored.damaged,
        "body": stored.shown_body, "context": stored.context, "rules": rules, "actions": actions,
        "matched": stored.document("matched") or [],
    }  # fmt: skip
    return render_template("event.html", event=redact(story, secrets), done=request.args.get("done"),
                           read_only=_settings().console.read_only,
                           running_ids={rule.id for rule in running_rules().rules})  # fmt: skip


def _no_event(event_id: str) -> tuple[str, int]:
    reason = _("There is no event %(id)s. Events are kept for the retention period.", id=event_id)
    return render_template("refused.html", reason=reason, title=_("Not found")), 404


@blueprint.post("/events/<event_id>/replay")
def replay(event_id: str) -> Any:
    stored = EventStore(redis_connection()).load(event_id)
    if stored is None:
        return _no_event(event_id)
    try:
        receipt = current_app.extensions["hana_rules.intake"].replay(stored)
    except ReplayRefused as exc:
        return render_template("refused.html", reason=str(exc), title=_("Refused")), 409
    return redirect(url_for("console.event", event_id=receipt.event_id))


def refusal(code: int) -> Response:
    """The console's 404, 405 and 500, as a page with the console's guards."""
    reasons = {
        404: (_("Not found"), _("There is nothing at this address.")),
        405: (_("Refused"), _("This page cannot be used that way. Go back and use its buttons.")),
        500: (_("Something went wrong"), _("The page could not be shown; the administrator can find why in the "
                                           "logs. Nothing was changed.")),
    }  # fmt: skip
    title, reason = reasons.get(code, reasons[500])
    return access.secure(Response(render_template("refused.html", reason=reason, title=title), status=code))
