"""The admin API (SPEC §8) and reloads reaching every process (SPEC §7), with real Redis and workers."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import redis
import requests

from engine.config import Settings
from engine.runtime.connection import receiver_client
from engine.runtime.worker import build_worker
from engine.web.app import create_app
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.helpers import live_server, sample, wait_for, worker_processes

LEAD_ID = "e734c76a-52ca-44f0-a21e8e1fe627c308"  # the sample body's lead
RULES_V1 = """
rules:
  - id: greet
    on: lead.created
    then:
      - log: "v1 hello {{ lead.baseName }}"
"""
RULES_V2 = """
rules:
  - id: greet
    on: lead.created
    then:
      - log: "v2 hello {{ lead.baseName }}"
  - id: vip
    on: lead.created
    when: {field: lead.baseSourceInput, contains: Youtube}
"""


@pytest.fixture
def admin(settings: Settings, redis_client: redis.Redis, tmp_path: Path):  # noqa: ANN201
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(RULES_V1)
    settings = settings.__class__(**{**settings.__dict__, "rules_dir": rules_dir})
    app = create_app(settings, connection=receiver_client(settings.redis_url), drain_journal=False)
    with live_server(app) as url:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {settings.admin_token}"
        yield url, session, settings, rules_dir


def post(url: str, body: dict) -> str:
    answer = requests.post(f"{url}/hooks/lead.created", params={"token": SHOP_A_TOKEN}, json=body, timeout=10)
    return answer.json()["event_id"]


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer "])
def test_every_admin_endpoint_needs_the_admin_token(admin, header: str | None) -> None:
    url, _, _, _ = admin
    for method, path in [("get", "/admin/rules"), ("post", "/admin/reload"), ("get", "/admin/events"),
                         ("get", "/admin/failed"), ("post", "/admin/simulate")]:  # fmt: skip
        answer = requests.request(method, url + path, headers={"Authorization": header} if header else {}, timeout=10)
        assert answer.status_code == 401 and "admin token" in answer.json()["error"]


def test_rules_simulate_events_detail_and_replay(admin, redis_client: redis.Redis) -> None:
    url, session, settings, _ = admin
    rules = session.get(f"{url}/admin/rules").json()
    [rule] = rules["rules"]
    assert rule["file"].endswith("rules.yaml")
    assert {k: v for k, v in rule.items() if k != "file"} == {
        "id": "greet", "name": "greet", "enabled": True, "on": ["lead.created"], "line": 3, "priority": 0,
        "matched": 0, "failed": 0, "applications": None, "last_matched": None,
    }  # fmt: skip
    simulated = session.post(f"{url}/admin/simulate", json={"event_type": "lead.created", "payload": sample()}).json()
    assert simulated["matched"] == ["greet"]
    assert simulated["rules"][0]["actions"][0]["payload"] == "v1 hello Toan Truyen"
    assert session.post(f"{url}/admin/simulate", json={"event_type": "nope"}).status_code == 400

    event_id = post(url, sample())
    build_worker(settings, redis_client).work(burst=True)
    listed = session.get(f"{url}/admin/events", params={"type": "lead.created", "rule": "greet"}).json()["events"]
    assert listed == [{"id": event_id, "type": "lead.created", "received_at": listed[0]["received_at"],
                       "status": "done", "matched": ["greet"], "application_id": SHOP_A,
                       "entity_id": LEAD_ID}]  # fmt: skip
    by_lead = session.get(f"{url}/admin/events", params={"entity": LEAD_ID}).json()["events"]
    assert [e["id"] for e in by_lead] == [event_id]
    assert session.get(f"{url}/admin/events", params={"entity": "someone-else"}).json()["events"] == []
    assert session.get(f"{url}/admin/events", params={"status": "quarantined"}).json()["events"] == []
    detail = session.get(f"{url}/admin/events/{event_id}").json()
    assert detail["body"] == sample() and detail["context"]["lead"]["baseName"] == "Toan Truyen"
    assert detail["version"] == rules["version"] and detail["echo"] is False
    assert detail["rules"][0]["id"] == "greet"
    assert detail["actions"] == [{"rule": "greet", "index": 0, "kind": "log", "status": "done", "error": None,
                                  "attempts": detail["actions"][0]["attempts"]}]  # fmt: skip
    assert detail["actions"][0]["attempts"][0]["status_code"] == 0
    assert session.get(f"{url}/admin/rules").json()["rules"][0]["matched"] == 1

    replayed = session.post(f"{url}/admin/events/{event_id}/replay").json()
    assert replayed["status"] == "accepted" and replayed["replay_of"] == event_id and replayed["event_id"] != event_id
    build_worker(settings, redis_client).work(burst=True)
    assert session.get(f"{url}/admin/events/{replayed['event_id']}").json()["matched"] == ["greet"]
    assert session.get(f"{url}/admin/events/nope").status_code == 404


def test_reload_reaches_a_worker_in_another_process_before_its_next_event(
    admin, redis_client: redis.Redis, tmp_path: Path
) -> None:
    url, session, settings, rules_dir = admin
    config = tmp_path / "hana-rules.yaml"
    application = f"{{id: {SHOP_A}, name: Shop A, webhook_token: {SHOP_A_TOKEN}}}"
    config.write_text(f"rules_dir: {rules_dir}\ndata_dir: {tmp_path / 'var'}\napplications:\n  - {application}\n")
    assert session.post(f"{url}/admin/reload").json()["rules"] == 1
    with worker_processes(config, settings.redis_url, 1):
        first = post(url, sample())
        wait_for(lambda: _action_payload(redis_client, first) == "v1 hello Toan Truyen", what="v1 at work")
        (rules_dir / "rules.yaml").write_text(RULES_V2)
        reloaded = session.post(f"{url}/admin/reload").json()
        assert reloaded["rules"] == 2
        second = post(url, sample() | {"lead": {**sample()["lead"], "id": {"nomalizeData": "L-2"}}})
        wait_for(lambda: redis_client.hget(f"hr:event:{second}", "status") == b"done", what="the next event")
    assert json.loads(redis_client.hget(f"hr:event:{second}", "matched")) == ["greet", "vip"]
    assert redis_client.hget(f"hr:event:{second}", "version").decode() == reloaded["version"]
    assert _action_payload(redis_client, second) == "v2 hello Toan Truyen"


def _action_payload(client: redis.Redis, event_id: str) -> str | None:
    raw = client.hget(f"hr:action:{event_id}:greet:0", "payload")
    return json.loads(raw) if raw else None


def test_a_broken_reload_is_refused_and_the_old_set_keeps_acting(admin, redis_client: redis.Redis) -> None:
    url, session, settings, rules_dir = admin
    before = session.post(f"{url}/admin/reload").json()["version"]
    (rules_dir / "rules.yaml").write_text(
        textwrap.dedent("""
        rules:
          - id: greet
            on: lead.created
            when: {field: lead.baseName, equal: x}
    """)
    )
    refused = session.post(f"{url}/admin/reload")
    assert refused.status_code == 422
    [problem] = refused.json()["errors"]
    assert problem["rule"] == "greet" and "did you mean 'equals'" in problem["text"]
    assert session.get(f"{url}/admin/rules").json()["version"] == before
    event_id = post(url, sample())
    build_worker(settings, redis_client).work(burst=True)
    assert redis_client.hget(f"hr:event:{event_id}", "version").decode() == before
    assert _action_payload(redis_client, event_id) == "v1 hello Toan Truyen"


def test_failed_endpoints_list_retry_and_delete(admin, redis_client: redis.Redis) -> None:
    url, session, settings, rules_dir = admin
    (rules_dir / "rules.yaml").write_text(
        "rules:\n  - id: update\n    on: lead.created\n    then:\n      - hana_update: {lead: {id: '{{ lead.id }}'}}\n"
    )
    session.post(f"{url}/admin/reload")
    event_id = post(url, sample())
    build_worker(settings, redis_client).work(burst=True)  # no update URL configured: fails at once
    [letter] = session.get(f"{url}/admin/failed").json()["failed"]
    assert letter["event_id"] == event_id and "no hana_update_url" in letter["error"]
    assert set(letter) >= {"id", "event_id", "rule", "kind", "error", "attempts", "request", "response"}
    assert session.post(f"{url}/admin/failed/{letter['id']}/retry").json()["status"] == "queued"
    build_worker(settings, redis_client).work(burst=True)  # fails again, back in the dead letters
    assert session.delete(f"{url}/admin/failed/{letter['id']}").json()["status"] == "deleted"
    assert session.get(f"{url}/admin/failed").json()["failed"] == []
    assert session.delete(f"{url}/admin/failed/{letter['id']}").status_code == 404


def test_events_cli_lists_shows_and_replays_through_the_admin_api(admin, redis_client: redis.Redis) -> None:
    import subprocess
    import sys

    url, _, settings, rules_dir = admin
    config = rules_dir.parent / "cli.yaml"
    application = f"{{id: {SHOP_A}, name: Shop A, webhook_token: {SHOP_A_TOKEN}}}"
    config.write_text(f"rules_dir: {rules_dir}\ndata_dir: {settings.data_dir}\nadmin_token: {settings.admin_token}\n"
                      f"applications:\n  - {application}\n")  # fmt: skip
    event_id = post(url, sample())
    build_worker(settings, redis_client).work(burst=True)

    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "engine.cli", "events", *arguments, "--url", url, "--config", str(config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    listed = cli("list", "--rule", "greet")
    assert listed.returncode == 0, listed.stderr
    assert event_id in listed.stdout and "done" in listed.stdout and "greet" in listed.stdout
    shown = cli("show", event_id)
    assert "✓ greet" in shown.stdout and "→ greet#0 log: done" in shown.stdout
    replayed = cli("replay", event_id)
    assert replayed.returncode == 0 and f"replayed {event_id} as " in replayed.stdout
    missing = cli("show", "nope")
    assert missing.returncode == 1 and "no event 'nope'" in missing.stderr and "Traceback" not in missing.stderr


def test_dry_run_reports_rules_gained_and_lost_per_event_and_changes_nothing(admin, redis_client: redis.Redis) -> None:
    url, session, settings, rules_dir = admin
    session.post(f"{url}/admin/reload")
    youtube = post(url, sample())
    other = sample()
    other["lead"]["id"] = {"nomalizeData": "L-9"}
    other["lead"]["baseSourceInput"] = {"nomalizeData": ["Tiki"]}
    tiki = post(url, other)
    build_worker(settings, redis_client).work(burst=True)
    running = session.get(f"{url}/admin/rules").json()["version"]
    (rules_dir / "rules.yaml").write_text(
        RULES_V2.replace("id: greet\n    on: lead.created", "id: greet\n    on: lead.updated")
    )
    report = session.post(f"{url}/admin/reload", json={"dry_run": True}).json()
    assert report["running"] == running and report["events"] == 2 and report["rules"] == 2
    changes = {entry["id"]: (entry["gained"], entry["lost"]) for entry in report["changed"]}
    assert changes == {youtube: (["vip"], ["greet"]), tiki: ([], ["greet"])}
    assert session.get(f"{url}/admin/rules").json()["version"] == running  # nothing went live
    assert redis_client.llen("rq:queue:actions") == 0  # nothing was sent


def test_reload_cli_goes_live_or_lists_the_errors_and_dry_runs(admin, redis_client: redis.Redis) -> None:
    import subprocess
    import sys

    url, session, settings, rules_dir = admin
    config = rules_dir.parent / "cli.yaml"
    config.write_text(f"rules_dir: {rules_dir}\ndata_dir: {settings.data_dir}\nadmin_token: {settings.admin_token}\n")

    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "engine.cli", "reload", *arguments, "--url", url, "--config", str(config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    (rules_dir / "rules.yaml").write_text(RULES_V2)
    dry = cli("--dry-run")
    assert dry.returncode == 0 and "nothing changed" in dry.stdout
    assert len(session.get(f"{url}/admin/rules").json()["rules"]) == 1  # still v1
    live = cli()
    assert live.returncode == 0 and "is live (2 rules)" in live.stdout
    assert len(session.get(f"{url}/admin/rules").json()["rules"]) == 2
    (rules_dir / "rules.yaml").write_text("rules:\n  - {id: broken, on: lead.creatd}\n")
    refused = cli()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "[broken] on: unknown event type 'lead.creatd'" in refused.stderr
    assert len(session.get(f"{url}/admin/rules").json()["rules"]) == 2  # the running set stays


def test_no_request_fails_and_no_event_is_lost_while_rules_are_reloaded(admin, redis_client: redis.Redis) -> None:
    import threading

    url, session, settings, rules_dir = admin
    answers: list[int] = []
    ids: list[str] = []

    def post_batch(start: int) -> None:
        for number in range(start, start + 12):
            body = sample()
            body["lead"]["id"] = {"nomalizeData": f"S-{number}"}
            answer = requests.post(f"{url}/hooks/lead.created", params={"token": SHOP_A_TOKEN}, json=body, timeout=10)
            answers.append(answer.status_code)
            ids.append(answer.json()["event_id"])

    for version in range(5):
        poster = threading.Thread(target=post_batch, args=(version * 100,))
        poster.start()  # events arrive while the new set is validated, compiled and published
        (rules_dir / "rules.yaml").write_text(RULES_V1.replace("v1 hello", f"reload {version} hello"))
        assert session.post(f"{url}/admin/reload").status_code == 200
        poster.join()
        build_worker(settings, redis_client).work(burst=True)  # the workers pick the version up as they go
    assert answers == [200] * 60
    assert [redis_client.hget(f"hr:event:{event_id}", "status") for event_id in ids] == [b"done"] * 60
    versions = {redis_client.hget(f"hr:event:{event_id}", "version") for event_id in ids}
    assert len(versions) == 5  # each batch ran under the set published during it


def test_a_reload_of_a_file_nested_a_thousand_deep_is_refused_in_one_line_not_a_500(admin) -> None:
    url, session, _, rules_dir = admin
    nested = "[" * 1000 + "]" * 1000
    (rules_dir / "deep.yaml").write_text(f"rules:\n  - id: deep\n    on: lead.created\n    when: {nested}")
    refused = session.post(f"{url}/admin/reload")
    assert refused.status_code == 422
    [entry] = refused.json()["errors"]
    assert entry["file"].endswith("deep.yaml") and "nested more than 50 levels deep" in entry["message"]


def test_each_condition_comes_with_its_sentence_in_the_asked_language(admin, redis_client: redis.Redis) -> None:
    url, session, settings, rules_dir = admin
    (rules_dir / "rules.yaml").write_text(RULES_V2)
    assert session.post(f"{url}/admin/reload").status_code == 200
    event_id = post(url, sample())
    build_worker(settings, redis_client).work(burst=True)
    vietnamese = session.get(f"{url}/admin/events/{event_id}", headers={"Accept-Language": "vi-VN,vi;q=0.9"}).json()
    [vip] = [rule for rule in vietnamese["rules"] if rule["id"] == "vip"]
    assert [c["text"] for c in vip["conditions"]] == ["lead.baseSourceInput có chứa “Youtube”: thấy [Youtube, Sendo] ✓"]
    english = session.post(f"{url}/admin/simulate?lang=en", json={"event_type": "lead.created", "payload": sample()})
    [vip] = [rule for rule in english.json()["rules"] if rule["id"] == "vip"]
    assert vip["conditions"][0]["text"] == "lead.baseSourceInput contains “Youtube”: saw [Youtube, Sendo] ✓"
