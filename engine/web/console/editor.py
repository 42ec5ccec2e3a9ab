"""The rule editor (SPEC §10 page 7): open a file, check, compare, try and dry-run the draft, save.

Every button posts the whole form, so the page works as a plain textarea without
JavaScript; editor.js adds CodeMirror, errors underlined as you type (`validate`) and
completion (`vocabulary`). The work is the runtime's: drafts.py compiles a draft with the
rest of the set from disk (the loader, schema and compiler of reload), rule_files.py
saves (atomic, refused when the file changed since it was opened, published as reload
does, recorded in the history), dry_runs.py replays history on a worker.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from flask import Response, current_app, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext

from engine.redaction import redact
from engine.rules.diffs import diff_files
from engine.rules.errors import RuleError, RuleSetError
from engine.rules.loader import display_name
from engine.rules.starters import starter, starters
from engine.rules.testing import run_rule_tests
from engine.rules.vocabulary import vocabulary as rule_words
from engine.runtime import drafts, dry_runs, history, rule_files
from engine.runtime.fields import Catalogue
from engine.runtime.views import EventFilter, list_events
from engine.web.admin import catalogue_names
from engine.web.console.operations import form_from_event, simulate_form
from engine.web.console.pages import _settings, blueprint, redis_connection, refusal, running_rules, secrets_now
from engine.web.console.problems import rule_problem

RECENT_EVENTS_OFFERED = 20
#: A rule's `id:` line in a starter: made unique against the running set when the starter is opened.
STARTER_ID = re.compile(r"^(\s*-\s+id:\s*)([\w.-]+)", re.MULTILINE)
DRY_RUN_SIZES = (100, 1000, 5000, 10_000)
#: Past this many characters a draft is checked when asked (Check), not at each pause: compiling it would
#: hold one of the receiver's threads for seconds (a 2,500-rule file took 21 s).
LONGEST_CHECKED_AS_YOU_TYPE = 200_000


def _registry() -> Any:
    return current_app.extensions["hana_rules.registry"]


def read_only() -> bool:
    return bool(_settings().console.read_only)


def managed_elsewhere() -> Response:
    """What every write answers when `console.read_only` is on (SPEC §10)."""
    return Response(render_template("refused.html", title=_("Rules are managed elsewhere"), reason=_(
        "Rules are managed elsewhere (console.read_only is on): change the files where they are kept and run "
        "hana-rules reload.")), status=403)  # fmt: skip


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@blueprint.get("/editor")
def editor_home() -> Any:
    return render_template("editor_home.html", files=rule_files.list_files(_settings().rules_dir),
                           starters=starters(), read_only=read_only())  # fmt: skip


@blueprint.get("/editor/new")
def editor_new() -> Any:
    """A new file, from a starter or empty; its name is typed on the page."""
    chosen = starter(request.args.get("starter", ""))
    taken = {path.name for path in _settings().rules_dir.glob("*.y*ml")}
    name = request.args.get("name") or _unused(f"{chosen.name if chosen else 'new-rules'}.yaml", taken)
    text = chosen.text if chosen else "rules:\n  - id: my-rule\n    on: lead.created\n    when:\n      - field: \n"
    ids = {rule.id for rule in running_rules().rules}
    for taken_id in {m.group(2) for m in STARTER_ID.finditer(text)} & ids:  # its tests name it too: every mention
        text = re.sub(rf"(?<![\w.-]){re.escape(taken_id)}(?![\w.-])", _unused(taken_id, ids), text)
    return _page(name, text, expected=None)


def _unused(wanted: str, taken: set[str]) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`… (before a file's suffix): a starter opened twice still compiles."""
    stem, dot, suffix = wanted.rpartition(".") if wanted.endswith((".yaml", ".yml")) else (wanted, "", "")
    number = 1
    found = wanted
    while found in taken:
        number += 1
        found = f"{stem}-{number}{dot}{suffix}"
    return found


