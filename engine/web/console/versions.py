"""The editor's other pages: a dry run's progress and result, the history of published versions
with rollback, and the quick edits of the rules list and the event page (enable/disable a
rule, add an event as a test), each through the editor's one save path (rule_files.save), so
comments and layout stay and every change is a version in the history."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import redirect, render_template, request, url_for
from flask_babel import gettext as _

from engine.redaction import redact, redact_rule_text
from engine.rules.editing import EditRefused, add_test, new_test, set_enabled
from engine.rules.errors import RuleSetError
from engine.runtime import dry_runs, history, rule_files
from engine.runtime.events import EventStore
from engine.web.console.editor import _registry, managed_elsewhere, read_only, sha256
from engine.web.console.pages import _settings, blueprint, redis_connection, refusal, running_rules, secrets_now
from engine.web.console.problems import rule_problem

HISTORY_SHOWN = 100


@blueprint.get("/dry-runs/<run_id>")
def dry_run(run_id: str) -> Any:
    found = dry_runs.read(redis_connection(), run_id)
    if found is None:
        return refusal(404)
    finished = found["status"] in (dry_runs.DryRunStatus.FINISHED, dry_runs.DryRunStatus.FAILED)
    if request.headers.get("HX-Request"):
        return render_template("dry_run_live.html", run=found, finished=finished, file=request.args.get("file"))
    return render_template("dry_run.html", run=found, finished=finished, file=request.args.get("file"))


@blueprint.get("/history")
def history_page() -> Any:
    return render_template("history.html", versions=history.versions(redis_connection(), HISTORY_SHOWN),
                           running=running_rules().version, read_only=read_only(),
                           done=request.args.get("done"))  # fmt: skip


@blueprint.get("/history/<version_id>")
def version(version_id: str) -> Any:
    found = history.version(redis_connection(), version_id)
    if found is None:
        return refusal(404)
    secrets = secrets_now()  # shown as the rule page shows a rule's text: secret values and webhook URLs masked
    changes = [replace(change, diff=redact_rule_text(change.diff, secrets)) for change in found.changes]
    return render_template("version.html", version=found, changes=changes, running=running_rules().version,
                           read_only=read_only())  # fmt: skip


@blueprint.route("/history/<version_id>/rollback", methods=["GET", "POST"])
def rollback(version_id: str) -> Any:
    """GET: what rolling back would do, and a button; POST: do it (SPEC §10: every change behind a confirmation)."""
    if read_only():
        return managed_elsewhere()
    found = history.version(redis_connection(), version_id)
    if found is None:
        return refusal(404)
    error = None
    if request.method == "POST":
        try:
            done = rule_files.rollback(_registry(), version_id, message=request.form.get("message", "")[:500],
                                       source=history.Source.CONSOLE)  # fmt: skip
            return redirect(url_for("console.history_page", done=done.version))
        except RuleSetError as exc:
            error = "; ".join(f"{e.file}:{e.line}:{e.column} {rule_problem(e.message)}" for e in exc.errors[:5])
        except rule_files.RuleFileError as exc:
            error = rule_problem(str(exc))
    on_disk = {f.name for f in rule_files.list_files(_settings().rules_dir)}
    kept = {found.paths.get(file) or history.path_in(_settings().rules_dir, file) for file in found.files}
    return render_template("rollback.html", version=found, running=running_rules().version, error=error,
                           removed=sorted(on_disk - kept), written=sorted(n for n in kept if n))  # fmt: skip


@blueprint.post("/rules/<rule_id>/enabled")
def toggle_rule(rule_id: str) -> Any:
    """Enable or disable one rule: a one-key edit of its file, saved and published like any edit."""
    if read_only():
        return managed_elsewhere()
    rule = running_rules().rule(rule_id)
    if rule is None:
        return refusal(404)
    enabled = request.form.get("enabled") == "1"
    word = _("enabled") if enabled else _("disabled")
    return _edit(rule.file, lambda text: set_enabled(text, rule_id, enabled),
                 message=f"{'enabled' if enabled else 'disabled'} {rule_id} (console)",
                 back=url_for("console.rules", done=f"{rule_id}:{word}"))  # fmt: skip


@blueprint.post("/events/<event_id>/add-test")
def add_event_test(event_id: str) -> Any:
    """Add this event, with the state known before it and the rules it matched, as a test of a rule's file."""
    if read_only():
        return managed_elsewhere()
    stored = EventStore(redis_connection()).load(event_id)
    rule = running_rules().rule(request.form.get("rule", ""))
    if stored is None or rule is None:
        return refusal(404)
    secrets = secrets_now()  # a test is written into a file and the history: never a secret in it
    body = redact(stored.shown_body, secrets)
    if not isinstance(body, dict):
        return _refused(_("This event's body is not a JSON object, so it cannot be a test."))
    context = stored.context or {}
    entity = context.get("event", {}).get("entity")
    known = redact((context.get("previous") or {}).get(entity), secrets) if entity else None
    in_file = {r.id for r in running_rules().rules if r.file == rule.file}
    matched = [r["id"] for r in stored.rule_results if r.get("matched") and r.get("id") in in_file]
    listened = [r["id"] for r in stored.rule_results if not r.get("matched") and r.get("id") in in_file]
    test = new_test(f"event {event_id} ({stored.type}, {stored.received_at[:10]})", stored.type, body,
                    previous={entity: known} if known else None, matched=matched, not_matched=listened)  # fmt: skip
    return _edit(rule.file, lambda text: add_test(text, test), message=f"test from event {event_id} (console)",
                 back=url_for("console.event", event_id=event_id, done="test-added",
                              file=history.path_in(_settings().rules_dir, rule.file)))  # fmt: skip


def _edit(file: str, change: Any, *, message: str, back: str) -> Any:
    """Apply `change` to the file's text as it is on disk now and save it through the editor's save path."""
    rules_dir = _settings().rules_dir
    name = history.path_in(rules_dir, file)
    if name is None:
        return _refused(_("This rule's file is not inside the rules folder, so the console cannot change it."))
    try:
        text = rule_files.resolve(rules_dir, name).read_bytes().decode("utf-8")  # line endings as they are
        rule_files.save(_registry(), name, change(text), expected=sha256(text), message=message,
                        source=history.Source.CONSOLE)  # fmt: skip
    except EditRefused as exc:
        return _refused(_("The file could not be changed in place: %(why)s. Open it in the editor instead.",
                          why=str(exc)))  # fmt: skip
    except RuleSetError as exc:
        return _refused("; ".join(f"{e.file}:{e.line}:{e.column} {rule_problem(e.message)}" for e in exc.errors[:5]))
    except (rule_files.RuleFileError, OSError, UnicodeDecodeError) as exc:
        return _refused(rule_problem(str(exc)))
    return redirect(back)


def _refused(reason: str) -> Any:
    return render_template("refused.html", title=_("Not changed"), reason=reason), 409
