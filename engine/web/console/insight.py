"""Console pages that explain: the overview, the rules and "why didn't it fire?", one entity's timeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import current_app, render_template, request
from flask_babel import gettext as _

from engine.redaction import redact, redact_rule_text
from engine.rules.explain import first_failure
from engine.runtime.events import EventStore, entity_key
from engine.runtime.overview import CHART_HEIGHT, CHART_WIDTH, chart_bars, read_overview, rule_rows
from engine.runtime.state_store import StateStore
from engine.runtime.views import entity_events, rule_events
from engine.web.console.pages import blueprint, redis_connection, running_rules, secrets_now

#: How many recent events of a rule its page shows, matched and not.
RULE_PAGE_EVENTS = 50
#: How many of an entity's latest events its timeline shows: each is rebuilt to say what changed
#: (≈ 1 ms each with a busy lead's state), and the page must answer in < 50 ms (SPEC §9).
TIMELINE_EVENTS = 30


@blueprint.get("/overview")
def overview() -> Any:
    rule_set = running_rules()
    figures = read_overview(redis_connection(), rule_set)
    journal = current_app.extensions["hana_rules.journal"]
    template = "overview_live.html" if request.headers.get("HX-Request") else "overview.html"
    return render_template(template, figures=figures, bars=chart_bars(figures), chart_width=CHART_WIDTH,
                           chart_height=CHART_HEIGHT, journal_depth=journal.depth(), rule_set=rule_set)  # fmt: skip


@blueprint.get("/rules")
def rules() -> Any:
    rule_set = running_rules()
    return render_template("rules.html", rows=rule_rows(redis_connection(), rule_set), rule_set=rule_set,
                           read_only=current_app.extensions["hana_rules.settings"].console.read_only,
                           done=request.args.get("done", "").partition(":"))  # fmt: skip


@blueprint.get("/rules/<rule_id>")
def rule(rule_id: str) -> Any:
    rule_set = running_rules()
    found = rule_set.rule(rule_id)
    if found is None:
        return render_template("refused.html", reason=_no_rule(rule_id), title=_not_found()), 404
    connection = redis_connection()
    row = next(r for r in rule_rows(connection, rule_set) if r["id"] == rule_id)
    recent = rule_events(connection, rule_id, limit=RULE_PAGE_EVENTS)
    misses = [event for event in recent if rule_id not in event["matched"]]
    with connection.pipeline(transaction=False) as pipe:
        for event in misses:
            pipe.hget(f"hr:event:{event['id']}", "evaluation")
        evaluations = pipe.execute() if misses else []
    for event, raw in zip(misses, evaluations, strict=True):
        event["blame"] = _blame(raw, rule_id)
    source = _rule_source(Path(current_app.extensions["hana_rules.settings"].rules_dir), found, rule_set)
    source = redact_rule_text(source, secrets_now()) if source else None  # a webhook URL or token in the file
    return render_template("rule.html", rule=row, source=source, matched=[e for e in recent if e not in misses],
                           misses=misses, description=found.description)  # fmt: skip


def _blame(raw: bytes | None, rule_id: str) -> dict[str, Any] | None:
    """The first condition of `rule_id` that failed on this event, from its stored evaluation."""
    try:
        evaluation = json.loads(raw) if raw else {}
    except ValueError:
        return None
    for entry in evaluation.get("rules", []) if isinstance(evaluation, dict) else []:
        if isinstance(entry, dict) and entry.get("id") == rule_id:
            if entry.get("skipped"):
                return {"skipped": entry["skipped"]}
            failure = first_failure(entry.get("conditions") or [])
            return {"condition": failure} if failure else None
    return None


def _rule_source(rules_dir: Path, found: Any, rule_set: Any) -> str | None:
    """The rule's lines as the file on disk has them now (from its `id:` to the next rule of the file)."""
    path = Path(found.file)
    path = path if path.is_absolute() else rules_dir.parent / path
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    starts = sorted(r.line for r in rule_set.rules if r.file == found.file)
    later = [line for line in starts if line > found.line]
    end = later[0] - 1 if later else len(lines)
    chunk = lines[found.line - 1:end]
    while chunk and not chunk[-1].strip():
        chunk.pop()
    return "\n".join(chunk) if chunk else None


@blueprint.get("/timeline")
def timeline() -> Any:
    entity = (request.args.get("entity") or "").strip()
    application = (request.args.get("application") or "").strip() or None
    events = entity_events(redis_connection(), entity, application=application, limit=TIMELINE_EVENTS) if entity else []
    secrets = secrets_now()
    stored = EventStore(redis_connection()).load_many([event["id"] for event in events])
    steps = [{**event, "changes": _changes(whole)} for event, whole in zip(events, stored, strict=True)]
    state = None
    if events:
        last = events[-1]
        state = StateStore(redis_connection()).load(entity_key(last["application_id"], last["type"], entity))
    return render_template("timeline.html", entity=entity, steps=redact(steps, secrets), limit=TIMELINE_EVENTS,
                           state=redact(state, secrets) if state else None)  # fmt: skip


def _changes(stored: Any) -> list[dict[str, Any]]:
    """Each attribute this event changed: before → after, from the context the rules saw."""
    context = stored.context if stored else None
    if not context:
        return []
    entity = context.get("event", {}).get("entity") or ("lead" if "lead" in context else "opportunity")
    before = (context.get("previous") or {}).get(entity) or {}
    after = context.get(entity) or {}
    return [{"name": name, "before": before.get(name), "after": after.get(name)}
            for name in sorted(context.get("changes") or ())]  # fmt: skip


def _no_rule(rule_id: str) -> str:
    return _("There is no rule %(id)s in the running rule set.", id=rule_id)


def _not_found() -> str:
    return _("Not found")
