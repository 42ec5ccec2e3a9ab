"""Edges of the fault handling of issue 11, found by an adversarial review; each test breaks a promise on purpose.

Deleting a failed delay, Redis full at the moment an answer must be recorded, a
retry of a trimmed event, a secret split by the trace cut, damaged records and
events, events left by 0.1, and delays keeping their own copy of the context.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from engine.runtime import context as worker_context
from engine.runtime import delivery
from engine.runtime.action_state import DUE_ACTIONS, first_job_id
from engine.runtime.events import FINISHED_EVENTS
from engine.runtime.retention import Retention
from engine.runtime.worker import build_worker
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.deployment import Deployment
from tests.helpers import let_redis_time_pass, wait_for
from tests.integration.test_action_faults import lead, process_events_only
from tests.stubs import Answer, stub_server

CRM_RULE = """
rules:
  - id: crm
    on: lead.created
    then:
      - webhook: {url: "http://127.0.0.1:{{ lead.port }}/crm", json: {id: "{{ lead.id }}"}}
"""
LOG_RULE = "rules:\n  - {id: crm, on: lead.created, then: [{log: x}]}\n"


def _status(deployment: Deployment, identifier: str) -> str | None:
    raw = deployment.client.hget(f"hr:action:{identifier}", "status")
    return raw.decode() if raw else None


# (c)/(d) ---------------------------------------------------------------------------------------
def test_deleting_a_failed_delay_drops_what_waited_behind_it_and_the_event_can_finish(deploy) -> None:
    """A delay whose worker died past max_attempts is a dead letter; the admin deletes it: what waited behind it is
    dropped with a note, so the event finishes and leaves by retention."""
    deployment = deploy("""
        rules:
          - id: later
            on: lead.created
            then:
              - delay: 1s
              - webhook: {url: "http://127.0.0.1:{{ lead.port }}/later", json: {id: "{{ lead.id }}"}}
    """, "retention: 1s\n", delivery="{max_attempts: 1, backoff: 0.2s, max_backoff: 0.2s}")  # fmt: skip
    event_id = deployment.post("lead.created", lead(1))
    process_events_only(deployment, event_id)
    context = worker_context.current()
    delay_id, follower_id = f"{event_id}:later:0", f"{event_id}:later:1"
    # The delay's job starts (it claims the delay) and its worker dies: the lease runs out.
    assert context.actions.claim(delay_id, first_job_id(delay_id), lease_ms=1) == "claimed"
    let_redis_time_pass(deployment.client, 0.01)
    deployment.client.zadd(DUE_ACTIONS, {delay_id: 0})
    assert delivery.rescue_actions(context)["failed"] == 1
    # The admin deletes the dead letter.
    assert deployment.admin("DELETE", f"/admin/failed/{delay_id}").status_code == 200
    assert deployment.admin("GET", "/admin/failed").json()["failed"] == []  # nothing left for the admin to see
    let_redis_time_pass(deployment.client, 1.1)
    Retention(deployment.client, retention=1).trim(max_events=1000)
    # What must hold: the follower was dropped (with a note) and the event finished, then trimmed.
    assert _status(deployment, follower_id) != "scheduled", "follower left scheduled with nothing to move it"
    assert deployment.client.zscore(FINISHED_EVENTS, event_id) is not None or not deployment.client.exists(
        f"hr:event:{event_id}"), "event never finished: retention keeps it for ever"


# (b) ------------------------------------------------------------------------------------------
def test_a_delivery_answered_while_redis_is_full_is_recorded_and_never_sent_again(deploy) -> None:
    """Redis reaches maxmemory while the partner thinks (the receiver keeps writing events): its 200 is
    recorded all the same, so the sweeper has nothing to send again."""
    deployment = deploy(CRM_RULE)
    client = deployment.client
    with stub_server() as crm:
        crm.default = Answer(200, hold=0.5)
        event_id = deployment.post("lead.created", lead(crm.port))
        process_events_only(deployment, event_id)
        [job_id] = client.lrange("rq:queue:actions", 0, -1)
        client.delete("rq:queue:actions")  # we run this job's turn ourselves, below
        identifier = f"{event_id}:crm:0"

        def fill_redis() -> None:  # while the partner thinks, Redis reaches maxmemory
            wait_for(lambda: crm.requests, what="the request to reach the partner")
            client.config_set("maxmemory", 1)

        filler = threading.Thread(target=fill_redis)
        filler.start()
        try:
            assert delivery.deliver(worker_context.current(), identifier, job_id.decode()) == ("done", "webhook")
        finally:
            filler.join()
            client.config_set("maxmemory", 0)
        assert _status(deployment, identifier) == "done"
        assert client.zscore(DUE_ACTIONS, identifier) is None  # nothing for the sweeper to take up
        assert len(crm.successes) == 1


# (d) ------------------------------------------------------------------------------------------
def test_hanas_retry_of_a_trimmed_event_is_a_duplicate_that_leaves_nothing_behind(deploy) -> None:
    """A finished event trimmed within Hana's 10-minute retry window: the retry is still a duplicate, and no half
    event hash is written for it."""
    deployment = deploy("""
        rules:
          - id: other
            on: opportunity.created
            then: [{log: "x"}]
    """, "retention: 1s\n")  # fmt: skip
    body = {"application": {"id": SHOP_A}, "lead": {"id": "L1", "baseName": "Toan"}}
    event_id = deployment.post("lead.created", body)
    deployment.run_burst()
    assert deployment.client.zscore(FINISHED_EVENTS, event_id) is not None
    Retention(deployment.client, retention=1).forget([event_id])  # as the cap or memory pressure would
    retry = requests.post(f"{deployment.url}/hooks/lead.created", params={"token": SHOP_A_TOKEN}, json=body,
                          timeout=10)  # Hana retries it
    assert retry.json() == {"status": "duplicate", "event_id": event_id}
    let_redis_time_pass(deployment.client, 1.1)
    Retention(deployment.client, retention=1).trim(max_events=1)
    leftover = deployment.client.hgetall(f"hr:event:{event_id}")
    assert leftover == {}, f"half event hash kept for ever: {leftover}"


# (f) ------------------------------------------------------------------------------------------
def test_a_secret_split_by_the_trace_cut_is_never_shown_in_part(deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Traced values are masked before they are cut at 256 characters: a secret the cut would split never shows
    its first characters."""
    secret = "Zq9SecretPromoCode-0042-ABCDEFGH"
    monkeypatch.setenv("PROMO", secret)
    deployment = deploy("""
        rules:
          - id: promo
            on: lead.created
            when: {field: lead.note, contains: "${PROMO}"}
            then: [{log: "promo"}]
    """)  # fmt: skip
    note = "x" * 250 + secret + "y" * 40
    event_id = deployment.post("lead.created", {"application": {"id": SHOP_A}, "lead": {"id": "L1", "note": note}})
    deployment.run_burst()
    shown = deployment.admin("GET", f"/admin/events/{event_id}").text
    stored = deployment.client.hget(f"hr:event:{event_id}", "evaluation").decode()
    simulated = deployment.admin("POST", "/admin/simulate", json={
        "event_type": "lead.created", "payload": {"application": {"id": SHOP_A}, "lead": {"id": "L1", "note": note}},
    }).text  # fmt: skip
    leaked = secret[:6]
    assert leaked not in stored and leaked not in shown and leaked not in simulated, (
        f"the secret's first characters {leaked!r} are stored/shown in the trace")


