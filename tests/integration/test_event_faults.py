"""Events under faults (issue 11): backlogs past retention, missing heads, huge bodies, a full Redis, skewed clocks.

Each test breaks a promise of SPEC §4 and §8 on purpose — what was acknowledged
is processed, exactly once; retention only removes what is finished; the system
recovers by itself — and checks what a user would see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client import REGISTRY

from engine.config import Settings
from engine.rules.compiler import compile_texts
from engine.runtime import jobs
from engine.runtime.connection import receiver_client
from engine.runtime.embedded import EmbeddedRedis
from engine.runtime.retention import Retention, memory_of
from engine.runtime.worker import build_worker
from engine.web.app import create_app
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.helpers import let_redis_time_pass, live_server, wait_for


def post(url: str, event_type: str, lead: dict) -> str:
    answer = requests.post(f"{url}/hooks/{event_type}", params={"token": SHOP_A_TOKEN}, timeout=10,
                           json={"application": {"id": SHOP_A}, "lead": lead})  # fmt: skip
    assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
    return answer.json()["event_id"]


def status(client: redis.Redis, event_id: str) -> str | None:
    value = client.hget(f"hr:event:{event_id}", "status")
    return value.decode() if value else None


def test_a_backlog_older_than_retention_and_past_the_cap_is_processed_whole(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: hello
            on: lead.created
            then: [{log: "hello {{ lead.id }}"}]
    """, "retention: 1s\nmax_events: 2\n")  # fmt: skip
    ids = [deployment.post("lead.created", {"application": {"id": SHOP_A}, "lead": {"id": f"L{n}"}}) for n in range(5)]
    # The workers were down for longer than the retention; maintenance runs first when one starts.
    let_redis_time_pass(deployment.client, 1.5)
    Retention(deployment.client, retention=1).trim(max_events=2)
    assert [status(deployment.client, i) for i in ids] == ["received"] * 5  # nothing unfinished was removed
    deployment.run_burst()
    assert [status(deployment.client, i) for i in ids] == ["done"] * 5
    # Finished, they now leave by retention like any finished event.
    let_redis_time_pass(deployment.client, 1.5)
    assert Retention(deployment.client, retention=1).trim(max_events=2) == 5
    assert deployment.client.zcard("hr:events") == 0 and not deployment.client.keys("hr:action:*")


