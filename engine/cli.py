"""The `hana-rules` command. Errors a user can fix are one line, never a traceback."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine import __version__
from engine.config import Settings, load_settings, with_generated_tokens
from engine.errors import HanaRulesError
from engine.rules.errors import RuleSetError


def with_settings(command: Callable[..., Any] | None = None, *, tokens: bool = True) -> Any:
    """Adds `--config PATH` and turns it into resolved Settings; a user's mistake becomes one line.

    `tokens=False` for offline commands (check, test, simulate): they write nothing to data_dir.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            default=None,
            help="Settings file (default: $HANA_RULES_CONFIG, else ./hana-rules.yaml).",
        )
        @functools.wraps(command)
        def wrapper(config_file: str | None, **kwargs: Any) -> Any:
            try:
                settings = load_settings(config_file)
                if tokens:
                    settings = with_generated_tokens(settings)
                from engine import logs

                logs.configure(settings.log_format)
                return command(settings, **kwargs)
            except RuleSetError as exc:
                for error in exc.errors:
                    click.echo(str(error), err=True)
                raise click.ClickException(f"{len(exc.errors)} error(s) in the rules; nothing was loaded") from None
            except HanaRulesError as exc:
                raise click.ClickException(str(exc)) from None

        return wrapper

    return decorate(command) if command is not None else decorate


