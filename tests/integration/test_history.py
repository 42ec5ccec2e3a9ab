"""Every published rule set is a version in Redis, seen from every machine, and any one can be rolled back
to (SPEC §10 page 7) — through the runtime, the admin API and the CLI, with real Redis and a real receiver."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import requests

from engine.config import Settings
from engine.rules.errors import RuleSetError
from engine.runtime import history, rule_files
from engine.runtime.connection import receiver_client
from engine.runtime.history import HISTORY, HISTORY_FILES, Source
from engine.runtime.loading import PUBLISHED_RULES, RuleRegistry, compile_rules
from engine.runtime.supervisor import Supervisor
from engine.web.app import create_app
from tests.helpers import live_server, wait_for

V1 = "rules:\n  - id: greet\n    on: lead.created\n    then:\n      - log: hello\n"
V2 = "rules:\n  - id: greet\n    on: lead.created\n    then:\n      - log: hello again\n"
EXTRA = "rules:\n  - id: extra\n    on: lead.updated\n"


@pytest.fixture
def registry(settings: Settings, redis_client: redis.Redis) -> RuleRegistry:
    """A worker's start on an empty Redis: it publishes its files, the first version (`boot`)."""
    settings.rules_dir.mkdir()
    (settings.rules_dir / "rules.yaml").write_text(V1)
    return RuleRegistry.start(redis_client, settings)


def test_every_publish_is_a_version_with_its_source_message_and_texts(registry: RuleRegistry, redis_client) -> None:
    rules_dir = registry.settings.rules_dir
    first = registry.rule_set.version
    (rules_dir / "rules.yaml").write_text(V2)
    second = registry.publish_from_disk(source=Source.CLI, message="say it again").version
    assert registry.publish_from_disk(source=Source.API, message="no change").version == second  # same set: no entry
    saved = rule_files.save(registry, "extra.yaml", EXTRA, expected=None, source=Source.CONSOLE)
    listed = history.versions(redis_client)
    assert [(v.version, v.source, v.message) for v in listed] == [
        (saved.version, "console", "edited extra.yaml"), (second, "cli", "say it again"), (first, "boot", ""),
    ]  # fmt: skip
    assert [c.summary() for c in listed[0].changes] == [
        {"file": str(rules_dir.resolve() / "extra.yaml"), "change": "added", "added": 3, "removed": 0}
    ]
    assert [(c.change, c.added, c.removed) for c in listed[1].changes] == [("changed", 1, 1)]
    assert listed[2].previous is None and listed[1].previous == first
    shown = history.version(redis_client, second)
    assert (
        shown is not None
        and list(shown.files.values()) == [V2]
        and shown.paths == {str(rules_dir.resolve() / "rules.yaml"): "rules.yaml"}
    )
    [change] = shown.changes
    assert "-      - log: hello\n+      - log: hello again" in change.diff
    assert history.version(redis_client, "nope") is None


def test_the_file_watch_and_the_start_of_serve_record_their_source(registry: RuleRegistry, redis_client) -> None:
    """The supervisor's own watch loop, running as `serve --watch` runs it (without children)."""
    said: list[str] = []
    supervisor = Supervisor(registry.settings, host="127.0.0.1", port=1, workers=0, out=said.append, watch=True)
    supervisor.rules = registry
    (registry.settings.rules_dir / "rules.yaml").write_text(V2)
    supervisor.reload("rules at start", Source.BOOT)
    watching = threading.Thread(target=supervisor._watch, args=({},), daemon=True)
    watching.start()
    try:
        supervisor.reload_requested.set()  # what the SIGHUP handler does
        wait_for(lambda: any(line.startswith("SIGHUP: ") for line in said), what="the SIGHUP's reload")
        (registry.settings.rules_dir / "extra.yaml").write_text(EXTRA)
        wait_for(lambda: history.versions(redis_client, 1)[0].source == "file-watch", what="the watch's publish")
    finally:
        supervisor.stopping.set()
        watching.join(10)
    assert [(v.source, v.message) for v in history.versions(redis_client)] == [
        ("file-watch", "rules changed on disk"),
        ("boot", "rules at start"),
        ("boot", ""),
    ]  # the SIGHUP found nothing new to publish: no entry of its own


