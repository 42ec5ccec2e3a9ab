"""The `hana-rules` command. Errors a user can fix are one line, never a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from engine import __version__
from engine.config import Settings, load_settings, with_generated_tokens
from engine.errors import HanaRulesError


def with_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds `--config PATH` and turns it into resolved Settings; HanaRulesError → one line."""

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
            settings = with_generated_tokens(load_settings(config_file))
            from engine import logs

            logs.configure(settings.log_format)
            return command(settings, **kwargs)
        except HanaRulesError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group()
@click.version_option(__version__, prog_name="hana-rules")
def main() -> None:
    """Automation rules for Hana lead and opportunity events."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080).")
@click.option("--workers", type=int, default=None, help="Worker processes (default: `workers` setting, 2).")
@with_settings
def serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> None:
    """Run everything on this machine: embedded Redis, the receiver and the workers."""
    from engine.runtime.supervisor import Supervisor

    supervisor = Supervisor(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        workers=settings.workers if workers is None else workers,
        out=lambda text: click.echo(text),
    )
    raise SystemExit(supervisor.run())


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080).")
@with_settings
def web(settings: Settings, host: str | None, port: int | None) -> None:
    """Run the receiver (gunicorn) against REDIS_URL."""
    from engine.web.server import WebServer

    if not settings.redis_url:
        raise click.ClickException("no Redis: set REDIS_URL or redis_url, or run `hana-rules serve`")
    WebServer(settings, host=host or settings.host, port=port or settings.port).run()


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@with_settings
def worker(settings: Settings, burst: bool) -> None:
    """Run one worker process against REDIS_URL."""
    from engine.runtime.connection import worker_client
    from engine.runtime.worker import run_worker

    if not settings.redis_url:
        raise click.ClickException("no Redis: set REDIS_URL or redis_url, or run `hana-rules serve`")
    run_worker(settings, worker_client(settings.redis_url), burst=burst)


if __name__ == "__main__":
    main()
