"""Actions reach real servers on 127.0.0.1 standing in for Hana, Slack and Telegram (SPEC §6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import requests

from engine.config import Outbound
from engine.runtime.action_state import ActionStore
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.deployment import ACCESS_TOKEN, Deployment
from tests.helpers import processes_with, sample, wait_for
from tests.stubs import Answer, Stub, stub_server

PHONE_RULE = """
rules:
  - id: normalize
    on: lead.created
    when: {field: lead.basePhonenumber, starts_with: "0"}
    then:
      - hana_update:
          lead:
            id: "{{ lead.id }}"
            basePhonenumber: "{{ lead.basePhonenumber | phone_e164 }}"
            cf_number_diem: "{{ lead.cf_number_kieu_so | string }}"
            cf_enum_nguon: "{{ lead.baseSourceInput | join(', ') }}"
            cf_date_sinh: "{{ lead.baseBirthday }}"
"""


def test_the_sample_lead_drives_a_typed_hana_update_with_the_bearer_token(deploy) -> None:
    deployment = deploy(PHONE_RULE)
    event_id = deployment.post("lead.created", sample())
    deployment.run_burst()
    assert len(deployment.hana.requests) == 1
    request = deployment.hana.requests[0]
    assert request.path == "/api/update"
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request.json == {"lead": {
        "id": "e734c76a-52ca-44f0-a21e8e1fe627c308",
        "basePhonenumber": "+84978712200",
        "cf_number_diem": 1.09,                       # text rendered, sent as a number
        "cf_enum_nguon": ["Youtube", "Sendo"],        # text rendered, sent as an array
        "cf_date_sinh": "2020-09-14T00:00:00.000Z",   # dd-MM-yyyy, sent as Hana's date format
    }}  # fmt: skip
    [action] = deployment.actions(event_id)
    assert action.status == "done" and [a["status_code"] for a in action.attempts] == [200]


def test_500_500_200_gives_exactly_one_success(deploy) -> None:
    deployment = deploy(PHONE_RULE)
    deployment.hana.answer(500, 500, 200)
    with deployment.workers(1):
        event_id = deployment.post("lead.created", sample())
        wait_for(lambda: deployment.actions(event_id) and deployment.actions(event_id)[0].status == "done",
                 timeout=60, what="three attempts")  # fmt: skip
    assert [r.status for r in deployment.hana.requests] == [500, 500, 200]
    assert len(deployment.hana.successes) == 1
    [action] = deployment.actions(event_id)
    assert [a["status_code"] for a in action.attempts] == [500, 500, 200]


def test_429_with_retry_after_waits_as_asked(deploy) -> None:
    deployment = deploy(PHONE_RULE)
    deployment.hana.answer(Answer(429, {"error": "slow down"}, {"Retry-After": "3"}), 200)
    with deployment.workers(1):
        event_id = deployment.post("lead.created", sample())
        wait_for(lambda: deployment.actions(event_id) and deployment.actions(event_id)[0].status == "done",
                 timeout=60, what="the retry after Retry-After")  # fmt: skip
    first, second = deployment.hana.requests
    assert second.at - first.at >= 2.9  # not before the server's own wish (beyond our 1 s max_backoff)


def test_400_goes_to_the_dead_letters_and_a_retry_after_the_fix_delivers(deploy) -> None:
    deployment = deploy(PHONE_RULE)
    deployment.hana.answer(Answer(400, {"error": "bad attribute"}))
    event_id = deployment.post("lead.created", sample())
    deployment.run_burst()
    [action] = deployment.actions(event_id)
    assert action.status == "failed" and "answered 400" in action.error
    assert len(deployment.hana.requests) == 1  # other 4xx fail at once
    store = ActionStore(deployment.client)
    dead = store.dead_letters()
    assert [d.id for d in dead] == [action.id]
    assert dead[0].response["status_code"] == 400
    assert store.retry(action.id)  # the admin fixed the attribute mapping; the stub now answers 200
    deployment.run_burst()
    [action] = deployment.actions(event_id)
    assert action.status == "done"
    assert [a["status_code"] for a in action.attempts] == [400, 200]
    assert store.dead_letters() == []


def test_401_parks_the_applications_updates_until_an_admin_retries(deploy) -> None:
    deployment = deploy(PHONE_RULE)
    deployment.hana.answer(401)
    first = deployment.post("lead.created", sample())
    deployment.run_burst()
    other = sample()
    other["lead"]["id"] = {"nomalizeData": "L-2", "rawData": "L-2"}
    second = deployment.post("lead.created", other)
    deployment.run_burst()
    assert len(deployment.hana.requests) == 1  # the revoked token is not burned through retries
    assert [a.status for a in deployment.actions(first) + deployment.actions(second)] == ["parked", "parked"]
    store = ActionStore(deployment.client)
    assert {d.status for d in store.dead_letters()} == {"parked"}
    store.retry(deployment.actions(first)[0].id)  # the admin fixed the token
    deployment.run_burst()
    assert [a.status for a in deployment.actions(first) + deployment.actions(second)] == ["done", "done"]
    assert len(deployment.hana.successes) == 2


def test_a_worker_killed_mid_action_gives_exactly_one_delivery(deploy) -> None:
    deployment = deploy(PHONE_RULE, timeout="1s")
    deployment.hana.answer(Answer(200, hold=30))  # hold the answer while we kill the worker
    environment = {**os.environ, "REDIS_URL": deployment.redis_url}
    command = [sys.executable, "-m", "engine.cli", "worker", "--config", str(deployment.config)]
    worker = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        event_id = deployment.post("lead.created", sample())
        wait_for(lambda: deployment.hana.requests, timeout=30, what="the action to reach Hana")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    wait_for(lambda: deployment.hana.requests[0].hung_up, what="the stub to notice the dead client")
    # Its RQ scheduler (a forked child) died with it rather than running on, orphaned.
    wait_for(lambda: not processes_with(str(deployment.config)), what="the dead worker's scheduler to end")
    assert deployment.actions(event_id)[0].status == "running"  # held by a lease nobody will end
    # A surviving worker's maintenance (every 15 s) finds the lease expired (outbound.timeout + 10 s)
    # and retries the action on the delivery schedule: within 2 minutes of the death (SPEC §6).
    with deployment.workers(1):
        wait_for(lambda: deployment.hana.successes, timeout=90, what="the action to be taken up again")
        wait_for(lambda: deployment.actions(event_id)[0].status == "done", what="the delivery to be recorded")
    assert len(deployment.hana.successes) == 1
    [action] = deployment.actions(event_id)
    assert [a["status_code"] for a in action.attempts] == [None, 200]
    assert "interrupted: the worker stopped during delivery" in action.attempts[0]["error"]


ECHO_RULE = """
rules:
  - id: bump
    on: lead.updated
    when: {changed: lead.cf_number_diem}
    then:
      - hana_update:
          lead: {id: "{{ lead.id }}", cf_number_diem: "{{ lead.cf_number_diem + 1 }}"}