def test_history_is_bounded_and_forgets_the_texts_no_entry_names(registry: RuleRegistry, redis_client) -> None:
    settings = registry.settings
    first = registry.rule_set.version
    name = str(settings.rules_dir.resolve() / "rules.yaml")  # as reload names it
    for number in range(history.LIMIT + 4):
        texts = {name: V1.replace("hello", f"hello {number}")}
        registry.publish(texts, compile_rules(texts, settings), message=f"number {number}")
    listed = history.versions(redis_client)
    assert len(listed) == history.LIMIT == redis_client.llen(HISTORY) == redis_client.hlen(HISTORY_FILES)
    assert listed[0].message == f"number {history.LIMIT + 3}" and listed[-1].message == "number 4"
    assert history.version(redis_client, first) is None and len(history.versions(redis_client, 5)) == 5
    # A rollback names an old version again: its texts are kept once, as long as one entry names it.
    rule_files.rollback(registry, listed[50].version)
    assert redis_client.llen(HISTORY) == history.LIMIT and redis_client.hlen(HISTORY_FILES) == history.LIMIT - 1


def test_every_machine_sees_the_same_history_and_runs_a_rollback_made_on_another(
    registry: RuleRegistry, redis_server, tmp_path: Path
) -> None:
    """Two machines: two registries with their own data_dir and their own connection to one Redis."""
    other_settings = replace(registry.settings, data_dir=tmp_path / "machine-2")
    other = RuleRegistry.start(redis.Redis.from_url(redis_server.url), other_settings)
    first = other.rule_set.version
    saved = rule_files.save(registry, "rules.yaml", V2, expected=V1, message="v2")
    assert other.current().version == saved.version  # picked up before its next event
    seen = history.versions(other.connection)
    assert [(v.version, v.message) for v in seen] == [(saved.version, "v2"), (first, "")]
    rolled = rule_files.rollback(other, first, message="v2 was wrong", source=Source.CLI)
    assert rolled.version == first == registry.current().version
    assert (registry.settings.rules_dir / "rules.yaml").read_text() == V1  # the same rules_dir here
    newest = history.versions(registry.connection, 1)[0]
    assert (newest.version, newest.source, newest.message) == (first, "rollback", f"rollback to {first} (cli): "
                                                                                   "v2 was wrong")  # fmt: skip


