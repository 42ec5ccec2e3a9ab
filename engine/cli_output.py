"""Human-readable output of `hana-rules simulate` and `hana-rules fields`."""

from __future__ import annotations

import json
from typing import Any

import click

from engine.rules.errors import one_line
from engine.rules.explain import fold_negations
from engine.rules.ruleset import RuleSet
from engine.sentences import describe


def _short(value: Any, limit: int = 70) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_simulation(event_type: str, evaluation: dict[str, Any], rule_set: RuleSet, language: str = "en") -> None:
    """Each condition as a sentence in `language` (engine/sentences.py), each payload whole."""
    listening = len(rule_set.by_event.get(event_type, ()))
    click.echo(f"{event_type} against rule set {evaluation['version']}: {listening} rule(s) listen to it\n")
    for rule in evaluation["rules"]:
        spec = rule_set.rule(rule["id"])
        where = f"{spec.file}:{spec.line}" if spec else ""
        if rule["matched"]:
            click.echo(click.style(f"✓ {rule['id']}", fg="green", bold=True) + f"  matched  ({where})")
        else:
            click.echo(click.style(f"✗ {rule['id']}", fg="red") + f"  not matched  ({where})")
        for note in (rule.get("skipped"), rule.get("error")):
            if note:
                click.echo(f"    {note}")
        for name, value in (rule.get("vars") or {}).items():
            click.echo(f"    vars.{name} = {_short(value)}")
        for condition in fold_negations(rule["conditions"]):
            sentence = describe(condition, language)
            mark = click.style("✓", fg="green") if sentence.result else click.style("✗", fg="red")
            seen = f": {sentence.seen}" if sentence.seen else ""
            click.echo(f"    {'  ' * sentence.depth}{mark} {sentence.claim}{seen}")
        for action in rule["actions"]:
            later = " (after the delay)" if action.get("delayed") else ""
            if action.get("error"):
                click.echo(f"    → {action['kind']}{later}: {action['error']}")
                continue
            # Whole, never cut: this is what would be sent.
            payload = json.dumps(action["payload"], ensure_ascii=False, indent=2).replace("\n", "\n      ")
            click.echo(f"    → {action['kind']}{later}:\n      {payload}")
        click.echo("")
    matched = ", ".join(evaluation["matched"]) or "none"
    click.echo(f"Matched: {matched}. Nothing was sent.")


def print_fields(body: dict[str, Any]) -> None:
    """The attribute catalogue as one table per application and entity."""
    rows = body.get("fields") or []
    if not rows:
        click.echo("No attributes seen yet: they appear once workers have processed events.")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["application"] or "-", row["entity"]), []).append(row)
    for (application, entity), group in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        width = min(max(len(row["name"]) for row in group), 40)
        click.echo(click.style(f"{entity} attributes of application {application}", bold=True) + f" ({len(group)})")
        click.echo(f"  {'NAME':<{width}}  {'TYPE':<8} {'EVENTS':>7}  {'LAST SEEN':<24}  EXAMPLES")
        for row in group:
            examples = one_line(" | ".join(row["examples"])) or "-"  # a line break in a value must not break the table
            click.echo(f"  {one_line(row['name']):<{width}}  {row['type'] or '?':<8} {row['count']:>7}  "
                       f"{row['last_seen']:<24}  {examples}")  # fmt: skip
        click.echo("")
    for dropped in body.get("dropped") or []:
        if dropped["application"] == "*":
            click.echo(f"{dropped['count']} attribute(s) of further applications were not recorded: the catalogue "
                       f"keeps a limited number of applications (forgotten ones make room)")  # fmt: skip
        else:
            click.echo(f"{dropped['count']} new {dropped['entity']} attribute name(s) of application "
                       f"{dropped['application'] or '-'} were not recorded: its catalogue is full "
                       f"(names not seen within the retention make room)")  # fmt: skip