"""


def test_hana_echoing_our_update_back_does_not_make_a_rule_loop(deploy) -> None:
    deployment = deploy(ECHO_RULE)

    def echo(request) -> None:  # what Hana does: our update comes back as lead.updated
        update = request.json["lead"]
        body = {
            "application": {"id": SHOP_A},
            "lead": {k: {"nomalizeData": v, "rawData": v} for k, v in update.items()},
        }
        requests.post(f"{deployment.url}/hooks/lead.updated", params={"token": SHOP_A_TOKEN}, json=body, timeout=10)

    deployment.hana.after = echo
    lead = {"application": {"id": SHOP_A}, "lead": {"id": "L1", "cf_number_diem": 1}}
    with deployment.workers(2):
        deployment.post("lead.updated", lead)
        wait_for(lambda: len(deployment.hana.requests) >= 1, what="the first update")
        wait_for(lambda: _events_done(deployment.client, 2), what="the echo to be processed")
    assert [r.json["lead"]["cf_number_diem"] for r in deployment.hana.requests] == [2]
    echoed = _event_with(deployment.client, lambda e: e.get("echo") == "true")
    rule = json.loads(echoed["evaluation"])["rules"][0]
    assert "echoes our own update" in rule["skipped"]


def _all_events(client: redis.Redis) -> list[dict]:
    events = []
    for event_id in client.zrange("hr:events", 0, -1):
        raw = client.hgetall(f"hr:event:{event_id.decode()}")
        events.append({k.decode(): v.decode(errors="replace") for k, v in raw.items() if k != b"body"})
    return events


def _events_done(client: redis.Redis, count: int) -> bool:
    events = _all_events(client)
    return len(events) >= count and all(e.get("status") == "done" for e in events)


def _event_with(client: redis.Redis, predicate) -> dict:  # noqa: ANN001
    return next(e for e in _all_events(client) if predicate(e))


def test_loop_guard_holds_a_rule_that_acts_too_often_on_one_lead(deploy) -> None:
    deployment = deploy(
        """
        rules:
          - id: chatty
            on: lead.updated
            then:
              - log: "again {{ lead.id }}"
    """,
        "loop_guard: {limit: 2, per: 1m, hold: 10m}\n",
    )
    ids = [deployment.post("lead.updated", {"application": {"id": SHOP_A}, "lead": {"id": "L1", "n": n}})
           for n in range(4)]  # fmt: skip
    deployment.run_burst()
    matched = [json.loads(deployment.client.hget(f"hr:event:{i}", "matched")) for i in ids]
    assert matched == [["chatty"], ["chatty"], [], []]
    rule = json.loads(deployment.client.hget(f"hr:event:{ids[3]}", "evaluation"))["rules"][0]
    assert rule["skipped"].startswith("loop guard: held")


def _webhook_to_a_stub(deployment: Deployment) -> tuple[Stub, object]:
    """Post one event whose webhook targets a fresh stub; (that stub, the event's one action)."""
    with stub_server() as target:
        body = {"application": {"id": SHOP_A}, "lead": {"id": "L1", "port": target.port}}
        event_id = deployment.post("lead.created", body)
        deployment.run_burst()
    [action] = deployment.actions(event_id)
    return target, action


def test_an_unlisted_host_is_refused_without_any_connection(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: elsewhere
            on: lead.created
            then:
              - webhook: {url: "http://{{ 'localhost' }}:{{ lead.port }}/hook", json: {a: 1}}
    """)
    target, action = _webhook_to_a_stub(deployment)
    assert target.requests == []
    assert action.status == "failed" and "not in outbound.allow_hosts" in action.error
    assert action.attempts[0]["status_code"] is None  # no answer: nothing was sent


def test_an_allowed_name_resolving_to_an_internal_address_is_refused(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: rebinding
            on: lead.created
            then:
              - webhook: {url: "http://localhost:{{ lead.port }}/hook", json: {a: 1}}
    """)
    # The name is allowed, the address it resolves to (127.0.0.1) is not listed.
    deployment.settings = replace(deployment.settings, outbound=Outbound(allow_hosts=("localhost",), timeout=5))
    target, action = _webhook_to_a_stub(deployment)
    assert target.requests == []  # connected to check the address, but no request was sent
    assert action.status == "failed" and "internal address 127.0.0.1" in action.error


def test_a_literal_unlisted_url_is_a_load_error(deploy, tmp_path: Path) -> None:
    deployment = deploy("rules: []\n")
    (tmp_path / "rules" / "bad.yaml").write_text(
        "rules:\n  - id: leak\n    on: lead.created\n    then:\n      - webhook: {url: 'https://evil.example/x'}\n"
    )
    result = subprocess.run([sys.executable, "-m", "engine.cli", "check", "--config", str(deployment.config)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "[leak] then/0/webhook: host 'evil.example' is not in outbound.allow_hosts" in result.stderr


def test_slack_and_telegram_messages_arrive_and_secrets_stay_out_of_traces(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: tell
            on: lead.created
            then:
              - slack: {webhook_url: "${SLACK_HOOK}", text: "New lead {{ lead.baseName }}"}
              - telegram: {bot_token: "123456:bot-secret-token", chat_id: -100123, text: "Lead {{ lead.baseName }}"}
    """)
    event_id = deployment.post("lead.created", sample())
    deployment.run_burst()
    slack, telegram = deployment.slack.requests
    assert slack.path == "/services/T/B/s3cr3t" and slack.json == {"text": "New lead Toan Truyen"}
    assert telegram.path == "/bot123456:bot-secret-token/sendMessage"
    assert telegram.json == {"chat_id": -100123, "text": "Lead Toan Truyen"}
    stored = deployment.client.hget(f"hr:event:{event_id}", "evaluation").decode()
    assert "s3cr3t" not in stored and "Toan Truyen" in stored
    assert [a.status for a in deployment.actions(event_id)] == ["done", "done"]


def test_email_reaches_a_real_smtp_server(deploy) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received = []

    class Collect(Message):
        def handle_message(self, message) -> None:  # noqa: ANN001
            received.append(message)

    from engine.runtime.embedded import free_port

    port = free_port()
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        deployment = deploy(
            """
            rules:
              - id: mail
                on: lead.created
                then:
                  - email:
                      to: [sales@example.com]
                      subject: "Lead {{ lead.baseName }}"
                      body: "Call {{ lead.basePhonenumber }}"
        """,
            f"smtp: {{host: 127.0.0.1, port: {port}, from: bot@example.com, starttls: false}}\n",
        )
        event_id = deployment.post("lead.created", sample())
        deployment.run_burst()
    finally:
        controller.stop()
    [message] = received
    assert message["Subject"] == "Lead Toan Truyen" and message["To"] == "sales@example.com"
    assert message["From"] == "bot@example.com"
    assert message.get_payload().strip() == "Call 0978712200"
    assert [a.status for a in deployment.actions(event_id)] == ["done"]


DELAY_RULES = """
rules:
  - id: follow-up
    on: [lead.created, lead.updated]
    when: {field: lead.baseFunnelStatus, equals: open}
    then:
      - log: "now {{ lead.id }}"
      - {delay: 1s, recheck: true}
      - log: "later {{ lead.id }} is {{ lead.baseFunnelStatus }}"
"""


def _lead(status: str) -> dict:
    return {"application": {"id": SHOP_A}, "lead": {"id": "L1", "baseFunnelStatus": status}}


def test_delay_is_scheduled_in_redis_and_runs_through_rqs_scheduler(deploy) -> None:
    deployment = deploy(DELAY_RULES)
    with deployment.workers(1):
        event_id = deployment.post("lead.created", _lead("open"))
        wait_for(lambda: [a.status for a in deployment.actions(event_id)] == ["done", "done", "done"], timeout=30,
                 what="the delayed action")  # fmt: skip
    now, delay, later = deployment.actions(event_id)
    assert now.payload == "now L1" and later.payload == "later L1 is open"
    assert delay.kind == "delay" and delay.payload == {"delay": 1.0, "recheck": True}


def test_recheck_drops_the_delayed_actions_when_the_rule_no_longer_holds(deploy) -> None:
    deployment = deploy(DELAY_RULES)
    event_id = deployment.post("lead.created", _lead("open"))
    deployment.run_burst()
    assert [a.status for a in deployment.actions(event_id)] == ["done", "scheduled", "scheduled"]
    scheduled = deployment.client.zrange("rq:scheduled:actions", 0, -1)
    assert scheduled == [f"act-{event_id}-follow-up-1-1".encode()]  # survives restarts: it is in Redis
    deployment.post("lead.updated", _lead("lost"))  # the lead moved on before the delay ended
    deployment.run_burst()
    deployment.end_delays()
    _, delay, later = deployment.actions(event_id)
    assert later.status == "dropped" and "no longer hold" in later.error
    assert delay.status == "done" and "no longer hold" in delay.attempts[-1]["error"]


def test_a_delay_whose_rule_is_gone_after_a_reload_is_dropped_with_a_note(deploy) -> None:
    deployment = deploy(DELAY_RULES)
    event_id = deployment.post("lead.created", _lead("open"))
    deployment.run_burst()
    (deployment.settings.rules_dir / "rules.yaml").write_text("rules: []\n")
    assert deployment.admin("POST", "/admin/reload").status_code == 200
    deployment.end_delays()
    later = deployment.actions(event_id)[2]
    assert later.status == "dropped" and "gone from the current rule set" in later.error


def test_failed_cli_lists_retries_and_purges_without_showing_secrets(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: tell
            on: lead.created
            then:
              - slack: {webhook_url: "${SLACK_HOOK}", text: "New lead {{ lead.baseName }}"}
    """)
    deployment.slack.answer(Answer(404, {"error": "no_service"}))
    event_id = deployment.post("lead.created", sample())
    deployment.run_burst()

    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "engine.cli", "failed", *arguments, "--config", str(deployment.config),
                   "--url", deployment.url]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    [letter] = json.loads(listed.stdout)["failed"]
    assert letter["event_id"] == event_id and letter["rule"] == "tell" and "answered 404" in letter["error"]
    assert letter["response"]["status_code"] == 404
    assert "s3cr3t" not in listed.stdout and letter["request"]["payload"]["webhook_url"] == "***"
    table = cli("list")
    assert f"{event_id}:tell:0" in table.stdout and "slack" in table.stdout
    retried = cli("retry", letter["id"])
    assert retried.returncode == 0 and "1 action(s) queued again" in retried.stdout
    deployment.run_burst()
    assert [a.status for a in deployment.actions(event_id)] == ["done"]
    assert json.loads(cli("list", "--json").stdout)["failed"] == []
    assert cli("retry").returncode != 0  # nothing given: a usage error, no traceback
    assert "Traceback" not in cli("retry").stderr


def test_a_webhook_sends_its_method_headers_and_json(deploy) -> None:
    deployment = deploy("""
        rules:
          - id: crm
            on: lead.created
            then:
              - webhook:
                  url: "http://127.0.0.1:{{ lead.port }}/crm/leads"
                  method: PUT
                  headers: {X-Source: hana, X-Lead: "{{ lead.id }}"}
                  json: {name: "{{ lead.baseName }}", sources: "{{ lead.baseSourceInput }}"}
    """)
    with stub_server() as crm:
        body = sample()
        body["lead"]["port"] = {"nomalizeData": crm.port, "rawData": crm.port}
        event_id = deployment.post("lead.created", body)
        deployment.run_burst()
        [request] = crm.requests
    assert request.method == "PUT" and request.path == "/crm/leads"
    assert request.headers["x-source"] == "hana" and request.headers["x-lead"] == "e734c76a-52ca-44f0-a21e8e1fe627c308"
    assert request.json == {"name": "Toan Truyen", "sources": ["Youtube", "Sendo"]}
    assert [a.status for a in deployment.actions(event_id)] == ["done"]


def test_json_logs_carry_event_and_rule_ids_and_no_token(deploy, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from engine import logs

    deployment = deploy(PHONE_RULE)
    deployment.hana.answer(Answer(400, {"error": f"bad token {ACCESS_TOKEN}?"}))
    logs.configure("json")
    try:
        event_id = deployment.post("lead.created", sample())
        deployment.run_burst()
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    failure = next(line for line in lines if "action failed" in line["message"])
    assert failure["event_id"] == event_id and failure["rule_id"] == "normalize" and failure["level"] == "warning"
    assert any(line.get("event_id") == event_id and "processed" in line["message"] for line in lines)
    assert all(ACCESS_TOKEN not in json.dumps(line) for line in lines)
