from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine.config import JOB_TIMEOUT, MAX_OUTBOUND_TIMEOUT, load_settings, with_generated_tokens
from engine.durations import parse_duration
from engine.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hana-rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_at_all_gives_working_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.config_file is None
    assert settings.rules_dir == tmp_path / "rules"
    assert settings.data_dir == tmp_path / "var"
    assert settings.redis_url is None
    assert settings.workers == 2 and settings.retention == 7 * 86400
    assert (settings.web_workers, settings.web_threads) == (2, 2)
    assert settings.uses_default_application
    assert settings.delivery.max_attempts == 8 and settings.loop_guard.limit == 10


def test_generated_tokens_are_stored_once_with_0600_and_reused(tmp_path: Path) -> None:
    path = write(tmp_path, "data_dir: state\n")
    first = with_generated_tokens(load_settings(path, env={}))
    second = with_generated_tokens(load_settings(path, env={}))
    secrets_file = tmp_path / "state" / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert first.admin_token and len(first.admin_token) >= 32
    assert first.admin_token == second.admin_token
    assert first.applications[0].webhook_token == second.applications[0].webhook_token
    assert first.admin_token in first.secrets


def test_env_interpolation_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules_dir: ${RULES:-my-rules}\n"
        "redis_url: ${REDIS_URL:-}\n"
        "workers: ${WORKERS}\n"
        "retention: 2d\n"
        "applications:\n"
        "  - id: app-1\n"
        "    webhook_token: ${TOKEN}\n"
        "    access_token: ${ACCESS}\n"
        "outbound: {timeout: 20s}\n",
    )
    env = {"WORKERS": "4", "TOKEN": "t" * 20, "ACCESS": "secret-access"}
    settings = load_settings(path, env=env)
    assert settings.rules_dir == tmp_path / "my-rules"  # relative to the file's folder
    assert settings.redis_url is None
    assert settings.workers == 4
    assert settings.retention == 2 * 86400
    assert settings.outbound.timeout == 20
    assert settings.applications[0].webhook_token == "t" * 20
    assert {"t" * 20, "secret-access"} <= settings.secrets


def test_unset_variable_is_an_error_naming_file_key_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "applications:\n  - id: a\n    webhook_token: ${SHOP_TOKEN}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    message = str(error.value)
    assert str(path) in message
    assert "applications[0].webhook_token" in message
    assert "SHOP_TOKEN is not set" in message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("workers: many\n", ["workers", "whole number"]),
        ("web_threads: 0\n", ["web_threads"]),
        ("delivery: {max_attempts: 3, backof: 10s}\n", ["delivery.backof", "unknown key", "backoff"]),
        ("retention: soon\n", ["retention", "expected a duration"]),
        ("colour: blue\n", ["colour", "unknown key"]),
        ("applications:\n  - id: a\n", ["applications[0].webhook_token", "required"]),
        ("applications:\n  - id: a\n    webhook_token: short\n", ["at least 16 characters"]),
        ("log_format: xml\n", ["log_format", "text, json"]),
        ("workers: [1\n", ["not valid YAML", ":2:1"]),
        ("- a list\n", ["must be a mapping"]),
    ],
)
def test_startup_errors_name_the_file_and_the_key(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    message = str(error.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("timeout", "fragment"),
    [("26s", "must be at most 25s, so an attempt ends well inside the 30s job timeout"),
     ("1m", "must be at most 25s"), (0, "must be more than 0s"), ("0s", "must be more than 0s"),
     ("-1", "cannot be negative")],
)  # fmt: skip
def test_an_outbound_timeout_that_cannot_fit_in_a_job_is_refused(tmp_path: Path, timeout: object,
                                                                  fragment: str) -> None:  # fmt: skip
    path = write(tmp_path, f"outbound: {{timeout: {timeout}}}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    assert str(error.value).startswith(f"{path}: outbound.timeout: "), error.value
    assert fragment in str(error.value)


def test_the_longest_outbound_timeout_leaves_room_inside_a_job(tmp_path: Path) -> None:
    assert MAX_OUTBOUND_TIMEOUT == JOB_TIMEOUT - 5 == 25
    assert load_settings(write(tmp_path, "outbound: {timeout: 25s}\n"), env={}).outbound.timeout == 25


def test_secret_from_environment_is_never_echoed_in_a_type_error(tmp_path: Path) -> None:
    path = write(tmp_path, "outbound: {allow_hosts: ${HOSTS}}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={"HOSTS": "super-secret-value"})
    assert "super-secret-value" not in str(error.value)


def test_config_found_through_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 5\n")
    assert load_settings(env={"HANA_RULES_CONFIG": str(path)}).workers == 5


def test_default_application_update_api_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"HANA_UPDATE_URL": "https://hana.example/u", "HANA_ACCESS_TOKEN": "tok"})
    app = settings.applications[0]
    assert app.hana_update_url == "https://hana.example/u" and app.access_token == "tok"
    assert "tok" in settings.secrets


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 604800), (45, 45), ("1h30m", 5400), ("1.5", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10 parsecs", "-5", -5, True, None, "m"])
def test_bad_durations_say_what_is_expected(text: object) -> None:
    with pytest.raises(ValueError, match="30s, 10m, 2h or 7d|cannot be negative"):
        parse_duration(text)


def test_secrets_file_is_not_world_readable_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with_generated_tokens(load_settings(write(tmp_path, "data_dir: d\n"), env={}))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d" / "secrets.json").stat().st_mode) == 0o600


def test_tokens_can_come_from_the_environment_for_multi_machine_installs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"HANA_RULES_ADMIN_TOKEN": "admin-from-env-123456", "HANA_WEBHOOK_TOKEN": "hook-from-env-123456"}
    settings = with_generated_tokens(load_settings(env=env))
    assert settings.admin_token == "admin-from-env-123456"
    assert settings.applications[0].webhook_token == "hook-from-env-123456"
    assert not (tmp_path / "var" / "secrets.json").exists()  # nothing generated, nothing written


def test_the_web_server_runs_the_configured_processes_and_threads(tmp_path: Path) -> None:
    from engine.web.server import server_options

    settings = load_settings(write(tmp_path, "web_workers: 3\nweb_threads: 5\n"), env={})
    options = server_options(settings, host="127.0.0.1", port=8080)
    assert (options["workers"], options["threads"]) == (3, 5)
    assert options["reuse_port"] is True  # a socket per process: the kernel spreads connections over them