@blueprint.get("/editor/file/<path:name>")
def editor_file(name: str) -> Any:
    try:
        path = rule_files.resolve(_settings().rules_dir, name)
        text = path.read_bytes().decode("utf-8")  # as it is: read_text would turn CR LF into LF
    except rule_files.RefusedPath as exc:
        return Response(render_template("refused.html", title=_("Refused"), reason=rule_problem(str(exc))), 400)
    except (OSError, UnicodeDecodeError):
        return refusal(404)
    return _page(name, text, expected=sha256(text), saved=request.args.get("saved"))


@blueprint.post("/editor")
def editor_act() -> Any:
    """One button of the editor: check, diff, try, test, dry-run or save, on the text as typed. The file's
    name is a field of the form, never part of the address (a browser would resolve a `../` in it)."""
    form = request.form
    text = typed_text()
    name = form.get("name", "")
    expected = form.get("expected") or None
    action = form.get("do", "check")
    if action == "save":
        return _save(name, text, expected)
    try:
        drafts.checked_path(_settings().rules_dir, name)
    except drafts.DraftPathError as exc:
        return _page(name, text, expected=expected, problem=rule_problem(str(exc)), status=400)
    if action == "dry-run":
        return _dry_run(name, text, expected)
    outcome: dict[str, Any] = {"action": action}
    seen = catalogue_names(redis_connection()) if action == "check" else None  # only Check shows warnings
    found = drafts.validate_draft(_settings(), {name: text}, seen=seen)
    if found.rule_set is None:
        return _page(name, text, expected=expected, errors=found.errors, outcome=outcome)
    candidate = found.rule_set
    if action == "check":
        outcome["warnings"] = [_shown_error(warning) for warning in found.warnings]
        mine = display_name(_settings().rules_dir / name)  # a test that no longer passes is worth a look too
        outcome["failing"] = [t for t in run_rule_tests(candidate) if t.test.file == mine and not t.passed]
    elif action == "diff":
        outcome["diffs"] = diff_files({name: _running_text(name) or ""}, {name: text})
    elif action == "try":
        chosen = form_from_event(form.get("event", "")) if form.get("event") else None
        trial = chosen or {field: form.get(field, "") for field in ("event_type", "body", "previous")}
        outcome["trial"] = trial
        outcome["problem"], outcome["rules"] = simulate_form(trial, candidate)
    elif action == "test":
        mine = display_name(_settings().rules_dir / name)
        outcome["tests"] = [t for t in run_rule_tests(candidate) if t.test.file == mine]
    return _page(name, text, expected=expected, outcome=outcome, checked=candidate)


def typed_text() -> str:
    """The text as typed. A browser sends a textarea's lines ended by CR LF whatever they were, so
    the page says which ending the file uses (`newline`) and each line gets that one back."""
    text = request.form.get("text", "").replace("\r\n", "\n")
    return text.replace("\n", "\r\n") if request.form.get("newline") == "crlf" else text


def _save(name: str, text: str, expected: str | None) -> Any:
    if read_only():
        return managed_elsewhere()
    message = request.form.get("message", "").strip()[:500]
    try:
        saved = rule_files.save(_registry(), name, text, expected=expected, message=message,
                                source=history.Source.CONSOLE)  # fmt: skip
    except rule_files.Conflict as exc:
        diffs = diff_files({name: exc.disk or ""}, {name: text})
        return _page(name, text, expected=expected, conflict={"disk": exc.disk, "diffs": diffs}, status=409)
    except RuleSetError as exc:
        return _page(name, text, expected=expected, errors=exc.errors, status=422)
    except rule_files.RuleFileError as exc:
        return _page(name, text, expected=expected, problem=rule_problem(str(exc)), status=400)
    return redirect(url_for("console.editor_file", name=saved.name, saved=saved.version))


def _dry_run(name: str, text: str, expected: str | None) -> Any:
    try:
        size = int(request.form.get("events", dry_runs.DEFAULT_EVENTS))
    except ValueError:
        size = dry_runs.DEFAULT_EVENTS
    size = min(max(size, 1), dry_runs.MAX_EVENTS)
    try:
        candidate, texts = drafts.compile_draft_texts(_settings(), {name: text})
    except RuleSetError as exc:
        return _page(name, text, expected=expected, errors=exc.errors)
    run_id = dry_runs.start(redis_connection(), candidate, texts, drafts=[name], events=size)
    return redirect(url_for("console.dry_run", run_id=run_id, file=name))