# (c)/(d)/(e) ----------------------------------------------------------------------------------
def test_a_damaged_record_never_stops_the_sweeper_or_retention(deploy) -> None:
    """A half record in the due index is set aside; the lost job beside it is queued again and retention runs."""
    deployment = deploy(CRM_RULE, "retention: 1s\n")
    client = deployment.client
    with stub_server() as crm:
        # A finished event, older than retention.
        finished = deployment.post("opportunity.created", {"application": {"id": SHOP_A}, "opportunity": {"id": "O1"}})
        deployment.run_burst()
        assert client.zscore(FINISHED_EVENTS, finished) is not None
        # An action whose job was lost.
        event_id = deployment.post("lead.created", lead(crm.port))
        process_events_only(deployment, event_id)
        [job_id] = client.lrange("rq:queue:actions", 0, -1)
        client.delete("rq:queue:actions", b"rq:job:" + job_id)
        client.zadd(DUE_ACTIONS, {f"{event_id}:crm:0": 1})
        # One damaged record (written half by hand, or an older version) is due too.
        client.hset("hr:action:e0:r:0", mapping={"status": "pending", "job": "act-gone", "event_id": "e0"})
        client.zadd(DUE_ACTIONS, {"e0:r:0": 0})
        let_redis_time_pass(client, 1.1)
        worker = build_worker(deployment.settings, client)
        worker.clean_registries()
        worker.clean_registries()
        assert not client.exists(f"hr:event:{finished}"), "retention never runs again"
        assert client.llen("rq:queue:actions") == 1, "the lost job is never queued again"


