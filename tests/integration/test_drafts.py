"""The editor's server side (issue 14): drafts validated as reload would, dry runs of a draft on the workers."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from engine.config import Settings
from engine.runtime import dry_runs
from engine.runtime.connection import receiver_client
from engine.runtime.drafts import PATH_REFUSED
from engine.runtime.events import EventStore
from engine.runtime.worker import build_worker
from engine.web.app import create_app
from tests.conftest import SHOP_A_TOKEN
from tests.helpers import sample

RULES = """
rules:
  - id: greet
    on: lead.created
    then:
      - log: "hello {{ lead.baseName }}"
"""
#: greet moves to lead.updated (so it stops matching what was created); vip is new.
DRAFT = """
rules:
  - id: greet
    on: lead.updated
    then:
      - log: "hello {{ lead.baseName }}"
  - id: vip
    on: lead.created
    when: {field: lead.baseSourceInput, contains: Youtube}
"""
ERROR_KEYS = {"file", "line", "column", "rule", "path", "message", "hint"}


@pytest.fixture
def editor(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[tuple[FlaskClient, Settings]]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(RULES)
    settings = replace(settings, rules_dir=rules_dir)
    app = create_app(settings, connection=receiver_client(settings.redis_url), drain_journal=False)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {settings.admin_token}"
    yield client, settings


def post_event(client: FlaskClient, lead_id: str, source: str = "Youtube") -> str:
    body = sample()
    body["lead"]["id"] = {"nomalizeData": lead_id}
    body["lead"]["baseSourceInput"] = {"nomalizeData": [source]}
    answer = client.post("/hooks/lead.created", query_string={"token": SHOP_A_TOKEN}, json=body)
    assert answer.json["status"] == "accepted", answer.text
    return answer.json["event_id"]


def validate(client: FlaskClient, body: Any) -> Any:
    """POSTed as browsers' JSON.stringify writes it: ASCII, so half a surrogate pair travels as `\\ud800`."""
    answer = client.post("/admin/validate", data=json.dumps(body), content_type="application/json")
    assert answer.status_code == 200, answer.text
    return answer.json


def test_validate_underlines_a_typo_at_its_line_with_the_rest_of_the_set_from_disk(editor) -> None:
    client, settings = editor
    typo = validate(client, {"path": "new.yaml", "text": "rules:\n  - id: fresh\n    on: lead.creatd\n"})
    [error] = typo["errors"]
    assert set(error) >= ERROR_KEYS and typo["rules"] is None and typo["version"] is None
    assert (error["file"], error["line"], error["column"], error["rule"]) == ("new.yaml", 3, 5, "fresh")
    assert "unknown event type 'lead.creatd'" in error["message"] and "lead.created" in error["hint"]

    # The rest of the set is on disk: an id taken by rules.yaml is a duplicate, as reload would say.
    clash = validate(client, {"files": {"new.yaml": "rules:\n  - {id: greet, on: lead.updated}\n"}})
    assert [e["message"].split(" (")[0] for e in clash["errors"]] == ["duplicate rule id 'greet'"]
    assert {e["file"] for e in clash["errors"]} <= {"new.yaml", "rules.yaml"}

    # The same text as on disk is the running version: the very naming and compiler reload uses.
    running = client.get("/admin/rules").json["version"]
    same = validate(client, {"files": {"rules.yaml": RULES}})
    assert same == {"errors": [], "warnings": [], "rules": 1, "version": running}
    assert validate(client, {"files": {}}) == same
    edited = validate(client, {"path": "rules.yaml", "text": DRAFT})
    assert edited["errors"] == [] and edited["rules"] == 2 and edited["version"] != running
    nested = validate(client, {"files": {"team/sales.yml": "rules:\n  - {id: Bad Id, on: lead.created}\n"}})
    assert [(e["file"], e["line"], e["path"]) for e in nested["errors"]] == [("team/sales.yml", 2, "id")]
    assert (settings.rules_dir / "rules.yaml").read_text() == RULES  # nothing written
    assert sorted(p.name for p in settings.rules_dir.rglob("*")) == ["rules.yaml"]


