"""Last known state, per-entity order across worker processes, and throttles (SPEC §5–6)."""

from __future__ import annotations

import json
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

import redis
import requests

from engine.config import Settings
from engine.rules.compiler import compile_texts
from engine.runtime import context as worker_context
from engine.runtime import jobs
from engine.runtime.connection import receiver_client
from engine.runtime.events import WAITING_QUEUES, EventStatus, EventStore
from engine.runtime.state_store import Commit, CommitPlan, StateChange
from engine.runtime.worker import build_worker
from engine.web.app import create_app
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.helpers import live_server, wait_for, worker_processes


def rule_file(tmp_path: Path, yaml: str) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "rules.yaml").write_text(textwrap.dedent(yaml))
    return rules


def post(url: str, event_type: str, lead: dict) -> str:
    body = {"application": {"id": SHOP_A}, "lead": {k: {"nomalizeData": v, "rawData": v} for k, v in lead.items()}}
    answer = requests.post(f"{url}/hooks/{event_type}", params={"token": SHOP_A_TOKEN}, json=body, timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
    return answer.json()["event_id"]


def stored(client: redis.Redis, event_id: str) -> dict:
    raw = {k.decode(): v.decode() for k, v in client.hgetall(f"hr:event:{event_id}").items() if k != b"body"}
    for name in ("matched", "evaluation", "actions", "warnings"):
        if name in raw:
            raw[name] = json.loads(raw[name])
    raw["context"] = EventStore(client).load(event_id).context  # what the rules saw, as the admin API shows it
    return raw


def state_of(client: redis.Redis, lead_id: str) -> dict | None:
    raw = client.get(f"hr:state:{SHOP_A}:lead:{lead_id}")
    return json.loads(raw) if raw else None


def worker_config(tmp_path: Path, rules: Path) -> Path:
    config = tmp_path / "hana-rules.yaml"
    application = f"{{id: {SHOP_A}, name: Shop A, webhook_token: {SHOP_A_TOKEN}}}"
    config.write_text(f"rules_dir: {rules}\ndata_dir: {tmp_path / 'var'}\napplications:\n  - {application}\n")
    return config


STATUS_RULES = """
rules:
  - id: activated
    on: lead.updated
    when:
      changed: lead.baseFunnelStatus
      to: actived
    then:
      - log: "{{ previous.lead.baseFunnelStatus }} -> {{ lead.baseFunnelStatus }} for {{ lead.baseName }}"
  - id: farewell
    on: lead.deleted
    when: {field: previous.lead.baseName, exists: true}
    then:
      - log: "bye {{ previous.lead.baseName }}"
"""


def test_changed_to_fires_once_updates_merge_and_a_delete_sees_previous(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    rule_set = compile_texts({"rules.yaml": STATUS_RULES})
    app = create_app(settings, connection=receiver_client(settings.redis_url), rule_set=rule_set, drain_journal=False)
    with live_server(app) as url:
        created = post(url, "lead.created", {"id": "L1", "baseName": "Hương", "baseFunnelStatus": "new"})
        activated = post(url, "lead.updated", {"id": "L1", "baseFunnelStatus": "actived"})
        unchanged = post(url, "lead.updated", {"id": "L1", "baseFunnelStatus": "actived", "cf_note": "hi"})
        nothing = post(url, "lead.updated", {"id": "L1", "cf_note": "hi"})
        build_worker(settings, redis_client, rule_set=rule_set).work(burst=True)
        assert state_of(redis_client, "L1") == {"id": "L1", "baseName": "Hương", "baseFunnelStatus": "actived",
                                                "cf_note": "hi"}  # fmt: skip
        deleted = post(url, "lead.deleted", {"id": "L1"})
        build_worker(settings, redis_client, rule_set=rule_set).work(burst=True)

    events = {name: stored(redis_client, event_id) for name, event_id in
              [("created", created), ("activated", activated), ("unchanged", unchanged), ("nothing", nothing),
               ("deleted", deleted)]}  # fmt: skip
    assert all(e["status"] == "done" for e in events.values())
    assert [name for name, e in events.items() if "activated" in e["matched"]] == ["activated"]
    assert events["activated"]["actions"][0]["payload"] == "new -> actived for Hương"  # the merged lead
    assert events["activated"]["context"]["changes"] == ["baseFunnelStatus"]
    assert events["unchanged"]["context"]["changes"] == ["cf_note"]
    assert events["nothing"]["context"]["changes"] == []  # an update that changes nothing
    assert events["deleted"]["matched"] == ["farewell"]
    assert events["deleted"]["actions"][0]["payload"] == "bye Hương"
    assert state_of(redis_client, "L1") is None  # removed after the rules ran
    assert redis_client.zcard(WAITING_QUEUES) == 0


def test_four_worker_processes_keep_each_leads_order(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    rules = rule_file(
        tmp_path,
        """
        rules:
          - id: seq-changed
            on: lead.updated
            when: {changed: lead.cf_number_seq}
    """,
    )
    config = worker_config(tmp_path, rules)
    leads, updates = 5, 10
    posted: dict[str, list[str]] = {f"L{k}": [] for k in range(leads)}
    app = create_app(replace(settings, rules_dir=rules), connection=receiver_client(settings.redis_url),
                     drain_journal=False)  # fmt: skip
    with worker_processes(config, settings.redis_url, 4), live_server(app) as url:

        def post_updates(lead_id: str) -> None:
            for seq in range(1, updates + 1):
                posted[lead_id].append(post(url, "lead.updated", {"id": lead_id, "cf_number_seq": seq,
                                                                  "baseName": f"name-{seq // 2}"}))  # fmt: skip

        threads = [threading.Thread(target=post_updates, args=(lead_id,)) for lead_id in posted]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [event_id for ids in posted.values() for event_id in ids]
        wait_for(lambda: all(redis_client.hget(f"hr:event:{i}", "status") == b"done" for i in every), timeout=60,
                 what="4 workers to process 50 events")  # fmt: skip

    workers = {stored(redis_client, i)["processed_by"] for i in every}
    for lead_id, ids in posted.items():
        assert state_of(redis_client, lead_id)["cf_number_seq"] == updates  # the last posted values
        assert state_of(redis_client, lead_id)["baseName"] == f"name-{updates // 2}"
        for seq, event_id in enumerate(ids, start=1):
            context = stored(redis_client, event_id)["context"]
            before = context["previous"].get("lead", {}).get("cf_number_seq")
            assert before == (seq - 1 if seq > 1 else None), f"{lead_id} event {seq} saw {before} before it"
            expected_changes = {"id", "cf_number_seq", "baseName"} if seq == 1 else (
                {"cf_number_seq", "baseName"} if seq % 2 == 0 else {"cf_number_seq"})  # fmt: skip
            assert set(context["changes"]) == expected_changes, (lead_id, seq, context["changes"])
    print(f"events processed by {len(workers)} worker process(es)")


def test_throttle_holds_across_two_worker_processes(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    rules = rule_file(
        tmp_path,
        """
        rules:
          - id: welcome
            on: lead.created
            throttle: {key: "{{ application.id }}", per: 1h, limit: 2}
            then:
              - log: "welcome {{ lead.id }}"
    """,
    )
    config = worker_config(tmp_path, rules)
    app = create_app(replace(settings, rules_dir=rules), connection=receiver_client(settings.redis_url),
                     drain_journal=False)  # fmt: skip
    with worker_processes(config, settings.redis_url, 2), live_server(app) as url:
        ids = [post(url, "lead.created", {"id": f"T{k}"}) for k in range(6)]
        wait_for(lambda: all(redis_client.hget(f"hr:event:{i}", "status") == b"done" for i in ids), timeout=60,
                 what="two workers to process 6 events")  # fmt: skip
    events = [stored(redis_client, i) for i in ids]
    ran = [e for e in events if e["matched"] == ["welcome"]]
    throttled = [e for e in events if e["matched"] == []]
    assert len(ran) == 2 and len(throttled) == 4
    for event in throttled:
        rule = event["evaluation"]["rules"][0]
        assert rule["matched"] is True and "throttled: already ran 2 time(s)" in rule["skipped"]
        assert event["actions"] == []


def test_a_worker_that_lost_its_entity_cannot_apply_a_state_change_twice(
    settings: Settings, redis_client: redis.Redis
) -> None:
    rule_set = compile_texts({"rules.yaml": STATUS_RULES})
    app = create_app(settings, connection=receiver_client(settings.redis_url), rule_set=rule_set, drain_journal=False)
    with live_server(app) as url:
        event_id = post(url, "lead.created", {"id": "L7", "baseName": "An"})
    queue_key, lock_key = f"hr:queue:{SHOP_A}:lead:L7", f"hr:lock:{SHOP_A}:lead:L7"
    # A worker took the entity, evaluated the event … and froze past its lock's expiry.
    redis_client.set(lock_key, "frozen-worker", px=50)
    context = worker_context.configure(settings, redis_client, rule_set)
    assert jobs.drain(context, queue_key) == 0  # busy: the frozen worker still holds it
    wait_for(lambda: not redis_client.exists(lock_key), what="the frozen worker's lock to expire")
    assert jobs.drain(context, queue_key) == 1  # another worker takes over and commits
    assert EventStore(redis_client).load(event_id).status is EventStatus.DONE
    # The frozen worker wakes up and tries to commit what it computed: refused, nothing applied twice.
    late = context.states.commit(
        CommitPlan(change=StateChange.SET, state={"id": "L7", "x": 1}, event_fields={"status": "done"}),
        lock_key=lock_key, token="frozen-worker", queue_key=queue_key, event_key=f"hr:event:{event_id}",
        event_id=event_id, entity_key=f"{SHOP_A}:lead:L7", lock_ttl_ms=1000,
    )  # fmt: skip
    assert late in (Commit.LOST_LOCK, Commit.NOT_HEAD)
    assert state_of(redis_client, "L7") == {"id": "L7", "baseName": "An"}


def test_sweeper_revives_an_entity_queue_nobody_drains(settings: Settings, redis_client: redis.Redis) -> None:
    rule_set = compile_texts({"rules.yaml": STATUS_RULES})
    app = create_app(settings, connection=receiver_client(settings.redis_url), rule_set=rule_set, drain_journal=False)
    with live_server(app) as url:
        first = post(url, "lead.created", {"id": "L8", "baseName": "Bình"})
        second = post(url, "lead.updated", {"id": "L8", "baseFunnelStatus": "actived"})
    redis_client.delete("rq:queue:events")  # its drain job was lost (retries exhausted, say)
    worker_context.configure(settings, redis_client, rule_set)
    assert jobs.sweep_stalled_queues(redis_client, older_than=3600) == 0  # not stalled long enough yet
    assert jobs.sweep_stalled_queues(redis_client, older_than=0) == 1
    build_worker(settings, redis_client, rule_set=rule_set).work(burst=True)
    assert [stored(redis_client, i)["status"] for i in (first, second)] == ["done", "done"]
    assert stored(redis_client, second)["matched"] == ["activated"]
    assert redis_client.zcard(WAITING_QUEUES) == 0
