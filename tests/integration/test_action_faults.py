"""Actions under faults (issue 11): odd partners, odd data, jobs run twice, lost jobs, delays across reloads.

Each test breaks a promise of SPEC §6 on purpose — a delivery recorded is never
repeated, every failure is an attempt that follows the delivery rules, no action
is left pending with nothing queued — and checks what a user would see: the
partner's requests, the action's record, the admin API.
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest
import redis
from rq.registry import StartedJobRegistry

from engine.runtime import context as worker_context
from engine.runtime import delivery, jobs
from engine.runtime.action_state import DUE_ACTIONS, GRACE_MS, ActionStore
from engine.runtime.queues import ACTIONS_QUEUE, queue
from tests.conftest import SHOP_A
from tests.deployment import Deployment
from tests.helpers import wait_for
from tests.stubs import Answer, read_request, stub_server, trickle_server

WEBHOOK_RULE = """
rules:
  - id: crm
    on: [lead.created, lead.updated]
    then:
      - webhook:
          url: "http://127.0.0.1:{{ lead.port }}/crm"
          headers: {X-Customer: "{{ lead.baseName }}"}
          json: {id: "{{ lead.id }}"}
"""


def lead(port: int, name: str = "Toan", lead_id: str = "L1", **attributes: object) -> dict:
    return {"application": {"id": SHOP_A}, "lead": {"id": lead_id, "baseName": name, "port": port, **attributes}}


def statuses(deployment: Deployment, event_id: str) -> list[str]:
    return [action.status for action in deployment.actions(event_id)]


def process_events_only(deployment: Deployment, event_id: str) -> None:
    """Process the event (its commit queues its actions' jobs) without running any action yet."""
    worker_context.configure(deployment.settings, deployment.client)
    assert jobs.process_event(event_id) >= 1


def test_a_header_outside_latin1_is_a_dead_letter_in_words_not_a_record_pending_for_ever(deploy) -> None:
    deployment = deploy(WEBHOOK_RULE)
    with stub_server() as crm:
        event_id = deployment.post("lead.created", lead(crm.port, name="Nguyễn Văn 😀"))
        deployment.run_burst()
        assert crm.requests == []  # refused before anything was sent
    [action] = deployment.actions(event_id)
    assert action.status == "failed"
    assert "'X-Customer' holds characters outside Latin-1 (ễ" in action.error and "urlencode" in action.error
    assert len(action.attempts) == 1  # not retried: a rule to fix, not a delivery to repeat
    [letter] = deployment.admin("GET", "/admin/failed").json()["failed"]
    assert letter["id"] == action.id and letter["status"] == "failed"
    assert deployment.client.zcard(DUE_ACTIONS) == 0  # nothing left waiting for a job that will never come


def test_a_2xx_in_an_unknown_charset_is_delivered_once(deploy) -> None:
    deployment = deploy(WEBHOOK_RULE)
    with stub_server() as crm:
        crm.default = Answer(200, {"ok": "đã nhận"}, {"Content-Type": "application/json; charset=utf8mb4"})
        event_id = deployment.post("lead.created", lead(crm.port))
        deployment.run_burst()
        assert len(crm.successes) == 1  # it was four: each read of the answer raised, and RQ ran it again
    [action] = deployment.actions(event_id)
    assert action.status == "done" and [a["status_code"] for a in action.attempts] == [200]
    assert "đã nhận" in action.response["body"]


def test_two_runs_of_one_job_at_once_deliver_once(deploy) -> None:
    deployment = deploy(WEBHOOK_RULE)
    with stub_server() as crm:
        crm.default = Answer(200, hold=1.0)  # both runs are in flight together
        event_id = deployment.post("lead.created", lead(crm.port))
        process_events_only(deployment, event_id)
        [job_id] = deployment.client.lrange("rq:queue:actions", 0, -1)
        deployment.client.rpush("rq:queue:actions", job_id)  # the same job twice (an RQ re-run, say)
        started = StartedJobRegistry(queue=queue(deployment.client, ACTIONS_QUEUE))
        with deployment.workers(2):
            wait_for(lambda: statuses(deployment, event_id) == ["done"], what="the delivery")
            wait_for(lambda: deployment.client.llen("rq:queue:actions") == 0 and started.count == 0,
                     what="both runs to end")  # fmt: skip
        assert len(crm.requests) == 1
    [action] = deployment.actions(event_id)
    assert [a["status_code"] for a in action.attempts] == [200]


def test_an_outcome_whose_reply_was_lost_is_recorded_once(deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failover or a cut connection after Redis ran `finish` but before its reply arrived: the
    worker asks again, and the attempt is still counted once (it was two, with the same time)."""
    deployment = deploy(WEBHOOK_RULE)
    finish = ActionStore.finish
    cut = []

    def finish_then_lose_the_reply(self, *arguments, **options):
        outcome = finish(self, *arguments, **options)
        if not cut:
            cut.append(outcome)
            raise redis.ConnectionError("Connection closed by server.")
        return outcome

    monkeypatch.setattr(ActionStore, "finish", finish_then_lose_the_reply)
    with stub_server() as crm:
        event_id = deployment.post("lead.created", lead(crm.port))
        deployment.run_burst()
        assert len(crm.requests) == 1
    [action] = deployment.actions(event_id)
    assert cut == ["done"] and action.status == "done"
    assert [a["status_code"] for a in action.attempts] == [200]


def test_an_action_whose_job_was_lost_is_queued_again_by_the_sweeper(deploy) -> None:
    deployment = deploy(WEBHOOK_RULE)
    with stub_server() as crm:
        event_id = deployment.post("lead.created", lead(crm.port))
        process_events_only(deployment, event_id)
        [job_id] = deployment.client.lrange("rq:queue:actions", 0, -1)
        deployment.client.delete("rq:queue:actions", b"rq:job:" + job_id)  # lost (a flushed queue, say)
        assert deployment.actions(event_id)[0].status == "pending"
        # A minute later the sweeper looks at it (here: its due time is moved to now).
        [member] = deployment.client.zrange(DUE_ACTIONS, 0, -1)
        deployment.client.zadd(DUE_ACTIONS, {member: 0})
        assert delivery.rescue_actions(worker_context.current())["requeued"] == 1
        deployment.run_burst()
        assert len(crm.successes) == 1
    assert deployment.actions(event_id)[0].status == "done"


def test_an_action_whose_job_a_dead_worker_had_started_is_queued_again(deploy) -> None:
    """A worker that lost Redis between taking a job and claiming its action leaves the job
    `started` (RQ's cleanup calls it abandoned minutes later); once that worker is known dead,
    the sweeper gives the action a new job. A started job of a live worker is left alone."""
    deployment = deploy(WEBHOOK_RULE)
    with stub_server() as crm:
        event_id = deployment.post("lead.created", lead(crm.port))
        process_events_only(deployment, event_id)
        [job_id] = deployment.client.lrange("rq:queue:actions", 0, -1)
        deployment.client.delete("rq:queue:actions")  # taken from the queue...
        deployment.client.hset(b"rq:job:" + job_id, mapping={"status": "started", "worker_name": "w1"})
        deployment.client.hset("rq:worker:w1", mapping={"birth": "2026-12-02T00:00:00Z"})  # ...by a live worker
        sweep = delivery.rescue_actions(worker_context.current(), ahead_ms=GRACE_MS)
        assert sweep == {"queued": 1} and deployment.client.llen("rq:queue:actions") == 0
        deployment.client.hset("rq:worker:w1", "death", "2026-12-02T00:00:01Z")  # which then died
        assert delivery.rescue_actions(worker_context.current(), ahead_ms=GRACE_MS) == {"requeued": 1}
        deployment.run_burst()
        assert len(crm.successes) == 1
    assert deployment.actions(event_id)[0].status == "done"


def test_a_partner_trickling_its_answer_past_the_job_timeout_is_cut_at_the_deadline_then_dead_lettered(
    deploy,
) -> None:
    deployment = deploy(WEBHOOK_RULE, timeout="1s", delivery="{max_attempts: 2, backoff: 0.2s, max_backoff: 0.2s}")
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Padding: " + b"." * 200 + b"\r\n\r\nok"  # 48 s a byte at a time

    def script(connection, server) -> None:  # noqa: ANN001
        read_request(connection)
        server.trickle(connection, head)  # each byte well inside any per-read timeout

    with trickle_server(script) as partner, deployment.workers(1):
        event_id = deployment.post("lead.created", lead(partner.port))
        wait_for(lambda: statuses(deployment, event_id) == ["failed"], timeout=60, what="a dead letter")
        assert partner.connections == 2 and partner.sent < 30  # two attempts, each left at its deadline
    [action] = deployment.actions(event_id)
    assert [a["error"] for a in action.attempts] == ["no complete answer within 1s"] * 2


def test_retry_after_zero_or_garbage_never_shortens_the_backoff(deploy) -> None:
    deployment = deploy(WEBHOOK_RULE, delivery="{max_attempts: 4, backoff: 1s, max_backoff: 1s}")
    with stub_server() as crm:
        crm.answer(Answer(429, headers={"Retry-After": "0"}), Answer(503, headers={"Retry-After": "nan"}),
                   Answer(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), 200)  # fmt: skip
        with deployment.workers(1):
            event_id = deployment.post("lead.created", lead(crm.port))
            wait_for(lambda: statuses(deployment, event_id) == ["done"], timeout=60, what="four attempts")
        gaps = [later.at - earlier.at for earlier, later in zip(crm.requests, crm.requests[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.5  # the backoff's floor: half its 1 s ceiling (jitter)


def test_a_damaged_record_is_shown_as_such_and_can_be_deleted(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: update
            on: lead.created
            then:
              - hana_update: {lead: {id: "{{ lead.id }}", cf_string_x: "{{ lead.baseName }}"}}
    """)
    deployment.hana.default = Answer(400, {"error": "bad attribute"})
    event_id = deployment.post("lead.created", lead(1))
    deployment.run_burst()
    [action] = deployment.actions(event_id)
    # Half records: one written by a late update after its event was trimmed, one with broken JSON.
    deployment.client.hset(f"hr:action:{event_id}:ghost:0", "status", "failed")
    deployment.client.hset(action_key := f"hr:action:{action.id}", "attempts", "{not json")
    deployment.client.zadd("hr:dead", {f"{event_id}:ghost:0": time.time()})
    listed = deployment.admin("GET", "/admin/failed")
    assert listed.status_code == 200
    by_id = {letter["id"]: letter for letter in listed.json()["failed"]}
    assert "lacks event_id, rule, index, kind" in by_id[f"{event_id}:ghost:0"]["damaged"]
    assert by_id[action.id]["damaged"] == "damaged record: attempts is not JSON"
    assert deployment.admin("GET", f"/admin/events/{event_id}").status_code == 200
    assert deployment.admin("DELETE", f"/admin/failed/{event_id}:ghost:0").json()["status"] == "deleted"
    assert not deployment.client.exists(f"hr:action:{event_id}:ghost:0")
    assert deployment.admin("DELETE", f"/admin/failed/{action.id}").status_code == 200
    assert deployment.admin("GET", "/admin/failed").json()["failed"] == []
    assert deployment.client.hget(action_key, "status") == b"purged"


def test_a_partner_echoing_our_key_never_shows_it(deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "partner-key-5ecr3t-0042"
    monkeypatch.setenv("PARTNER_KEY", key)
    deployment = deploy("""
        rules:
          - id: crm
            on: lead.created
            then:
              - webhook:
                  url: "http://127.0.0.1:{{ lead.port }}/crm"
                  headers: {X-Api-Key: "${PARTNER_KEY}"}
                  json: {id: "{{ lead.id }}"}
    """)
    with stub_server() as crm:
        crm.default = Answer(401, {"error": f"unknown key {key}"})
        event_id = deployment.post("lead.created", lead(crm.port))
        deployment.run_burst()
        assert crm.requests[0].headers["x-api-key"] == key  # sent as it is …
    shown = [
        deployment.admin("GET", "/admin/failed").text,
        deployment.admin("GET", f"/admin/events/{event_id}").text,
        deployment.cli("failed", "list").stdout,
        deployment.cli("failed", "list", "--json").stdout,
        json.dumps({k.decode(): v.decode() for k, v in deployment.client.hgetall(f"hr:action:{event_id}:crm:0").items()
                    if k not in (b"payload",)}),  # what is stored for display, too
    ]  # fmt: skip
    assert "unknown key ***" in shown[0]
    assert all(key not in text for text in shown)  # … and never shown


def test_a_delay_run_twice_delivers_nothing_twice(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: later
            on: lead.created
            then:
              - delay: 1s
              - webhook: {url: "http://127.0.0.1:{{ lead.port }}/later", json: {id: "{{ lead.id }}"}}
    """)
    with stub_server() as crm:
        event_id = deployment.post("lead.created", lead(crm.port))
        deployment.run_burst()
        [delay_job] = deployment.client.zrange("rq:scheduled:actions", 0, -1)
        saved = deployment.client.hgetall(b"rq:job:" + delay_job)
        deployment.end_delays()
        assert len(crm.successes) == 1
        # RQ runs the delay's job again (a retry, or the recovery of a worker that died in it) …
        deployment.client.hset(b"rq:job:" + delay_job, mapping={**saved, b"status": b"queued"})
        deployment.client.rpush("rq:queue:actions", delay_job)
        deployment.run_burst()
        assert len(crm.requests) == 1  # … and nothing is sent twice
    assert [a.status for a in deployment.actions(event_id)] == ["done", "done"]


def test_a_reload_between_an_event_and_its_delay_runs_the_rule_as_it_now_is(deploy) -> None:
    before = """
        rules:
          - id: later
            on: lead.created
            then:
              - delay: 1s
              - webhook: {url: "http://127.0.0.1:{{ lead.port }}/first", json: {id: "{{ lead.id }}"}}
    """
    deployment = deploy(before)
    after = textwrap.dedent(before) + (
        '      - webhook: {url: "http://127.0.0.1:{{ lead.port }}/added", json: {n: 2}}\n')
    with stub_server() as crm:
        event_id = deployment.post("lead.created", lead(crm.port))
        deployment.run_burst()
        (deployment.settings.rules_dir / "rules.yaml").write_text(after)  # the admin adds an action …
        assert deployment.admin("POST", "/admin/reload").json()["rules"] == 1  # … and reloads, while the delay runs
        deployment.end_delays()
        assert sorted(r.path for r in crm.successes) == ["/added", "/first"]
    actions = deployment.actions(event_id)
    assert [(a.index, a.kind, a.status) for a in actions] == [(0, "delay", "done"), (1, "webhook", "done"),
                                                              (2, "webhook", "done")]  # fmt: skip
    detail = deployment.admin("GET", f"/admin/events/{event_id}").json()
    assert [a["status"] for a in detail["actions"]] == ["done", "done", "done"]


def test_a_delayed_action_sends_the_values_an_immediate_one_would(deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_ID", SHOP_A)  # the application id comes from the environment: a secret
    deployment = deploy("""
        rules:
          - id: later
            on: lead.created
            then:
              - webhook: {url: "http://127.0.0.1:{{ lead.port }}/now", json: {app: "{{ application.id }}"}}
              - delay: 1s
              - webhook: {url: "http://127.0.0.1:{{ lead.port }}/later", json: {app: "{{ application.id }}"}}
    """, application_id="${SHOP_ID}")  # fmt: skip
    with stub_server() as crm:
        event_id = deployment.post("lead.created", lead(crm.port))
        deployment.run_burst()
        deployment.end_delays()
        assert [r.json for r in crm.successes] == [{"app": SHOP_A}, {"app": SHOP_A}]  # not "***" after the delay
    assert SHOP_A not in deployment.admin("GET", f"/admin/events/{event_id}").text  # and still never shown


def test_our_date_written_back_by_hana_is_an_echo(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: stamp
            on: lead.updated
            when: {field: lead.baseFunnelStatus, equals: won}
            then:
              - hana_update: {lead: {id: "{{ lead.id }}", cf_date_lien_he: "2026-03-09T17:00:00.000Z"}}
    """)

    def echo(request) -> None:  # noqa: ANN001 - what Hana does: the date comes back as a day in Vietnam
        written = request.json["lead"]
        body = {"application": {"id": SHOP_A}, "lead": {
            "id": {"nomalizeData": written["id"], "rawData": written["id"]},
            "cf_date_lien_he": {"nomalizeData": "10-03-2026", "rawData": written["cf_date_lien_he"]},
        }}  # fmt: skip
        deployment.post("lead.updated", body)

    deployment.hana.after = echo
    with deployment.workers(2):
        deployment.post("lead.updated", {"application": {"id": SHOP_A}, "lead": {"id": "L1", "baseFunnelStatus": "won"}})  # noqa: E501
        wait_for(lambda: deployment.hana.requests, what="our update")
        wait_for(lambda: _echo_seen(deployment.client), what="the echo to be processed")
    assert len(deployment.hana.requests) == 1  # the echo did not trigger the rule again


def _echo_seen(client: redis.Redis) -> bool:
    events = [client.hgetall(f"hr:event:{i.decode()}") for i in client.zrange("hr:events", 0, -1)]
    return len(events) == 2 and any(e.get(b"echo") == b"true" and e.get(b"status") == b"done" for e in events)


def test_action_store_reads_a_record_of_any_shape(redis_client: redis.Redis) -> None:
    store = ActionStore(redis_client)
    redis_client.hset("hr:action:e:r:0", mapping={"status": "failed", "payload": "{", "index": "x"})
    record = store.load("e:r:0")
    assert record is not None and record.damaged and record.event_id == "e" and record.rule == "r"
    assert store.load("absent:r:0") is None


def test_an_open_action_left_by_the_previous_version_is_adopted_once(deploy) -> None:
    deployment = deploy(WEBHOOK_RULE)
    with stub_server() as crm:
        event_id = deployment.post("lead.created", lead(crm.port))
        process_events_only(deployment, event_id)
        # What 0.1 left: a record without tickets, waiting for a retry job that points at gone code.
        identifier = f"{event_id}:crm:0"
        deployment.client.delete("rq:queue:actions")
        deployment.client.hdel(f"hr:action:{identifier}", "job", "tickets")
        deployment.client.hset(f"hr:action:{identifier}", "status", "retrying")
        deployment.client.expire(f"hr:action:{identifier}", 3600)
        deployment.client.zrem(DUE_ACTIONS, identifier)
        context = worker_context.current()
        assert delivery.adopt_legacy_actions(context) == 1
        assert delivery.adopt_legacy_actions(context) == 0  # once per installation
        deployment.run_burst()
        assert len(crm.successes) == 1
    assert statuses(deployment, event_id) == ["done"]
    assert deployment.client.ttl(f"hr:action:{identifier}") == -1  # kept until its event is finished
