"""The editor's write side under faults and odd files, found by attacking it (issue 14): a test made
from an event carries no secret, a publish Redis refuses leaves the disk as it was, a CR LF file saves,
and a file using ${NAME} can be toggled. Real receiver, real worker, real Redis, HTTP."""

from __future__ import annotations

import re

import pytest
import redis

from tests.conftest import SHOP_A
from tests.deployment import ACCESS_TOKEN

RULES = """
rules:
  - id: vip
    on: lead.created
    when: {field: lead.cf_string_hang, equals: VIP}
    then: [{log: vip}]
"""


def test_an_event_added_as_a_test_carries_no_secret_into_the_file_or_the_history(deploy) -> None:
    deployment = deploy(RULES)
    lead = {"id": "L1", "cf_string_hang": "VIP", "access_token": "TOKEN-IN-THE-LEAD-9999",
            "cf_string_note": f"key {ACCESS_TOKEN} here"}  # fmt: skip
    event_id = deployment.post("lead.created", {"application": {"id": SHOP_A}, "lead": lead})
    deployment.run_burst()
    session, token = deployment.console()
    answer = session.post(f"{deployment.url}/console/events/{event_id}/add-test",
                          data={"rule": "vip", "csrf_token": token}, allow_redirects=False)  # fmt: skip
    assert answer.status_code == 302, answer.text[:500]
    written = (deployment.settings.rules_dir / "rules.yaml").read_text()
    assert f"name: event {event_id}" in written and "- vip" in written
    assert "TOKEN-IN-THE-LEAD-9999" not in written and ACCESS_TOKEN not in written
    history = deployment.admin("GET", "/admin/history?limit=1").json()
    shown = deployment.admin("GET", f"/admin/history/{history['versions'][0]['version']}").text
    assert "TOKEN-IN-THE-LEAD-9999" not in shown and ACCESS_TOKEN not in shown


def test_a_publish_redis_refuses_puts_the_file_back_and_answers_503(deploy, redis_client: redis.Redis) -> None:
    deployment = deploy(RULES)
    path = deployment.settings.rules_dir / "rules.yaml"
    before = path.read_bytes()
    running = deployment.admin("GET", "/admin/rules").json()["version"]
    edited = before.decode().replace("equals: VIP", "equals: Gold")
    redis_client.config_set("maxmemory", 1)  # full: every write refused
    try:
        answer = deployment.admin("PUT", "/admin/rules/files/rules.yaml",
                                  json={"text": edited, "expected": before.decode(), "message": "gold"})  # fmt: skip
        created = deployment.admin("PUT", "/admin/rules/files/new.yaml",
                                   json={"text": "rules: []\n", "expected": None})  # fmt: skip
    finally:
        redis_client.config_set("maxmemory", 0)
    assert answer.status_code == 503 and "back as it was" in answer.json()["error"]
    assert path.read_bytes() == before and created.status_code == 503
    assert not (deployment.settings.rules_dir / "new.yaml").exists()
    assert deployment.admin("GET", "/admin/rules").json()["version"] == running
    retried = deployment.admin("PUT", "/admin/rules/files/rules.yaml",
                               json={"text": edited, "expected": before.decode(), "message": "gold"})  # fmt: skip
    assert retried.status_code == 200 and path.read_text() == edited  # no false "changed on disk" after


def test_a_message_that_is_not_utf8_is_kept_with_a_question_mark(deploy) -> None:
    deployment = deploy(RULES)
    answer = deployment.admin("POST", "/admin/reload", json={"message": "caf\udce9 ok"})
    assert answer.status_code == 200
    assert deployment.admin("GET", "/admin/history?limit=1").json()["versions"][0]["message"] == "caf? ok"


def test_a_crlf_file_opens_and_saves_from_the_console_with_its_line_endings(deploy) -> None:
    deployment = deploy(RULES)
    path = deployment.settings.rules_dir / "crlf.yaml"
    path.write_bytes(b"# Windows\r\nrules:\r\n  - id: w\r\n    on: lead.created\r\n    then: [{log: w}]\r\n")
    session, token = deployment.console()
    page = session.get(f"{deployment.url}/console/editor/file/crlf.yaml").text
    expected = re.search(r'name="expected" value="([^"]*)"', page)[1]
    assert 'name="newline" value="crlf"' in page
    typed = "# Windows, edited\r\nrules:\r\n  - id: w\r\n    on: lead.created\r\n    then: [{log: w}]\r\n"
    answer = session.post(f"{deployment.url}/console/editor", data={
        "csrf_token": token, "name": "crlf.yaml", "expected": expected, "newline": "crlf", "text": typed,
        "do": "save", "message": "edited on Windows"}, allow_redirects=False)  # fmt: skip
    assert answer.status_code == 302, answer.text[:300]
    assert path.read_bytes() == typed.encode()
    toggled = session.post(f"{deployment.url}/console/rules/w/enabled", data={"enabled": "0", "csrf_token": token},
                           allow_redirects=False)  # fmt: skip
    assert toggled.status_code == 302 and b"    enabled: false\r\n" in path.read_bytes()