def test_an_event_whose_action_waits_for_an_admin_outlives_retention(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: update
            on: lead.created
            then:
              - hana_update: {lead: {id: "{{ lead.id }}", cf_string_x: "seen"}}
    """, "retention: 1s\n")  # fmt: skip
    deployment.hana.answer(401)  # a revoked token: the action is parked until an admin acts
    event_id = deployment.post("lead.created", {"application": {"id": SHOP_A}, "lead": {"id": "L1"}})
    deployment.run_burst()
    [action] = deployment.actions(event_id)
    assert action.status == "parked"
    let_redis_time_pass(deployment.client, 1.5)
    retention = Retention(deployment.client, retention=1)
    assert retention.trim(max_events=1) == 0  # parked: its event stays, whatever its age or the cap
    assert deployment.admin("POST", f"/admin/failed/{action.id}/retry").status_code == 200  # token fixed
    deployment.run_burst()
    assert [a.status for a in deployment.actions(event_id)] == ["done"]
    let_redis_time_pass(deployment.client, 1.5)
    assert retention.trim(max_events=1) == 1  # finished now: it goes, with its action record
    assert not deployment.client.exists(f"hr:action:{action.id}")


def test_a_queue_whose_head_is_gone_is_drained_past_it_with_a_note(deploy) -> None:
    deployment = deploy("rules:\n  - {id: hi, on: [lead.created, lead.updated], then: [{log: 'hi {{ lead.id }}'}]}\n")
    first = deployment.post("lead.created", {"application": {"id": SHOP_A}, "lead": {"id": "L1"}})
    second = deployment.post("lead.updated", {"application": {"id": SHOP_A}, "lead": {"id": "L1", "x": 1}})
    deployment.client.delete(f"hr:event:{first}")  # deleted by hand, or lost in a Redis crash
    missing_before = REGISTRY.get_sample_value("hana_rules_events_missing_total") or 0
    deployment.run_burst()
    assert status(deployment.client, second) == "received"  # its job named the missing event
    # A minute later the sweeper finds the queue nobody drains (here: at once) and drains it by name.
    assert jobs.sweep_stalled_queues(deployment.client, older_than=0) == 1
    deployment.run_burst()
    assert status(deployment.client, second) == "done"
    warnings = json.loads(deployment.client.hget(f"hr:event:{second}", "warnings"))
    assert any(first in warning and "were gone when their turn came" in warning for warning in warnings)
    assert REGISTRY.get_sample_value("hana_rules_events_missing_total") == missing_before + 1
    third = deployment.post("lead.updated", {"application": {"id": SHOP_A}, "lead": {"id": "L1", "x": 2}})
    deployment.run_burst()
    assert status(deployment.client, third) == "done"  # the lead is not wedged
    assert not any(first in w for w in json.loads(deployment.client.hget(f"hr:event:{third}", "warnings")))


def test_one_events_story_stays_within_a_small_multiple_of_its_body(deploy) -> None:
    rules = "\n".join(f"""
  - id: r{n}
    on: lead.created
    when:
      - {{field: lead.cf_string_note, contains: "needle{n}"}}
      - {{field: lead.cf_string_note, not_contains: "nothing{n}"}}""" for n in range(20))
    deployment = deploy("rules:" + rules + "\n")
    note = "Khách hàng quen. " * 47_000  # ~0.9 MB of Vietnamese text
    body = {"application": {"id": SHOP_A}, "lead": {"id": "L1", "cf_string_note": note}}
    size = len(json.dumps(body, ensure_ascii=False).encode())
    event_id = deployment.post("lead.created", body)
    deployment.run_burst()
    stored = sum(deployment.client.memory_usage(key, samples=0) for key in deployment.client.scan_iter("hr:*"))
    assert stored < 3 * size, f"{stored / size:.1f}× the body"  # it was 40×: body, state and a trace ≈ 2×
    rules = json.loads(deployment.client.hget(f"hr:event:{event_id}", "evaluation"))["rules"]
    condition = rules[0]["conditions"][0]
    assert len(condition["value"]) == 257 and condition["value_length"] == len(note)


def test_a_full_redis_recovers_by_itself(tmp_path: Path, settings: Settings) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "r.yaml").write_text("rules:\n  - {id: hi, on: lead.created, then: [{log: 'hi {{ lead.id }}'}]}\n")
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        full = replace(settings, redis_url=server.url, rules_dir=rules_dir)
        app = create_app(full, connection=receiver_client(server.url))
        config = tmp_path / "hana-rules.yaml"
        application = f"{{id: {SHOP_A}, name: Shop A, webhook_token: {SHOP_A_TOKEN}}}"
        config.write_text(f"rules_dir: {rules_dir}\ndata_dir: {tmp_path / 'worker'}\n"
                          f"admin_token: x-admin-token-123456\napplications:\n  - {application}\n")  # fmt: skip
        try:
            with live_server(app) as url:
                history = [post(url, "lead.created", {"id": f"old{n}", "note": "x" * 50_000}) for n in range(60)]
                build_worker(full, client).work(burst=True)
                assert {status(client, i) for i in history} == {"done"}
                client.config_set("maxmemory", memory_of(client).used - 256 * 1024)  # Redis is full now
                ready = requests.get(f"{url}/readyz", timeout=10)
                assert ready.status_code == 503 and "Redis is out of memory" in ready.json()["error"]
                new = [post(url, "lead.created", {"id": f"new{n}"}) for n in range(20)]  # still 200: journaled
                assert app.extensions["hana_rules.journal"].depth() > 0
                metrics = requests.get(f"{url}/metrics", timeout=10).text
                assert 'hana_rules_redis_memory_bytes{kind="max"}' in metrics
                environment = {**os.environ, "REDIS_URL": server.url}
                command = [sys.executable, "-m", "engine.cli", "worker", "--config", str(config)]
                worker = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                try:
                    wait_for(lambda: all(status(client, i) == "done" for i in new), timeout=60,
                             what="the journaled events to be processed")  # fmt: skip
                finally:
                    worker.terminate()
                    _, errors = worker.communicate(timeout=30)
                assert b"removed early to make room" in errors
                assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
        finally:
            app.extensions["hana_rules.drainer"].stop()


THROTTLED = """
rules:
  - id: once-a-minute
    on: lead.updated
    throttle: {key: "{{ lead.id }}", per: 1m, limit: 1}
    then: [{log: "at most once a minute"}]
"""


def test_a_worker_whose_clock_runs_a_minute_fast_does_not_free_a_throttle_early(
    deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = deploy(THROTTLED)
    rule_set = compile_texts({"r.yaml": THROTTLED})
    first = deployment.post("lead.updated", {"application": {"id": SHOP_A}, "lead": {"id": "L1", "n": 1}})
    deployment.run_burst(rule_set)
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 61 * 10**9)  # this worker's clock: 61 s ahead
    monkeypatch.setattr(time, "time", lambda: real() / 1e9 + 61)
    second = deployment.post("lead.updated", {"application": {"id": SHOP_A}, "lead": {"id": "L1", "n": 2}})
    deployment.run_burst(rule_set)
    matched = [json.loads(deployment.client.hget(f"hr:event:{i}", "matched")) for i in (first, second)]
    assert matched == [["once-a-minute"], []]  # Redis's clock says seconds passed, not a minute
    rule = json.loads(deployment.client.hget(f"hr:event:{second}", "evaluation"))["rules"][0]
    assert rule["skipped"].startswith("throttled")