def test_admin_retry_of_a_damaged_dead_letter_says_to_delete_it(deploy) -> None:
    deployment = deploy(LOG_RULE)
    deployment.client.hset("hr:action:e0:r:0", mapping={"status": "failed", "event_id": "e0", "kind": "webhook"})
    deployment.client.zadd("hr:dead", {"e0:r:0": time.time()})
    assert deployment.admin("GET", "/admin/failed").status_code == 200
    answer = deployment.admin("POST", "/admin/failed/e0:r:0/retry")
    assert answer.status_code != 500, answer.text


# (a) ------------------------------------------------------------------------------------------
def test_an_event_left_by_0_1_stays_until_its_last_adopted_action_ends(deploy) -> None:
    """0.1 kept no count of open actions: adopting them counts them, so the first to end does not finish the event
    (and let the cap remove the other, still waiting)."""
    deployment = deploy(LOG_RULE)
    client = deployment.client
    with stub_server() as crm:
        crm.answer(200, 503)
        event_id = "0000000000000100000000aa"
        listing = [{"rule": "crm", "index": i, "kind": "webhook", "status": "pending", "attempts": []} for i in (0, 1)]
        client.hset(f"hr:event:{event_id}", mapping={
            "type": "lead.created", "received_at": "2026-01-01T00:00:00Z", "status": "done",
            "body": json.dumps(lead(crm.port)), "application_id": SHOP_A, "entity_id": "L1",
            "actions": json.dumps(listing), "matched": '["crm"]',
        })  # fmt: skip
        client.expire(f"hr:event:{event_id}", 7 * 86400)
        client.zadd("hr:events", {event_id: 1})
        for index in (0, 1):
            client.hset(f"hr:action:{event_id}:crm:{index}", mapping={
                "event_id": event_id, "rule": "crm", "index": index, "kind": "webhook", "status": "pending",
                "payload": json.dumps({"url": f"{crm.url}/p{index}", "json": {"n": index}}),
                "application_id": SHOP_A, "entity_key": f"{SHOP_A}:lead:L1", "attempts": "[]", "attempt_base": 0,
                "error": "", "created_at": "2026-01-01T00:00:00Z",
            })  # fmt: skip
        worker_context.configure(deployment.settings, client)
        assert delivery.adopt_legacy_actions(worker_context.current()) == 2
        deployment.run_burst()  # one delivered, one answered 503: waiting to retry
        assert sorted(_status(deployment, f"{event_id}:crm:{i}") for i in (0, 1)) == ["done", "waiting"]
        Retention(client, retention=7 * 86400).trim(max_events=0)  # the cap, with newer events around
        assert {_status(deployment, f"{event_id}:crm:{i}") for i in (0, 1)} >= {"waiting"}, (
            "the waiting action's record was removed with its 'finished' event")


# memory (issue point 8) -----------------------------------------------------------------------
def test_delays_keep_no_copy_of_their_events_context(deploy) -> None:
    """A delay renders what follows it from its event's context, rebuilt from the body: five delayed rules store the
    body no more times."""
    rules = "rules:\n" + "".join(f"""
  - id: later{n}
    on: lead.created
    then:
      - delay: 1h
      - log: "later {{{{ lead.id }}}}"
""" for n in range(5))
    deployment = deploy(rules)
    big = "Nguyễn " * 30_000  # ~200 KB
    event_id = deployment.post("lead.created", {"application": {"id": SHOP_A}, "lead": {"id": "L1", "note": big}})
    process_events_only(deployment, event_id)
    body_size = deployment.client.hstrlen(f"hr:event:{event_id}", "body")
    stored = sum(deployment.client.hstrlen(key, "context") for key in deployment.client.scan_iter("hr:action:*"))
    assert stored < 2 * body_size, f"delay contexts hold {stored / body_size:.1f}x the body"


# (e) ------------------------------------------------------------------------------------------
def test_a_damaged_event_is_shown_never_a_500(deploy) -> None:
    """Events are read tolerantly, like action records: a field written half shows as damaged."""
    deployment = deploy(LOG_RULE)
    event_id = deployment.post("lead.created", {"application": {"id": SHOP_A}, "lead": {"id": "L1"}})
    deployment.run_burst()
    deployment.client.hset(f"hr:event:{event_id}", "previous", "{not json")
    detail = deployment.admin("GET", f"/admin/events/{event_id}")
    deployment.client.hset(f"hr:event:{event_id}", "matched", "{not json")
    listing = deployment.admin("GET", "/admin/events")
    assert (detail.status_code, listing.status_code) == (200, 200)