def test_validate_refuses_a_path_that_is_not_a_rule_file_inside_rules_dir(editor, tmp_path: Path) -> None:
    client, settings = editor
    outside = tmp_path / "outside"
    outside.mkdir()
    (settings.rules_dir / "link").symlink_to(outside)
    for path in ["../x.yaml", "/etc/x.yaml", "a/../../x.yaml", "x.txt", "x", "", ".yaml", "./x.yaml", "a//x.yaml",
                 "x.yaml/", "a\\x.yaml", "x\x00.yaml", "x\udcff.yaml", "link/x.yaml", 7, None, ["x.yaml"]]:  # fmt: skip
        answer = client.post("/admin/validate", data=json.dumps({"path": path, "text": "rules: []"}),
                             content_type="application/json")  # fmt: skip
        assert answer.status_code == 400 and answer.json["error"] == PATH_REFUSED, (path, answer.text)
    answer = client.post("/admin/validate", json={"files": {"ok.yaml": "rules: []", "../x.yaml": "rules: []"}})
    assert answer.status_code == 400 and answer.json["error"] == PATH_REFUSED
    answer = client.post("/admin/dry-runs", json={"files": {"../x.yaml": "rules: []"}})
    assert answer.status_code == 400 and answer.json["error"] == PATH_REFUSED


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def test_validate_answers_any_body_with_a_sentence_never_a_500(editor) -> None:
    client, _ = editor
    bodies: list[bytes] = [b"", b"nope", b"[]", b'"text"', b"null", b"{}", b"\xff\xfe\x00", b"[" * 100_000,
                           b'{"files": ' * 50_000, json.dumps({"files": []}).encode(),
                           json.dumps({"files": {"a.yaml": 5}}).encode(), json.dumps({"path": "a.yaml"}).encode(),
                           json.dumps({"files": {}, "path": "a.yaml", "text": ""}).encode()]  # fmt: skip
    rng = random.Random(14)
    bodies += [rng.randbytes(rng.randint(1, 2000)) for _ in range(200)]
    for body in bodies:
        answer = client.post("/admin/validate", data=body, content_type="application/json")
        assert answer.status_code == 400 and answer.json["error"], (body[:40], answer.text)
    texts = [BILLION_LAUGHS, "rules:\n" + "  - " * 5000 + "x", "[" * 10_000 + "]" * 10_000, "{" * 10_000,
             "rules:\n  - id: x\n    on: lead.created\n" * 20_000, "\t- tab", "rules: !!python/object:os.system x",
             "\x00\x01", "rules:\n  - id: a\ud800b", "\udcff",
             "rules:\n  - id: " + "é" * 150_000]  # fmt: skip
    for text in texts:
        answer = validate(client, {"path": "fuzz.yaml", "text": text})
        assert answer["errors"] and all(set(e) >= ERROR_KEYS for e in answer["errors"]), text[:40]
    half = validate(client, {"files": {"a.yaml": "rules:\n  - id: a\ud800b\n"}})["errors"]
    assert [(e["file"], e["line"], e["column"], e["message"]) for e in half] == [
        ("a.yaml", 2, 10, "half a character ('\\ud800') that no file can hold")]  # fmt: skip
    for endpoint in ("/admin/simulate", "/admin/dry-runs"):  # JSON too deep to parse: a 400, not a 500
        assert client.post(endpoint, data=b"[" * 100_000, content_type="application/json").status_code == 400
    huge = client.post("/admin/validate", json={"path": "big.yaml", "text": "#" * (2 * 1024 * 1024)})
    assert huge.status_code == 413 and huge.json["error"] == "the body is larger than 1 MiB"


