"""Saving one rule file from the editor (SPEC §10 page 7): exactly the typed bytes, atomically, inside
rules_dir only, never over someone else's edit, never an invalid set — with real Redis and a real receiver."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import requests

from engine.config import Console, Settings
from engine.rules.errors import RuleSetError
from engine.runtime import history, rule_files
from engine.runtime.connection import receiver_client
from engine.runtime.history import Source
from engine.runtime.loading import PUBLISHED_RULES, RuleRegistry
from engine.web.app import create_app
from tests.helpers import live_server

GREET = "rules:\n  - id: greet\n    on: lead.created\n    then:\n      - log: hello\n"
#: What a user types: comments, CRLF line endings, trailing spaces, Vietnamese, no newline at the end.
TYPED = (
    "# Chào khách mới   \r\n"
    "rules:\r\n"
    "  - id: greet     # the first rule\r\n"
    "    on: lead.created\r\n"
    "    then:\r\n"
    '      - log: "xin chào {{ lead.baseName }}"   \r\n'
    "\r\n"
    "# end"
)


@pytest.fixture
def registry(settings: Settings, redis_client: redis.Redis) -> RuleRegistry:
    settings.rules_dir.mkdir()
    (settings.rules_dir / "rules.yaml").write_text(GREET)
    registry = RuleRegistry.boot(redis_client, settings)
    registry.publish_from_disk()
    return registry


def published_version(client: redis.Redis) -> str:
    return client.hget(PUBLISHED_RULES, "version").decode()


def test_a_save_writes_exactly_the_typed_bytes_and_publishes_them(registry: RuleRegistry, redis_client) -> None:
    rules_dir = registry.settings.rules_dir
    [opened] = rule_files.list_files(rules_dir)
    assert (opened.name, opened.text, opened.editable) == ("rules.yaml", GREET, True)
    saved = rule_files.save(registry, "rules.yaml", TYPED, expected=opened.text, message="greet in Vietnamese",
                            source=Source.CONSOLE)  # fmt: skip
    assert (rules_dir / "rules.yaml").read_bytes() == TYPED.encode()  # comments, CRLF, spaces, no last newline
    assert saved.sha256 == hashlib.sha256(TYPED.encode()).hexdigest() and saved.changed and saved.rules == 1
    assert published_version(redis_client) == saved.version == registry.rule_set.version
    assert sorted(os.listdir(rules_dir)) == ["rules.yaml"]  # no temporary file left behind
    [reopened] = rule_files.list_files(rules_dir)
    assert reopened.text == TYPED and reopened.sha256 == saved.sha256  # the editor reopens what was typed
    # A reload of the same file publishes the same version: nothing new in the history.
    assert registry.publish_from_disk().version == saved.version
    [newest, _] = history.versions(redis_client)
    assert (newest.version, newest.source, newest.message) == (saved.version, "console", "greet in Vietnamese")


def test_a_new_file_in_a_new_folder_is_created_and_must_not_exist_yet(registry: RuleRegistry) -> None:
    rules_dir = registry.settings.rules_dir
    text = "rules:\n  - {id: team, on: lead.updated}\n"
    saved = rule_files.save(registry, "team/sales.yml", text, expected=None)
    assert (rules_dir / "team" / "sales.yml").read_text() == text and saved.rules == 2
    assert (rules_dir / "team" / "sales.yml").stat().st_mode & 0o777 == rule_files.NEW_FILE_MODE
    with pytest.raises(rule_files.Conflict, match="exists already") as refused:
        rule_files.save(registry, "team/sales.yml", "rules: []\n", expected=None)
    assert (refused.value.disk, refused.value.submitted) == (text, "rules: []\n")


def test_a_file_changed_on_disk_since_it_was_opened_is_refused_showing_both_versions(
    registry: RuleRegistry, redis_client: redis.Redis
) -> None:
    path = registry.settings.rules_dir / "rules.yaml"
    [opened] = rule_files.list_files(registry.settings.rules_dir)
    theirs = GREET.replace("hello", "hello from a colleague")
    path.write_text(theirs)  # someone else's edit, after the editor opened the file
    before = published_version(redis_client)
    mine = GREET.replace("hello", "hello from me")
    for expected in (opened.text, opened.sha256):
        with pytest.raises(rule_files.Conflict, match="changed on disk since it was opened") as refused:
            rule_files.save(registry, "rules.yaml", mine, expected=expected)
        assert (refused.value.disk, refused.value.submitted) == (theirs, mine)
    assert path.read_text() == theirs and published_version(redis_client) == before
    # The disk's own text (or its sha256) as expected: the save goes through.
    digest = hashlib.sha256(theirs.encode()).hexdigest()
    assert rule_files.save(registry, "rules.yaml", mine, expected=digest).changed
    path.unlink()
    with pytest.raises(rule_files.Conflict, match="was removed from disk") as refused:
        rule_files.save(registry, "rules.yaml", mine, expected=mine)
    assert refused.value.disk is None


def test_line_endings_alone_are_not_someone_elses_edit(registry: RuleRegistry) -> None:
    path = registry.settings.rules_dir / "rules.yaml"
    path.write_bytes(GREET.replace("\n", "\r\n").encode())
    saved = rule_files.save(registry, "rules.yaml", GREET + "# lf\n", expected=GREET)  # the browser sent LF
    assert path.read_bytes() == (GREET + "# lf\n").encode() and saved.changed


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../x.yaml", "climbs out with .."),
        ("team/../../x.yaml", "climbs out with .."),
        ("/etc/x.yaml", "absolute path"),
        (".hidden.yaml", "is hidden"),
        ("team/.git/x.yaml", "is hidden"),
        ("x.txt", "must end in .yaml or .yml"),
        ("x.YAML", "must end in .yaml or .yml"),
        ("./x.yaml", "write './x.yaml' plainly, as 'x.yaml'"),
        ("team//x.yaml", "plainly"),
        ("team\\x.yaml", "not a usable file name"),
        ("x\x00.yaml", "not a usable file name"),
        ("", "needs a name"),
        ("a" * 300 + ".yaml", "longer than 255 bytes"),
    ],
)
def test_a_path_that_is_not_a_rule_file_inside_rules_dir_is_refused(registry: RuleRegistry, name: str,
                                                                      why: str) -> None:  # fmt: skip
    with pytest.raises(rule_files.RefusedPath, match=why.replace(".", r"\.").replace("(", r"\(")):
        rule_files.save(registry, name, GREET, expected=None)


def test_symbolic_links_out_of_rules_dir_are_refused_and_nothing_is_written_outside(
    registry: RuleRegistry, tmp_path: Path
) -> None:
    rules_dir = registry.settings.rules_dir
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text("rules: []\n")
    (rules_dir / "out").symlink_to(outside, target_is_directory=True)
    (rules_dir / "link.yaml").symlink_to(outside / "secret.yaml")
    for name in ("out/x.yaml", "link.yaml", "out/secret.yaml"):
        with pytest.raises(rule_files.RefusedPath, match="leads outside rules_dir through a symbolic link"):
            rule_files.save(registry, name, GREET, expected=None)
    assert sorted(os.listdir(outside)) == ["secret.yaml"] and (outside / "secret.yaml").read_text() == "rules: []\n"
    # A link that stays inside rules_dir is followed: the file it names is written, the link stays a link.
    (rules_dir / "link.yaml").unlink()
    (rules_dir / "empty.yaml").write_text("rules: []\n")
    (rules_dir / "alias.yaml").symlink_to(rules_dir / "empty.yaml")
    rule_files.save(registry, "alias.yaml", "# nothing yet\nrules: []\n", expected="rules: []\n")
    assert (rules_dir / "alias.yaml").is_symlink()
    assert (rules_dir / "empty.yaml").read_text() == "# nothing yet\nrules: []\n"


def test_an_invalid_set_is_refused_with_its_errors_and_nothing_is_written(
    registry: RuleRegistry, redis_client: redis.Redis
) -> None:
    rules_dir = registry.settings.rules_dir
    before = published_version(redis_client)
    broken = "rules:\n  - id: greet\n    on: lead.creatd\n"
    with pytest.raises(RuleSetError) as refused:
        rule_files.save(registry, "rules.yaml", broken, expected=GREET)
    [problem] = refused.value.errors
    assert problem.file == "rules.yaml" and problem.line == 3 and "lead.created" in str(problem)
    # Valid alone, invalid with the rest of the set: the whole set is checked.
    with pytest.raises(RuleSetError, match="greet"):
        rule_files.save(registry, "copy.yaml", GREET, expected=None)
    assert (rules_dir / "rules.yaml").read_text() == GREET and sorted(os.listdir(rules_dir)) == ["rules.yaml"]
    assert published_version(redis_client) == before and len(history.versions(redis_client)) == 1


def test_two_saves_at_once_from_the_same_opened_text_one_wins_the_other_is_told(registry: RuleRegistry) -> None:
    path = registry.settings.rules_dir / "rules.yaml"
    texts = [GREET.replace("hello", f"hello {n}") for n in range(2)]
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def save(text: str) -> None:
        start.wait()
        try:
            rule_files.save(registry, "rules.yaml", text, expected=GREET)
            outcomes.append("saved")
        except rule_files.Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=save, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["conflict", "saved"]
    assert path.read_text() in texts


def test_read_only_refuses_saves_and_rollbacks_with_the_sentence(registry: RuleRegistry) -> None:
    read_only = RuleRegistry(registry.connection, replace(registry.settings, console=Console(read_only=True)),
                             registry.rule_set)  # fmt: skip
    with pytest.raises(rule_files.ReadOnly) as refused:
        rule_files.save(read_only, "rules.yaml", GREET, expected=GREET)
    assert str(refused.value) == (
        "rules are managed elsewhere (console.read_only is on); change the files and run hana-rules reload"
    )
    with pytest.raises(rule_files.ReadOnly):
        rule_files.rollback(read_only, registry.rule_set.version)
    assert read_only.publish_from_disk().version == registry.rule_set.version  # reload stays allowed


@pytest.fixture
def api(settings: Settings, redis_client: redis.Redis) -> Iterator[tuple[str, requests.Session, Settings]]:
    settings.rules_dir.mkdir()
    (settings.rules_dir / "rules.yaml").write_text(GREET)
    app = create_app(settings, connection=receiver_client(settings.redis_url), drain_journal=False)
    with live_server(app) as url:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {settings.admin_token}"
        assert session.post(f"{url}/admin/reload").status_code == 200
        yield url, session, settings


def test_the_admin_api_opens_saves_and_refuses_files_never_with_a_500(api, redis_client: redis.Redis) -> None:
    url, session, settings = api
    [opened] = session.get(f"{url}/admin/rules/files").json()["files"]
    assert opened == {"name": "rules.yaml", "file": opened["file"], "text": GREET, "editable": True,
                      "sha256": hashlib.sha256(GREET.encode()).hexdigest()}  # fmt: skip
    saved = session.put(f"{url}/admin/rules/files/rules.yaml", json={"text": TYPED, "expected": opened["sha256"],
                                                                     "message": "typed"})  # fmt: skip
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == session.get(f"{url}/admin/rules").json()["version"]
    assert (settings.rules_dir / "rules.yaml").read_bytes() == TYPED.encode()
    conflict = session.put(f"{url}/admin/rules/files/rules.yaml", json={"text": GREET, "expected": GREET})
    assert conflict.status_code == 409 and conflict.json()["disk"] == TYPED and conflict.json()["submitted"] == GREET
    invalid = session.put(f"{url}/admin/rules/files/new.yaml", json={"text": "rules:\n  - {id: x, on: nope}\n"})
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["file"] == "new.yaml"
    assert not (settings.rules_dir / "new.yaml").exists()
    nested = session.put(f"{url}/admin/rules/files/team/new.yaml", json={"text": "rules: []\n", "expected": None})
    assert nested.status_code == 200 and nested.json()["name"] == "team/new.yaml"
    for name in ("../x.yaml", "%2E%2E/x.yaml", ".hidden.yaml", "x.txt", "a%00.yaml", "a" * 600 + ".yaml"):
        refused = session.put(f"{url}/admin/rules/files/{name}", json={"text": "rules: []\n", "expected": None})
        assert refused.status_code in (400, 404), (name, refused.status_code)  # 404: the router saw no name
        assert "error" in refused.json()
    for body in ([], {"text": 3}, {"text": "x", "expected": 3}, {"text": "x", "message": ["no"]}):
        assert session.put(f"{url}/admin/rules/files/x.yaml", json=body).status_code == 400
    garbage = session.put(f"{url}/admin/rules/files/x.yaml", data=b"\xff{", headers={"Content-Type": "text/plain"})
    assert garbage.status_code == 400
    unauthenticated = requests.put(f"{url}/admin/rules/files/x.yaml", json={"text": GREET}, timeout=10)
    assert unauthenticated.status_code == 401


def test_read_only_answers_403_to_save_and_rollback_and_still_reloads(
    settings: Settings, redis_client: redis.Redis
) -> None:
    settings = replace(settings, console=Console(read_only=True))
    settings.rules_dir.mkdir()
    (settings.rules_dir / "rules.yaml").write_text(GREET)
    app = create_app(settings, connection=receiver_client(settings.redis_url), drain_journal=False)
    with live_server(app) as url:
        headers = {"Authorization": f"Bearer {settings.admin_token}"}
        version = requests.post(f"{url}/admin/reload", headers=headers, timeout=10).json()["version"]
        listed = requests.get(f"{url}/admin/rules/files", headers=headers, timeout=10).json()
        assert listed["read_only"] is True
        for method, path, body in [("put", "/admin/rules/files/rules.yaml", {"text": GREET, "expected": GREET}),
                                   ("post", "/admin/rollback", {"version": version})]:  # fmt: skip
            refused = requests.request(method, url + path, json=body, headers=headers, timeout=10)
            assert refused.status_code == 403
            assert refused.json()["error"] == rule_files.READ_ONLY
    assert (settings.rules_dir / "rules.yaml").read_text() == GREET
