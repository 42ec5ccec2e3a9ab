"""The rule editor in a real browser (SPEC §10 page 7), against a real `serve`: errors underlined as
you type, completion from what Hana sent, try, dry run, diff, save, a concurrent edit, history and
rollback, a path outside the rules folder. What the user does is typed; what they see is asserted,
and the files on disk and the admin API are checked behind the page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.browser.conftest import admin_token, console_url, event_done, log_in, serve_configured, shoot
from tests.e2e.test_serve import Served
from tests.helpers import sample_bytes, wait_for

TEAM_RULES = """# Rules of the sales team. Keep this comment: the editor must not reformat anything.
rules:
  - id: vip-note
    name: Note VIP customers
    on: lead.updated
    when:
      - field: lead.cf_string_hang
        equals: VIP   # Hana's enum value
    then:
      - log: "VIP {{ lead.id }}"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = "data_dir: var\nrules_dir: rules\nworkers: 1\nweb_workers: 1\n"
    with serve_configured(tmp_path_factory.mktemp("editor"), config, {"team.yaml": TEAM_RULES}) as running:
        yield running


def rules_file(served: Served, name: str) -> Path:
    return served.folder / "rules" / name


def admin(served: Served, path: str) -> dict:
    base = console_url(served).removesuffix("/console/")
    answer = requests.get(base + path, headers={"Authorization": f"Bearer {admin_token(served)}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def post_sample(served: Served, **lead: object) -> str:
    body = json.loads(sample_bytes())
    body["lead"].update(lead)
    answer = requests.post(served.url_for("lead.created"), json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["event_id"]


def type_in_editor(page, text: str) -> None:  # noqa: ANN001
    """Replace the editor's text as a user would: select all, then type (inserted as typed, no auto-indent)."""
    page.locator(".CodeMirror").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def open_file(page, served: Served, name: str) -> None:  # noqa: ANN001
    page.goto(console_url(served) + f"editor/file/{name}")
    page.locator(".CodeMirror").wait_for()


def test_a_typo_is_underlined_at_its_line_with_did_you_mean(page, served: Served) -> None:
    log_in(page, served, "editor/file/team.yaml")
    page.locator(".CodeMirror").wait_for()
    type_in_editor(page, TEAM_RULES.replace("on: lead.updated", "on: lead.creatd"))
    mark = page.locator(".CodeMirror-lint-mark-error")
    mark.first.wait_for()
    line = page.locator(".CodeMirror-code > div").nth(4)  # `on:` is the file's fifth line
    assert line.locator(".CodeMirror-lint-mark-error").inner_text() == "lead.creatd"
    assert page.locator("#lint-status").inner_text() == "1 error"
    listed = page.locator("#lint-list li").inner_text()  # in words too: a phone has no hover
    assert listed.startswith("team.yaml:5:") and "[vip-note]" in listed and "did you mean 'lead.created'?" in listed
    line.locator(".CodeMirror-lint-mark-error").hover()
    tooltip = page.locator(".CodeMirror-lint-tooltip")
    tooltip.wait_for()
    assert "unknown event type 'lead.creatd'" in tooltip.inner_text()
    assert "did you mean 'lead.created'?" in tooltip.inner_text()
    shoot(page, "editor-typo-en")

    page.get_by_role("button", name="Tiếng Việt").click()  # the same mistake, in the reader's language
    page.locator(".CodeMirror").wait_for()
    type_in_editor(page, TEAM_RULES.replace("on: lead.updated", "on: lead.creatd"))
    mark = page.locator(".CodeMirror-code > div").nth(4).locator(".CodeMirror-lint-mark-error")
    mark.wait_for()
    assert page.locator("#lint-status").inner_text() == "1 lỗi"
    mark.hover()
    assert "có phải ý bạn là 'lead.created'?" in page.locator(".CodeMirror-lint-tooltip").inner_text()
    tip = page.locator(".CodeMirror-lint-tooltip")
    wait_for(lambda: tip.evaluate("tip => getComputedStyle(tip).opacity") == "1", what="the hint to fade in")
    shoot(page, "editor-typo-vi")


def test_completion_offers_an_attribute_hana_sent_and_the_draft_is_tried_on_that_event(page, served: Served) -> None:
    event_id = post_sample(served, id="lead-editor", cf_string_nganh_hang="Mỹ phẩm")
    log_in(page, served)
    event_done(page, served, event_id)
    open_file(page, served, "team.yaml")
    page.locator(".CodeMirror").click()
    page.keyboard.press("Control+End")
    page.keyboard.insert_text("  - id: cosmetics\n    on: lead.created\n    when:\n      - field: lead.cf_string_ng")
    page.keyboard.press("Control+Space")
    hints = page.locator(".CodeMirror-hints li")
    hints.first.wait_for()
    offered = hints.all_inner_texts()
    assert any("lead.cf_string_nganh_hang" in hint and "Mỹ phẩm" in hint for hint in offered), offered
    shoot(page, "editor-completion-en")
    page.keyboard.press("Enter")
    page.keyboard.insert_text("\n        equals: Mỹ phẩm\n    then:\n      - log: cosmetics\n")
    wait_for(lambda: page.locator("#lint-status").inner_text().startswith("No error"), what="the draft to check clean")

    page.get_by_label("A recent event").select_option(event_id)
    page.get_by_role("button", name="Try the draft").click()
    card = page.locator("section.rule-card.matched", has_text="cosmetics")
    assert "lead.cf_string_nganh_hang equals “Mỹ phẩm”" in card.inner_text()
    shoot(page, "editor-try-en")

    page.locator(".CodeMirror").click()  # what a hana_update writes is completed from the same catalogue
    page.keyboard.press("Control+End")
    page.keyboard.insert_text("      - hana_update:\n          lead:\n            cf_string_ng")
    page.keyboard.press("Control+Space")
    page.locator(".CodeMirror-hints li").first.wait_for()
    assert page.locator(".CodeMirror-hints li").first.inner_text().startswith("cf_string_nganh_hang")
    page.keyboard.press("Enter")
    assert "            cf_string_nganh_hang: " in page.locator(".CodeMirror").inner_text()


def test_dry_run_diff_save_history_and_rollback(page, served: Served) -> None:
    post_sample(served, id="lead-dry-1", cf_string_hang="VIP")
    event_id = post_sample(served, id="lead-dry-2", cf_string_hang="VIP")
    log_in(page, served)
    event_done(page, served, event_id)
    before = admin(served, "/admin/rules")["version"]
    typed = TEAM_RULES.replace("on: lead.updated", "on: [lead.created, lead.updated]")
    typed = typed.replace("# Hana's enum value", "# Hana's enum value; now on new leads too")
    open_file(page, served, "team.yaml")
    type_in_editor(page, typed)

    page.get_by_role("button", name="Compare with the running version").click()
    added = page.locator("pre.diff .ins").all_inner_texts()
    assert "+    on: [lead.created, lead.updated]" in added
    assert "-    on: lead.updated" in page.locator("pre.diff .del").all_inner_texts()
    shoot(page, "editor-diff-en")

    with page.context.expect_page() as opened:  # a new tab: the draft stays in this one
        page.get_by_role("button", name="Start the dry run").click()
    dry = opened.value
    row = dry.locator("table.dry-run tbody tr", has_text="vip-note").first
    wait_for(lambda: dry.locator("p.done").count() == 1, timeout=60, what="the dry run to finish")
    assert "2 of" in row.inner_text()  # the two VIP leads it would now match
    changed = dry.locator("ul.changed-events li")
    assert changed.count() == 2 and "would now match" in changed.first.inner_text()
    links = [changed.nth(n).locator("a").get_attribute("href") for n in range(2)]
    assert any(link.endswith(event_id) for link in links)
    shoot(dry, "editor-dry-run-en")
    dry.close()
    assert page.locator(".CodeMirror").inner_text().count("lead.created, lead.updated") == 1  # the draft is still here
    page.get_by_label("What changed, for the history (optional)").fill("VIP note on new leads too")
    page.get_by_role("button", name="Save and publish").click()
    assert page.get_by_role("status").inner_text().startswith("Saved and published")
    assert rules_file(served, "team.yaml").read_bytes() == typed.encode()
    after = admin(served, "/admin/rules")["version"]
    assert after != before
    fired = post_sample(served, id="lead-after-save", cf_string_hang="VIP")  # the next real event fires it
    event_done(page, served, fired)
    assert page.locator("section.rule-card.matched", has_text="vip-note").count() == 1
    page.goto(console_url(served) + "editor/file/team.yaml")
    page.get_by_role("link", name="History").click()
    newest = page.locator("table.history tbody tr").first
    assert "VIP note on new leads too" in newest.inner_text() and after[:12] in newest.inner_text()
    shoot(page, "history-en")

    page.locator("table.history tbody tr", has_text=before[:12]).first.get_by_role("link").first.click()
    page.get_by_role("link", name="Go back to this version…").click()
    page.get_by_role("button", name="Yes, go back to this version").click()
    assert page.get_by_role("status").inner_text().startswith("Rolled back")
    assert rules_file(served, "team.yaml").read_text() == TEAM_RULES
    assert admin(served, "/admin/rules")["version"] == before
    page.get_by_role("button", name="Tiếng Việt").click()
    assert "quay lại phiên bản " + before[:12] in page.locator("table.history tbody tr").first.inner_text()
    shoot(page, "history-vi")
    page.goto(console_url(served) + "editor")
    assert page.get_by_role("link", name="Gắn nhãn khách hàng đến từ Facebook").is_visible()
    shoot(page, "editor-home-vi")


def test_a_file_changed_on_disk_since_it_was_opened_is_not_overwritten(page, served: Served) -> None:
    log_in(page, served)
    open_file(page, served, "team.yaml")
    elsewhere = TEAM_RULES.replace("Note VIP customers", "Changed by someone else")
    rules_file(served, "team.yaml").write_text(elsewhere)
    type_in_editor(page, TEAM_RULES.replace("Note VIP customers", "My change"))
    page.get_by_role("button", name="Save and publish").click()
    conflict = page.locator("section.conflict")
    assert "changed on disk since you opened it" in conflict.inner_text()
    assert "Changed by someone else" in conflict.locator("pre").first.inner_text()
    assert rules_file(served, "team.yaml").read_text() == elsewhere
    shoot(page, "editor-conflict-en")
    rules_file(served, "team.yaml").write_text(TEAM_RULES)


def test_a_path_outside_the_rules_folder_is_refused(page, served: Served) -> None:
    log_in(page, served, "editor/new?name=../escaped.yaml")
    page.get_by_role("button", name="Save and publish").click()
    assert "climbs out" in page.locator("[role=alert]").inner_text()
    assert not (served.folder / "escaped.yaml").exists()


def test_a_rule_is_disabled_from_the_rules_list_in_place_and_an_event_becomes_a_test(page, served: Served) -> None:
    log_in(page, served, "rules")
    page.get_by_role("button", name="Disable vip-note").click()
    assert "vip-note is disabled now" in page.get_by_role("status").inner_text()
    disabled = rules_file(served, "team.yaml").read_text()
    assert disabled == TEAM_RULES.replace("  - id: vip-note\n", "  - id: vip-note\n    enabled: false\n")
    page.get_by_role("button", name="Enable vip-note").click()
    assert rules_file(served, "team.yaml").read_text() == TEAM_RULES.replace(
        "  - id: vip-note\n", "  - id: vip-note\n    enabled: true\n"
    )

    event_id = post_sample(served, id="lead-test", cf_string_hang="VIP")
    event_done(page, served, event_id)
    page.get_by_label("Keep this event as a test in the file of rule").select_option("normalize-phone-to-e164")
    page.get_by_role("button", name="Add this event as a test").click()
    assert page.get_by_role("status").inner_text().startswith("Added as a test")
    leads = rules_file(served, "leads.yaml").read_text()
    assert f"name: event {event_id}" in leads and "- normalize-phone-to-e164" in leads
    open_file(page, served, "leads.yaml")
    page.get_by_role("button", name="Run this file's tests").click()
    added = page.locator("ul.tests li", has_text=event_id)
    assert added.locator(".mark").inner_text() == "✓"
    assert page.locator("ul.tests li.fail").count() == 0
    shoot(page, "editor-tests-en")


def test_a_rule_from_a_starter_is_saved_as_shown_and_a_second_one_gets_its_own_ids(page, served: Served) -> None:
    from engine.rules.starters import starter

    log_in(page, served, "editor")
    page.get_by_role("link", name="Tag a lead that comes from Facebook").click()
    assert page.get_by_label("File name, inside the rules folder").input_value() == "tag-facebook-lead.yaml"
    checked = page.locator("#lint-status")
    wait_for(lambda: checked.inner_text().startswith("No error"), what="the starter to check clean")
    page.get_by_label("What changed, for the history (optional)").fill("tag Facebook leads")
    page.get_by_role("button", name="Save and publish").click()
    assert page.get_by_role("status").inner_text().startswith("Saved and published")
    assert rules_file(served, "tag-facebook-lead.yaml").read_text() == starter("tag-facebook-lead").text

    page.goto(console_url(served) + "editor")
    page.get_by_role("link", name="Tag a lead that comes from Facebook").click()
    assert page.get_by_label("File name, inside the rules folder").input_value() == "tag-facebook-lead-2.yaml"
    wait_for(lambda: page.locator("#lint-status").inner_text().startswith("No error"), what="the copy to check clean")
    page.get_by_role("button", name="Run this file's tests").click()
    assert page.locator("ul.tests li.pass").count() >= 1 and page.locator("ul.tests li.fail").count() == 0
    shoot(page, "editor-starter-en")


def test_without_javascript_the_editor_is_a_textarea_checked_on_submit(browser, served: Served) -> None:
    context = browser.new_context(java_script_enabled=False, locale="en-US")
    page = context.new_page()
    try:
        log_in(page, served, "editor/file/team.yaml")
        assert page.locator(".CodeMirror").count() == 0
        area = page.get_by_label("Rules (YAML).", exact=False)
        area.fill(TEAM_RULES.replace("on: lead.updated", "on: lead.creatd"))
        page.get_by_role("button", name="Check").click()
        mistake = page.locator("ul.errors li").first.inner_text()
        assert mistake.startswith("team.yaml:5:") and "did you mean 'lead.created'?" in mistake
        assert "on: lead.creatd" in page.locator("textarea#rule-text").input_value()  # what was typed is kept
        shoot(page, "editor-no-js-en")
    finally:
        context.close()


def test_enter_indents_the_next_line_as_yaml_wants_it(page, served: Served) -> None:
    log_in(page, served, "editor/new?name=indent.yaml")
    page.locator(".CodeMirror").wait_for()
    type_in_editor(page, "rules:\n  - id: indented\n    when:")
    for typed in ("- field: lead.cf_string_hang", "equals: VIP"):
        page.keyboard.press("Escape")  # no suggestion picked: a plain new line
        page.keyboard.press("Enter")
        page.keyboard.insert_text(typed)
    lines = [line.replace("\u200b", "") for line in page.locator(".CodeMirror-line").all_inner_texts()]
    assert lines[2:] == ["    when:", "      - field: lead.cf_string_hang", "        equals: VIP"]