@hypothesis_settings(max_examples=150, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(text=st.text(st.sampled_from("rules:- id{}[]&*!|>'\"#\n\t :,x.é\\$%") | st.characters(), max_size=300))
def test_any_typed_text_gets_errors_with_positions_or_none(editor, text: str) -> None:
    client, _ = editor
    answer = validate(client, {"path": "typed.yaml", "text": text})
    assert all(set(e) >= ERROR_KEYS and e["line"] >= 1 and e["column"] >= 1 for e in answer["errors"])
    assert (answer["version"] is None) == bool(answer["errors"])


def run_workers(settings: Settings, client: redis.Redis) -> None:
    build_worker(settings, client).work(burst=True)


def test_a_dry_run_lists_per_rule_the_events_whose_outcome_changes_and_changes_nothing(
    editor, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, settings = editor
    monkeypatch.setattr(dry_runs, "CHUNK", 2)  # 5 events: 3 jobs, each queued behind what arrived meanwhile
    youtube = [post_event(client, f"Y-{n}") for n in range(2)]
    tiki = [post_event(client, f"T-{n}", source="Tiki") for n in range(3)]
    run_workers(settings, redis_client)
    running = client.get("/admin/rules").json["version"]

    started = client.post("/admin/dry-runs", json={"files": {"rules.yaml": DRAFT}, "events": 1000})
    assert started.status_code == 202 and started.json["status"] == "queued"
    run_id = started.json["id"]
    queued = client.get(f"/admin/dry-runs/{run_id}").json
    assert (queued["status"], queued["done"], queued["drafts"]) == ("queued", 0, ["rules.yaml"])
    late = post_event(client, "Y-late")  # arrives after the dry run was queued: the worker takes it first

    run_workers(settings, redis_client)
    report = client.get(f"/admin/dry-runs/{run_id}").json
    assert report["status"] == "finished" and report["error"] is None, report
    assert (report["events"], report["total"], report["done"], report["compared"], report["skipped"]) == (
        1000, 6, 6, 6, 0)  # fmt: skip
    assert report["running"] == running and report["candidate"] == validate(client, {"files": {
        "rules.yaml": DRAFT}})["version"]  # fmt: skip
    rules = {row["id"]: row for row in report["rules"]}
    assert [row["id"] for row in report["rules"]] == ["greet", "vip"]
    vip, greet = rules["vip"], rules["greet"]
    assert (vip["in_draft"], vip["in_running"], vip["matched"], vip["matched_before"], vip["changed"]) == (
        True, False, 3, 0, 3)  # fmt: skip
    assert {e["id"] for e in vip["events"]} == {*youtube, late}
    assert all((e["before"], e["after"], e["type"]) == (False, True, "lead.created") for e in vip["events"])
    assert (greet["matched"], greet["matched_before"], greet["changed"]) == (0, 6, 6)
    assert {e["id"] for e in greet["events"]} == {*youtube, *tiki, late}
    assert all(e["received_at"] for e in greet["events"]) and greet["file"].endswith("rules.yaml")

    # A replay reads only what it needs of each event (not its trace): the very context the worker saw.
    stored = EventStore(redis_client)
    replayed = [*youtube, *tiki, late]
    for event_id, partial in zip(replayed, dry_runs.load_for_replay(redis_client, replayed), strict=True):
        whole = stored.load(event_id)
        assert partial is not None and whole is not None and partial.context == whole.context
        assert (partial.status, partial.body, partial.type) == (whole.status, whole.body, whole.type)

    # A retried job whose chunk is done counts nothing twice; nothing went live, nothing was sent.
    dry_runs.run_chunk(run_id, 0)
    redis_client.hset(f"hr:dry-run:{run_id}", "status", "running")  # as if the run were still going
    dry_runs.run_chunk(run_id, 0)  # a chunk two behind: its work is in the tally already
    assert client.get(f"/admin/dry-runs/{run_id}").json["rules"] == report["rules"]
    assert redis_client.llen("rq:queue:drafts") == 0
    assert client.get("/admin/rules").json["version"] == running
    assert redis_client.llen("rq:queue:actions") == 0
    assert 0 < redis_client.ttl(f"hr:dry-run:{run_id}") <= dry_runs.TTL_SECONDS


def test_a_rule_removed_by_the_draft_is_listed_with_what_it_no_longer_matches(
    editor, redis_client: redis.Redis
) -> None:
    client, settings = editor
    event_id = post_event(client, "L-1")
    run_workers(settings, redis_client)
    run_id = client.post("/admin/dry-runs", json={"path": "rules.yaml", "text": "rules: []\n", "events": 5}).json["id"]
    run_workers(settings, redis_client)
    report = client.get(f"/admin/dry-runs/{run_id}").json
    [greet] = report["rules"]
    assert (greet["id"], greet["in_draft"], greet["in_running"], greet["matched"], greet["changed"]) == (
        "greet", False, True, 0, 1)  # fmt: skip
    assert greet["events"] == [{"id": event_id, "type": "lead.created", "received_at": greet["events"][0][
        "received_at"], "entity_id": "L-1", "before": True, "after": False}]  # fmt: skip


def test_a_dry_run_is_refused_with_the_errors_of_a_broken_draft_and_fails_visibly(
    editor, redis_client: redis.Redis
) -> None:
    client, settings = editor
    broken = client.post("/admin/dry-runs", json={"path": "rules.yaml", "text": "rules:\n  - {id: x, on: lead.creatd}"})
    assert broken.status_code == 400 and broken.json["error"] == "1 error(s) in the draft; nothing was run"
    assert broken.json["errors"][0]["file"] == "rules.yaml" and set(broken.json["errors"][0]) >= ERROR_KEYS
    for events in (0, 10_001, "10", True, 1.5):
        answer = client.post("/admin/dry-runs", json={"files": {}, "events": events})
        assert answer.status_code == 400 and "events must be a whole number from 1 to 10000" in answer.json["error"]
    for unknown in ("0123456789abcdef", "nope", "../../x", "A" * 500):
        assert client.get(f"/admin/dry-runs/{unknown}").status_code == 404
    assert redis_client.llen("rq:queue:drafts") == 0

    # A draft whose text is damaged in Redis before a worker reads it: failed, with why, not running for ever.
    post_event(client, "L-1")
    run_id = client.post("/admin/dry-runs", json={"files": {}}).json["id"]
    redis_client.hset(f"hr:dry-run:{run_id}", "texts", "{not json")
    run_workers(settings, redis_client)
    report = client.get(f"/admin/dry-runs/{run_id}").json
    assert report["status"] == "failed" and "damaged" in report["error"] and report["finished_at"]