@click.group()
@click.version_option(__version__, prog_name="hana-rules")
def main() -> None:
    """Automation rules for Hana lead and opportunity events."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080).")
@click.option("--workers", type=int, default=None, help="Worker processes (default: `workers` setting, 2).")
@click.option("--watch", is_flag=True, help="Reload the rules when a rule file changes.")
@with_settings
def serve(settings: Settings, host: str | None, port: int | None, workers: int | None, watch: bool) -> None:
    """Run everything on this machine: embedded Redis, the receiver and the workers."""
    from engine.runtime.metrics_folder import prepare_multiprocess_dir
    from engine.runtime.ports import ensure_port_free
    from engine.runtime.supervisor import Supervisor

    # Before anything with a side effect: a second serve started by mistake must not empty the
    # running one's metrics folder (nor start a Redis on its data).
    ensure_port_free(host or settings.host, port or settings.port)
    prepare_multiprocess_dir(settings.data_dir, fresh=True)  # before any child imports prometheus_client
    supervisor = Supervisor(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        workers=settings.workers if workers is None else workers,
        out=lambda text: click.echo(text),
        watch=watch,
    )
    raise SystemExit(supervisor.run())


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080).")
@with_settings
def web(settings: Settings, host: str | None, port: int | None) -> None:
    """Run the receiver (gunicorn) against REDIS_URL."""
    from engine.runtime.metrics_folder import prepare_multiprocess_dir

    prepare_multiprocess_dir(settings.data_dir, fresh=False)  # emptied once the port check passed
    from engine.web.server import WebServer

    if not settings.redis_target:
        raise click.ClickException("no Redis: set REDIS_URL, redis_url or redis_sentinel, or run `hana-rules serve`")
    WebServer(settings, host=host or settings.host, port=port or settings.port).run()


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@with_settings
def worker(settings: Settings, burst: bool) -> None:
    """Run one worker process against REDIS_URL."""
    from engine.runtime.metrics_folder import prepare_multiprocess_dir

    prepare_multiprocess_dir(settings.data_dir, fresh=False)
    from engine.runtime.connection import worker_client
    from engine.runtime.worker import run_worker

    if not settings.redis_target:
        raise click.ClickException("no Redis: set REDIS_URL, redis_url or redis_sentinel, or run `hana-rules serve`")
    run_worker(settings, worker_client(settings.redis_target), burst=burst)


def _rules_dir(settings: Settings, directory: str | None) -> Path:
    return Path(directory) if directory else settings.rules_dir


@main.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@with_settings(tokens=False)
def check(settings: Settings, directory: str | None) -> None:
    """Validate every rule file; one line per error, exit 1 when there is any."""
    from engine.runtime.loading import load_rules

    rules_dir = _rules_dir(settings, directory)
    rule_set = load_rules(settings, rules_dir)
    files = len({rule.file for rule in rule_set.rules})
    click.echo(f"OK: {len(rule_set.rules)} rules in {files} files under {rules_dir} (version {rule_set.version})")


@main.command()
@click.argument("event_type")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--previous",
    "previous_file",
    type=click.File("r", encoding="utf-8"),
    help='Known state before this event, as JSON: {"lead": {"attr": value}}.',
)
@click.option("--rules", "directory", type=click.Path(file_okay=False), help="Rules folder (default: rules_dir).")
@click.option("--json", "as_json", is_flag=True, help="Print the simulate JSON of the admin API.")
@click.option("--lang", "language", default=None, help="vi or en (default: from LANG).")
@with_settings(tokens=False)
def simulate(settings: Settings, event_type: str, file: Any, previous_file: Any, directory: str | None,
             as_json: bool, language: str | None) -> None:  # fmt: skip
    """Show which rules an event (a Hana body in FILE, - for stdin) matches, and why; nothing is sent."""
    from engine.hana import EVENT_TYPES, canonical_event_type
    from engine.redaction import redact
    from engine.rules.testing import simulate as run
    from engine.runtime.loading import load_rules

    canonical = canonical_event_type(event_type)
    if canonical is None:
        raise click.UsageError(f"unknown event type {event_type!r}; use one of {', '.join(EVENT_TYPES)}")
    payload = _read_json(file, "the event file")
    previous = _read_json(previous_file, "the --previous file") if previous_file else None
    rule_set = load_rules(settings, _rules_dir(settings, directory))
    evaluation = redact(run(rule_set, canonical, payload, previous).as_json(), rule_set.secrets)
    if as_json:
        click.echo(json.dumps(evaluation, ensure_ascii=False, indent=2))
        return
    from engine.cli_output import print_simulation
    from engine.sentences import language_of

    print_simulation(canonical, evaluation, rule_set, language_of(language or os.environ.get("LANG")))


@main.command(name="test")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@with_settings(tokens=False)
def run_tests(settings: Settings, directory: str | None) -> None:
    """Run the `tests:` blocks of the rule files offline; exit 1 when any fails."""
    from engine.rules.testing import run_rule_tests
    from engine.runtime.loading import load_rules

    rule_set = load_rules(settings, _rules_dir(settings, directory))
    outcomes = run_rule_tests(rule_set)
    for outcome in outcomes:
        test = outcome.test
        mark = click.style("PASS", fg="green") if outcome.passed else click.style("FAIL", fg="red")
        click.echo(f"{mark} {test.file}:{test.line} {test.name}")
        for difference in outcome.differences:
            click.echo(f"     {difference}")
    failed = sum(not o.passed for o in outcomes)
    click.echo(f"{len(outcomes) - failed} passed, {failed} failed")
    if failed:
        raise SystemExit(1)


@main.command()
def schema() -> None:
    """Print the JSON Schema of rule files (for editor completion and validation)."""
    from engine.rules.schema import SCHEMA

    click.echo(json.dumps(SCHEMA, indent=2))


def _admin(settings: Settings, url: str | None) -> tuple[str, dict[str, str]]:
    """Where the running server is (--url, HANA_RULES_URL, or what serve/web recorded) and the admin header."""
    from engine.runtime.supervisor import read_runtime

    base = url or os.environ.get("HANA_RULES_URL") or (read_runtime(settings.data_dir) or {}).get("url")
    if not base:
        raise click.ClickException(
            "no running server found: give --url, set HANA_RULES_URL, or start `hana-rules serve`"
        )
    return str(base).rstrip("/"), {"Authorization": f"Bearer {settings.admin_token}"}


@main.command()
@click.option("--url", default=None, help="The running server (default: $HANA_RULES_URL or data_dir/runtime.json).")
@click.option(
    "--dry-run", is_flag=True, help="Replay recent events through the running and the edited rules; change nothing."
)
@click.option("--events", "event_count", type=int, default=1000, show_default=True, help="With --dry-run: how many.")
@click.option("--message", "-m", default="", help="Why, as the history will show it.")
@with_settings
def reload(settings: Settings, url: str | None, dry_run: bool, event_count: int, message: str) -> None:
    """Validate the rule files and make them live on every web process and worker."""
    import requests

    base, headers = _admin(settings, url)
    if dry_run:
        click.echo(f"replaying up to {event_count} recent events through both rule sets…", err=True)
    try:
        request: dict[str, Any] = {"dry_run": dry_run, "events": event_count, "source": "cli", "message": message}
        answer = requests.post(f"{base}/admin/reload", json=request, headers=headers, timeout=300)
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from None
    body = answer.json() if answer.headers.get("Content-Type", "").startswith("application/json") else {}
    if answer.status_code == 422:
        for entry in body.get("errors", []):
            click.echo(entry["text"], err=True)
        raise click.ClickException(body.get("error", "the rules were refused"))
    if answer.status_code != 200:
        raise click.ClickException(body.get("error", f"the server answered {answer.status_code}"))
    if dry_run:
        summary = f"{len(body['changed'])} of {body['events']} events would match differently"
        click.echo(f"dry run: {body['candidate']} ({body['rules']} rules) against the running {body['running']}: "
                   f"{summary}; nothing changed")  # fmt: skip
        for event in body["changed"]:
            gained = f" +{', +'.join(event['gained'])}" if event["gained"] else ""
            lost = f" -{', -'.join(event['lost'])}" if event["lost"] else ""
            click.echo(f"  {event['id']} {event['type']}:{gained}{lost}")
        return
    click.echo(f"rules version {body['version']} is live ({body['rules']} rules)")


def _admin_call(settings: Settings, url: str | None, method: str, path: str, **kwargs: Any) -> Any:
    import requests

    base, headers = _admin(settings, url)
    try:
        answer = requests.request(method, f"{base}{path}", headers=headers, timeout=60, **kwargs)
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200:
        raise click.ClickException(body.get("error", f"the server answered {answer.status_code}"))
    return body


_URL = click.option(
    "--url", default=None, help="The running server (default: $HANA_RULES_URL or data_dir/runtime.json)."
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@main.group()
def events() -> None:
    """Recent events, one event's whole story, and replays (through the admin API)."""


