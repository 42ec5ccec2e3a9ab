"""Human-readable output of `hana-rules simulate`."""

from __future__ import annotations

import json
from typing import Any

import click

from engine.rules.ruleset import RuleSet


def _short(value: Any, limit: int = 70) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_simulation(event_type: str, evaluation: dict[str, Any], rule_set: RuleSet) -> None:
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
        for condition in rule["conditions"]:
            mark = click.style("✓", fg="green") if condition["result"] else click.style("✗", fg="red")
            if condition["expected"] in ("all", "any", "not"):
                click.echo(f"    {mark} {condition['path']:<18} ({condition['expected']})")
                continue
            seen = "missing" if condition.get("missing") else _short(condition["value"], 40)
            line = f"    {mark} {condition['path']:<18} saw {seen}, expected {_short(condition['expected'], 40)}"
            if condition.get("error"):
                line += f"  [{condition['error']}]"
            click.echo(line)
        for action in rule["actions"]:
            later = " (after the delay)" if action.get("delayed") else ""
            shown = action.get("error") or _short(action["payload"], 90)
            click.echo(f"    → {action['kind']}{later}: {shown}")
        click.echo("")
    matched = ", ".join(evaluation["matched"]) or "none"
    click.echo(f"Matched: {matched}. Nothing was sent.")