def test_a_rule_whose_file_uses_an_unset_looking_variable_can_be_disabled(deploy, monkeypatch) -> None:
    monkeypatch.setenv("TEAM_WEBHOOK", "http://127.0.0.1:9/hook")
    hook = '  - id: tell\n    on: lead.created\n    then: [{webhook: {url: "${TEAM_WEBHOOK}", json: {}}}]\n'
    deployment = deploy(RULES + hook)
    assert deployment.admin("POST", "/admin/reload", json={}).status_code == 200
    session, token = deployment.console()
    answer = session.post(f"{deployment.url}/console/rules/tell/enabled", data={"enabled": "0", "csrf_token": token},
                          allow_redirects=False)  # fmt: skip
    assert answer.status_code == 302, answer.text[:300]
    assert "${TEAM_WEBHOOK}" in (deployment.settings.rules_dir / "rules.yaml").read_text()


@pytest.mark.parametrize("body", ['[' * 5000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_trying_a_draft_on_a_body_nested_thousands_deep_is_an_answer_not_a_500(deploy, body: str) -> None:
    deployment = deploy(RULES)
    session, token = deployment.console()
    answer = session.post(f"{deployment.url}/console/editor", data={
        "csrf_token": token, "name": "rules.yaml", "text": RULES, "do": "try", "event": "",
        "event_type": "lead.created", "body": body, "previous": ""})  # fmt: skip
    assert answer.status_code == 200 and "nested too deeply" in answer.text


def test_saving_when_rules_dir_holds_a_link_out_is_refused(deploy, tmp_path) -> None:
    deployment = deploy(RULES)
    outside = tmp_path / "outside"
    outside.mkdir()
    (deployment.settings.rules_dir / "link.yaml").symlink_to(outside / "pwned.yaml")
    answer = deployment.admin("PUT", "/admin/rules/files/link.yaml", json={"text": "rules: []\n", "expected": None})
    assert answer.status_code == 400 and not (outside / "pwned.yaml").exists()


def test_the_history_page_masks_webhook_addresses_as_the_rule_page_does(deploy) -> None:
    deployment = deploy(RULES)
    path = deployment.settings.rules_dir / "rules.yaml"
    literal = "http://127.0.0.1:9/services/T0/B0/LITERAL-SECRET-77"
    text = RULES + f"  - id: tell\n    on: lead.created\n    then:\n      - slack:\n          webhook_url: {literal}\n"
    text += "          text: hi\n"
    saved = deployment.admin("PUT", "/admin/rules/files/rules.yaml", json={"text": text, "expected": path.read_text()})
    assert saved.status_code == 200, saved.text
    session, _ = deployment.console()
    page = session.get(f"{deployment.url}/console/history/{saved.json()['version']}").text
    assert "webhook_url: ***" in page and "LITERAL-SECRET-77" not in page


def test_check_says_when_a_rename_leaves_the_files_own_test_failing(deploy) -> None:
    deployment = deploy(RULES)
    with_test = RULES + (
        "tests:\n  - name: a VIP lead\n    event: lead.created\n"
        "    payload: {lead: {id: L1, cf_string_hang: VIP}}\n    expect: {matched: [vip]}\n"
    )
    renamed = with_test.replace("- id: vip", "- id: vip-lead")
    session, token = deployment.console()
    page = session.post(f"{deployment.url}/console/editor", data={
        "csrf_token": token, "name": "rules.yaml", "text": renamed, "do": "check"}).text  # fmt: skip
    assert "No mistake" in page and "Worth a look" in page
    assert "test “a VIP lead” does not pass" in page and "there is no rule with that id" in page


@pytest.mark.parametrize("name", ["invoice\u202eyaml.yaml", "cafe\u0301.yaml", "a\u200b.yaml"])
def test_a_name_that_reads_as_one_file_and_is_another_is_refused(deploy, name: str) -> None:
    deployment = deploy(RULES)
    answer = deployment.admin("PUT", f"/admin/rules/files/{name}", json={"text": "rules: []\n", "expected": None})
    checked = deployment.admin("POST", "/admin/validate", json={"path": name, "text": "rules: []\n"})
    assert answer.status_code == 400 and checked.status_code == 400
    assert sorted(p.name for p in deployment.settings.rules_dir.iterdir()) == ["rules.yaml"]