@events.command(name="list")
@click.option("--type", "event_type", default=None, help="lead.created … opportunity.deleted")
@click.option("--rule", default=None, help="Only events this rule matched.")
@click.option("--status", default=None, help="received, processing, done, failed or quarantined")
@click.option("--limit", type=int, default=50, show_default=True)
@_URL
@_JSON
@with_settings
def events_list(settings: Settings, event_type: str | None, rule: str | None, status: str | None, limit: int,
                url: str | None, as_json: bool) -> None:  # fmt: skip
    """Recent events, newest first."""
    params = {k: v for k, v in {"type": event_type, "rule": rule, "status": status, "limit": limit}.items() if v}
    body = _admin_call(settings, url, "GET", "/admin/events", params=params)
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    click.echo(f"{'ID':<26} {'TYPE':<20} {'RECEIVED':<25} {'STATUS':<12} MATCHED")
    for event in body["events"]:
        click.echo(f"{event['id']:<26} {event['type']:<20} {event['received_at']:<25} {event['status']:<12} "
                   f"{', '.join(event['matched']) or '-'}")  # fmt: skip


@events.command(name="show")
@click.argument("event_id")
@_URL
@_JSON
@with_settings
def events_show(settings: Settings, event_id: str, url: str | None, as_json: bool) -> None:
    """One event: what arrived, what each rule saw, what each action did."""
    from engine.rules.explain import fold_negations
    from engine.sentences import describe, language_of

    language = language_of(os.environ.get("LANG"))
    body = _admin_call(settings, url, "GET", f"/admin/events/{event_id}")
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    click.echo(f"{body['id']}  {body['type']}  received {body['received_at']}  {body['status']}"
               f"  rules {body.get('version') or '-'}{'  (echo)' if body.get('echo') else ''}")  # fmt: skip
    for warning in body.get("warnings") or []:
        click.echo(f"  warning: {warning}")
    for rule in body.get("rules") or []:
        mark = "✓" if rule["matched"] else "✗"
        click.echo(f"  {mark} {rule['id']}{'  — ' + rule['skipped'] if rule.get('skipped') else ''}")
        for condition in fold_negations(rule.get("conditions") or []):
            sentence = describe(condition, language)
            click.echo(f"      {'  ' * sentence.depth}{sentence.text}")
    for action in body.get("actions") or []:
        tries = ", ".join(str(a.get("status_code") or a.get("error") or "?") for a in action["attempts"]) or "none"
        click.echo(f"  → {action['rule']}#{action['index']} {action['kind']}: {action['status']} (attempts: {tries})")


@events.command(name="replay")
@click.argument("event_id")
@_URL
@with_settings
def events_replay(settings: Settings, event_id: str, url: str | None) -> None:
    """Process a stored event again, as a new event."""
    body = _admin_call(settings, url, "POST", f"/admin/events/{event_id}/replay")
    click.echo(f"replayed {event_id} as {body['event_id']} ({body['status']})")


@main.group()
def failed() -> None:
    """Dead letters: actions that failed for good, and parked Hana updates."""


@failed.command(name="list")
@_URL
@_JSON
@with_settings
def failed_list(settings: Settings, url: str | None, as_json: bool) -> None:
    """List dead letters and parked actions (requests shown with secrets masked)."""
    letters = _admin_call(settings, url, "GET", "/admin/failed")["failed"]
    if as_json:
        click.echo(json.dumps({"failed": letters}, ensure_ascii=False, indent=2))
        return
    if not letters:
        click.echo("No failed actions.")
        return
    click.echo(f"{'ID':<48} {'STATUS':<7} {'KIND':<12} {'TRIES':>5}  ERROR")
    for letter in letters:
        error = (letter["error"] or "")[:70]
        click.echo(
            f"{letter['id']:<48} {letter['status']:<7} {letter['kind']:<12} {len(letter['attempts']):>5}  {error}"
        )