def _running_text(name: str) -> str | None:
    """The text of file `name` in the set that runs now (the one `diff` compares with)."""
    running = history.version(redis_connection(), running_rules().version)
    if running is None or running.damaged:
        return None
    return running.files.get(display_name(_settings().rules_dir / name))


def _page(name: str, text: str, *, expected: str | None, status: int = 200, **shown: Any) -> Any:
    errors: tuple[RuleError, ...] | list[RuleError] = shown.pop("errors", ())
    recent = list_events(redis_connection(), EventFilter(), limit=RECENT_EVENTS_OFFERED).rows
    page = render_template(
        "editor.html", name=name, text=text, expected=expected or "", read_only=read_only(),
        errors=[_shown_error(e) for e in errors], recent=recent, sizes=DRY_RUN_SIZES,
        default_size=dry_runs.DEFAULT_EVENTS, **shown,
    )  # fmt: skip
    return Response(page, status=status)


def _shown_error(error: RuleError) -> dict[str, Any]:
    return {**error.as_json(), "message": rule_problem(error.message), "hint": rule_problem(error.hint or "") or None}


@blueprint.post("/validate")
def validate() -> Any:
    """What editor.js underlines: the admin API's validate, for the logged-in console (CSRF in a header)."""
    try:
        try:
            body = json.loads(request.get_data())
        except RecursionError:  # nested thousands deep: not a draft
            body = None
        files = drafts.files_from_body(body)
        if sum(len(text) for text in files.values()) > LONGEST_CHECKED_AS_YOU_TYPE:
            return jsonify({"errors": [], "warnings": [], "summary": _(
                "Too long to check as you type: press Check.")}), 200  # fmt: skip
        with drafts.one_check_at_a_time():
            result = drafts.validate_draft(_settings(), files, seen=catalogue_names(redis_connection()))
    except (ValueError, drafts.DraftPathError) as exc:
        return jsonify({"errors": [], "summary": rule_problem(str(exc))}), 400
    except drafts.ChecksBusy:
        return jsonify({"busy": True}), 429  # editor.js asks again in a moment, keeping its underlines
    answer = result.as_json()
    for kind in ("errors", "warnings"):
        answer[kind] = [{**e, "message": rule_problem(e["message"] or ""), "hint": rule_problem(e["hint"] or "")}
                        for e in answer[kind]]  # fmt: skip
    count = len(answer["errors"])
    answer["summary"] = (ngettext("%(num)d error", "%(num)d errors", count) if count
                         else ngettext("No error: %(num)d rule in the set", "No error: %(num)d rules in the set",
                                       answer["rules"] or 0))  # fmt: skip
    return jsonify(answer)


@blueprint.get("/editor/vocabulary.json")
def vocabulary() -> Any:
    """Completion words: the loader's keys, operators, events and filters, and the attributes Hana sent."""
    words = rule_words()
    fields = redact(Catalogue(redis_connection()).listing()["fields"], secrets_now())
    by_name: dict[str, dict[str, Any]] = {}
    for row in fields:
        name = row["name"] if row["name"].startswith(row["entity"] + ".") else f"{row['entity']}.{row['name']}"
        known = by_name.setdefault(name, {"name": name, "type": row["type"], "count": 0, "examples": []})
        known["count"] += row["count"]
        known["examples"] = (known["examples"] + [e for e in row["examples"] if e not in known["examples"]])[:3]
    words["attributes"] = sorted(by_name.values(), key=lambda a: (-a["count"], a["name"]))
    words["labels"] = {
        "key": _("key"), "operator": _("operator"), "modifier": _("modifier"), "event": _("event"),
        "filter": _("filter"), "context": _("context"), "example": _("a value Hana sent"),
        "types": {"string": _("text"), "number": _("number"), "enum": _("choice"), "date": _("date"),
                  "list": _("list"), "boolean": _("yes/no"), "object": _("object")},
    }  # fmt: skip
    return jsonify(words)
