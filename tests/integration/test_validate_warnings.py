"""Validation warns, never fails, about an attribute no event ever carried (issue 14, point 2): through the
admin API and the console's own validate, with the catalogue the real worker kept."""

from __future__ import annotations

from tests.conftest import SHOP_A

RULES = """
rules:
  - id: kind
    on: lead.updated
    when: {field: lead.cf_string_phan_loai_kh, equals: VIP}
    then: [{log: vip}]
"""
TYPO = RULES.replace("cf_string_phan_loai_kh", "cf_string_phan_loai")


def test_an_attribute_never_seen_is_a_warning_with_did_you_mean_and_the_set_still_valid(deploy) -> None:
    deployment = deploy(RULES)
    draft = {"path": "rules.yaml", "text": TYPO}
    before = deployment.admin("POST", "/admin/validate", json=draft).json()
    assert before["errors"] == [] and before["warnings"] == []  # no lead seen yet: no data, no warning

    lead = {"id": "L1", "cf_string_phan_loai_kh": "VIP"}
    deployment.post("lead.updated", {"application": {"id": SHOP_A}, "lead": lead})
    deployment.run_burst()
    answer = deployment.admin("POST", "/admin/validate", json=draft).json()
    assert answer["errors"] == [] and answer["version"]
    (warning,) = answer["warnings"]
    assert warning["file"] == "rules.yaml" and warning["rule"] == "kind" and warning["line"] == 5
    assert warning["message"] == ("lead.cf_string_phan_loai has never been seen in lead events; "
                                  "did you mean lead.cf_string_phan_loai_kh?")  # fmt: skip
    assert deployment.admin("POST", "/admin/validate", json={**draft, "text": RULES}).json()["warnings"] == []

    console, token = deployment.console()
    forged = console.post(f"{deployment.url}/console/validate", json=draft)
    assert forged.status_code == 403  # no CSRF token: refused like any console POST
    checked = console.post(f"{deployment.url}/console/validate", json=draft, headers={"X-CSRF-Token": token})
    assert checked.status_code == 200, (checked.status_code, checked.text[:300])
    assert checked.json()["warnings"][0]["message"].startswith("lead.cf_string_phan_loai has never been seen")
    assert checked.json()["summary"] == "No error: 1 rule in the set"
    for junk in (b"[" * 50_000, b"\xff", b'{"path": "../x.yaml", "text": ""}', b'{"path": 5}'):
        answer = console.post(f"{deployment.url}/console/validate", data=junk, headers={"X-CSRF-Token": token})
        assert answer.status_code == 400 and answer.json()["summary"]


def test_a_check_while_another_compiles_is_asked_to_try_again_and_hana_is_not_kept_waiting(deploy) -> None:
    from engine.runtime import drafts

    deployment = deploy(RULES)
    draft = {"path": "rules.yaml", "text": RULES}
    with drafts.one_check_at_a_time():  # another editor's draft compiling in this process
        answer = deployment.admin("POST", "/admin/validate", json=draft)
        hook = deployment.post("lead.updated", {"application": {"id": SHOP_A}, "lead": {"id": "L9"}})
    assert answer.status_code == 429 and "try again in a moment" in answer.json()["error"]
    assert hook  # the webhook was answered meanwhile
    assert deployment.admin("POST", "/admin/validate", json=draft).status_code == 200