@failed.command(name="retry")
@click.argument("ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead letter and parked action.")
@_URL
@with_settings
def failed_retry(settings: Settings, ids: tuple[str, ...], retry_all: bool, url: str | None) -> None:
    """Retry dead letters; retrying a parked action resumes its whole application."""
    if retry_all:
        targets = [letter["id"] for letter in _admin_call(settings, url, "GET", "/admin/failed")["failed"]]
    else:
        targets = list(ids)
    if not targets:
        raise click.UsageError("give the ids to retry (see `hana-rules failed list`), or --all")
    with click.progressbar(targets, label="retrying", file=click.get_text_stream("stderr")) as progress:
        for identifier in progress:
            _admin_call(settings, url, "POST", f"/admin/failed/{identifier}/retry")
    click.echo(f"{len(targets)} action(s) queued again")


@failed.command(name="purge")
@click.argument("ids", nargs=-1)
@_URL
@with_settings
def failed_purge(settings: Settings, ids: tuple[str, ...], url: str | None) -> None:
    """Forget dead letters (every one when no id is given)."""
    targets = list(ids) or [letter["id"] for letter in _admin_call(settings, url, "GET", "/admin/failed")["failed"]]
    for identifier in targets:
        _admin_call(settings, url, "DELETE", f"/admin/failed/{identifier}")
    click.echo(f"{len(targets)} dead letter(s) purged")


@main.command()
@click.option("--application", default=None, help="Only this application's attributes (its id).")
@click.option("--entity", type=click.Choice(["lead", "opportunity", "ticket"]), default=None, help="Only these.")
@_URL
@_JSON
@with_settings
def fields(settings: Settings, application: str | None, entity: str | None, url: str | None, as_json: bool) -> None:
    """Attribute names seen in real events: type, how often, when last, recent values (the catalogue)."""
    params = {k: v for k, v in {"application": application, "entity": entity}.items() if v}
    body = _admin_call(settings, url, "GET", "/admin/fields", params=params)
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    from engine.cli_output import print_fields

    print_fields(body)


@main.command()
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@_URL
@_JSON
@with_settings
def history(settings: Settings, limit: int, url: str | None, as_json: bool) -> None:
    """Published rule-set versions, newest first: when, from where, why, and the files each changed."""
    body = _admin_call(settings, url, "GET", "/admin/history", params={"limit": limit})
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    click.echo(f"{'VERSION':<13} {'PUBLISHED':<25} {'SOURCE':<10} {'MESSAGE':<40} FILES CHANGED")
    for entry in body["versions"]:
        running = "*" if entry["version"] == body.get("running") else " "
        files = ", ".join(f"{c['file']} +{c['added']} -{c['removed']}" for c in entry["changes"]) or "-"
        click.echo(f"{entry['version']:<12}{running} {entry['published_at']:<25} {entry['source']:<10} "
                   f"{(entry['message'] or '-')[:40]:<40} {files}")  # fmt: skip


@main.command()
@click.argument("version")
@click.option("--message", "-m", default="", help="Why, as the history will show it.")
@_URL
@with_settings
def rollback(settings: Settings, version: str, message: str, url: str | None) -> None:
    """Make VERSION (see `hana-rules history`) the rule files and the running set again, on every machine."""
    import requests

    base, headers = _admin(settings, url)
    try:
        answer = requests.post(f"{base}/admin/rollback", headers=headers, timeout=300,
                               json={"version": version, "message": message, "source": "cli"})  # fmt: skip
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from None
    body = answer.json() if answer.headers.get("Content-Type", "").startswith("application/json") else {}
    for entry in body.get("errors", []):
        click.echo(entry["text"], err=True)
    if answer.status_code != 200:
        raise click.ClickException(body.get("error", f"the server answered {answer.status_code}"))
    changed = f"{len(body['written'])} file(s) written, {len(body['removed'])} removed"
    click.echo(f"rolled back to {body['rolled_back_to']}: rules version {body['version']} is live "
               f"({body['rules']} rules; {changed})")  # fmt: skip


def _read_json(handle: Any, what: str) -> Any:
    try:
        return json.load(handle)
    except ValueError as exc:
        raise click.ClickException(f"{what} is not valid JSON: {exc}") from None


if __name__ == "__main__":
    main()