def test_a_rollback_restores_the_whole_set_and_refuses_what_it_cannot_restore(
    registry: RuleRegistry, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules_dir = registry.settings.rules_dir
    first = registry.rule_set.version
    rule_files.save(registry, "team/extra.yaml", EXTRA, expected=None)
    rule_files.save(registry, "rules.yaml", V2, expected=V1)
    rolled = rule_files.rollback(registry, first)
    assert (rolled.written, rolled.removed) == (("rules.yaml",), ("team/extra.yaml",))
    assert sorted(p.relative_to(rules_dir).as_posix() for p in rules_dir.rglob("*.yaml")) == ["rules.yaml"]
    assert (rules_dir / "rules.yaml").read_text() == V1 and redis_client.hget(PUBLISHED_RULES, "version") == (
        first.encode()
    )
    with pytest.raises(rule_files.UnknownVersion, match="no version 'nope' to roll back to"):
        rule_files.rollback(registry, "nope")
    # A version that needs ${HANA_TEST_CHANNEL}, rolled back to where it is not set: refused, nothing written.
    monkeypatch.setenv("HANA_TEST_CHANNEL", "sales")
    needs_env = V1.replace("log: hello", "log: 'to ${HANA_TEST_CHANNEL}'")
    with_env = rule_files.save(registry, "rules.yaml", needs_env, expected=V1).version
    rule_files.save(registry, "rules.yaml", V2, expected=needs_env)
    monkeypatch.delenv("HANA_TEST_CHANNEL")
    with pytest.raises(RuleSetError, match="HANA_TEST_CHANNEL") as refused:
        rule_files.rollback(registry, with_env)
    assert refused.value.errors[0].file == "rules.yaml"
    assert (rules_dir / "rules.yaml").read_text() == V2 and history.versions(redis_client, 1)[0].source == "api"


def test_the_set_published_before_history_was_kept_becomes_its_first_entry(
    registry: RuleRegistry, redis_client
) -> None:
    first = registry.rule_set.version
    redis_client.delete(HISTORY, HISTORY_FILES)  # an installation from before the history
    saved = rule_files.save(registry, "rules.yaml", V2, expected=V1)
    assert [(v.version, v.source, v.message) for v in history.versions(redis_client)] == [
        (saved.version, "api", "edited rules.yaml"), (first, "boot", "published before history was kept"),
    ]  # fmt: skip
    assert rule_files.rollback(registry, first).version == first  # its paths are worked out on this machine


def test_a_damaged_entry_is_skipped_and_never_stops_a_publish(registry: RuleRegistry, redis_client) -> None:
    redis_client.lpush(HISTORY, b"{cut sho")
    redis_client.hset(HISTORY_FILES, registry.rule_set.version, b"not json")
    first = registry.rule_set.version
    saved = rule_files.save(registry, "rules.yaml", V2, expected=V1)
    assert [v.version for v in history.versions(redis_client)] == [saved.version, first]
    with pytest.raises(rule_files.UnknownVersion, match="damaged"):
        rule_files.rollback(registry, first)


@pytest.fixture
def api(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[tuple[str, requests.Session, Path]]:
    settings.rules_dir.mkdir()
    (settings.rules_dir / "rules.yaml").write_text(V1)
    app = create_app(settings, connection=receiver_client(settings.redis_url), drain_journal=False)
    config = tmp_path / "cli.yaml"
    config.write_text(f"rules_dir: {settings.rules_dir}\ndata_dir: {settings.data_dir}\n"
                      f"admin_token: {settings.admin_token}\n")  # fmt: skip
    with live_server(app) as url:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {settings.admin_token}"
        yield url, session, config


def test_the_admin_api_lists_shows_and_rolls_back_versions(api, redis_client: redis.Redis) -> None:
    url, session, _ = api
    first = session.post(f"{url}/admin/reload", json={"message": "first"}).json()["version"]
    second = session.put(f"{url}/admin/rules/files/rules.yaml", json={"text": V2, "expected": V1}).json()["version"]
    listed = session.get(f"{url}/admin/history").json()
    assert listed["running"] == second
    assert [(v["version"], v["source"], v["message"], v["added"], v["removed"]) for v in listed["versions"]] == [
        (second, "api", "edited rules.yaml", 1, 1), (first, "api", "first", 5, 0),
    ]  # fmt: skip
    assert "files" not in listed["versions"][0]  # no texts in the list
    shown = session.get(f"{url}/admin/history/{second}").json()
    assert list(shown["files"].values()) == [V2] and shown["previous"] == first
    assert "+      - log: hello again" in shown["changes"][0]["diff"]
    assert session.get(f"{url}/admin/history/nope").status_code == 404
    assert session.get(f"{url}/admin/history", params={"limit": 0}).status_code == 400
    assert session.get(f"{url}/admin/history", params={"limit": "x"}).status_code == 400
    rolled = session.post(f"{url}/admin/rollback", json={"version": first, "message": "oops"})
    assert rolled.status_code == 200 and rolled.json()["version"] == first
    assert session.get(f"{url}/admin/rules").json()["version"] == first
    assert session.get(f"{url}/admin/history", params={"limit": 1}).json()["versions"][0]["message"] == (
        f"rollback to {first} (api): oops"
    )
    assert session.post(f"{url}/admin/rollback", json={"version": "nope"}).status_code == 404
    for body in ({}, {"version": 3}, {"version": first, "source": "console"}, {"version": first, "message": 5}):
        assert session.post(f"{url}/admin/rollback", json=body).status_code == 400
    assert session.post(f"{url}/admin/reload", json={"message": "x" * 501}).status_code == 400


def test_history_and_rollback_from_the_cli_through_the_admin_api(api) -> None:
    url, session, config = api

    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "engine.cli", *arguments, "--url", url, "--config", str(config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    reloaded = cli("reload", "--message", "from the terminal")
    assert reloaded.returncode == 0, reloaded.stderr
    first = session.get(f"{url}/admin/rules").json()["version"]
    session.put(f"{url}/admin/rules/files/rules.yaml", json={"text": V2, "expected": V1, "message": "louder"})
    listed = cli("history")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "PUBLISHED", "SOURCE", "MESSAGE", "FILES", "CHANGED"]
    assert " api " in lines[1] and "louder" in lines[1] and "rules.yaml +1 -1" in lines[1] and "*" in lines[1]
    assert lines[2].startswith(first) and " cli " in lines[2] and "from the terminal" in lines[2]
    as_json = cli("history", "--json", "--limit", "1")
    assert as_json.returncode == 0 and [v["message"] for v in json.loads(as_json.stdout)["versions"]] == ["louder"]
    rolled = cli("rollback", first, "--message", "back")
    assert rolled.returncode == 0, rolled.stderr
    assert f"rolled back to {first}: rules version {first} is live (1 rules; 1 file(s) written, 0 removed)" in (
        rolled.stdout
    )
    assert session.get(f"{url}/admin/history", params={"limit": 1}).json()["versions"][0]["message"] == (
        f"rollback to {first} (cli): back"
    )
    missing = cli("rollback", "nope")
    assert missing.returncode == 1 and "no version 'nope'" in missing.stderr and "Traceback" not in missing.stderr
