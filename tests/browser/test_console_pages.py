"""The console's other pages in a real browser, against a real serve and a real partner on 127.0.0.1:
the overview's chart, a lead's timeline, "why didn't it fire?", and a dead letter retried from the browser."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.browser.conftest import console_url, event_done, log_in, serve_configured, shoot
from tests.e2e.test_serve import Served
from tests.helpers import sample_bytes, wait_for
from tests.stubs import Answer, Stub, stub_server

PARTNER_RULE = """
rules:
  - id: tell-the-partner
    name: Tell the partner when a customer becomes VIP
    on: lead.updated
    when:
      - changed: lead.cf_string_hang
        to: VIP
    then:
      - webhook:
          url: "{url}/vip"
          json: {{id: "{{{{ lead.id }}}}"}}
"""


@pytest.fixture(scope="module")
def partner() -> Iterator[Stub]:
    with stub_server() as stub:
        yield stub


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, partner: Stub) -> Iterator[Served]:
    config = ("data_dir: var\nrules_dir: rules\nworkers: 1\nweb_workers: 1\n"
              "outbound: {allow_hosts: [127.0.0.1, hooks.slack.com, api.telegram.org]}\n"
              "delivery: {max_attempts: 1}\n")  # fmt: skip
    with serve_configured(tmp_path_factory.mktemp("pages"), config,
                          {"partner.yaml": PARTNER_RULE.format(url=partner.url)}) as running:  # fmt: skip
        yield running


def post(served: Served, event_type: str, lead: dict) -> str:
    body = json.loads(sample_bytes())
    body["lead"].update(lead)
    answer = requests.post(served.url_for(event_type), json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["event_id"]


def test_the_overview_draws_the_chart_and_the_figures(page, served: Served) -> None:
    event_id = post(served, "lead.created", {"id": "lead-overview"})
    log_in(page, served)
    event_done(page, served, event_id)
    page.get_by_role("link", name="Overview", exact=True).click()
    chart = page.locator("figure.chart svg")
    assert chart.is_visible() and page.locator("figure.chart rect.bar").count() == 144
    assert int(page.locator("h2", has_text="Events in the last 24 hours").inner_text().rsplit(":", 1)[1]) >= 1
    assert page.locator(".figure", has_text="live workers").locator(".number").inner_text() == "1"
    shoot(page, "overview-en")
    page.get_by_role("button", name="Tiếng Việt").click()
    assert page.get_by_role("heading", name="Tổng quan").is_visible()
    shoot(page, "overview-vi")


def test_the_timeline_shows_what_changed_and_the_rule_page_says_why_it_did_not_fire(page, served: Served) -> None:
    post(served, "lead.created", {"id": "lead-timeline", "cf_string_hang": "Thường"})
    second = post(served, "lead.updated", {"id": "lead-timeline", "cf_string_hang": "Bạc"})
    log_in(page, served)
    event_done(page, served, second)
    page.goto(console_url(served) + "timeline?entity=lead-timeline")
    steps = page.locator("ol.timeline > li")
    assert steps.count() == 2
    change = steps.nth(1).locator("table.changes tbody tr", has_text="cf_string_hang")
    assert [cell.inner_text() for cell in change.locator("td").all()] == ["cf_string_hang", "“Thường”", "→", "“Bạc”"]
    shoot(page, "timeline-en")

    page.goto(console_url(served) + "rules/tell-the-partner")
    miss = page.locator("ul.misses > li").first
    assert "lead.cf_string_hang changed to “VIP”: saw “Thường” → “Bạc”" in miss.inner_text()
    shoot(page, "rule-en")


def test_a_dead_letter_retried_from_the_browser_reaches_the_partner(page, served: Served, partner: Stub) -> None:
    partner.answer(Answer(500, {"error": "down for a minute"}))  # the one attempt fails: a dead letter
    post(served, "lead.created", {"id": "lead-vip", "cf_string_hang": "Thường"})
    post(served, "lead.updated", {"id": "lead-vip", "cf_string_hang": "VIP"})
    log_in(page, served)

    def listed() -> bool:
        page.goto(console_url(served) + "failed")
        return page.locator("section.letter", has_text="tell-the-partner").count() == 1

    wait_for(listed, what="the dead letter on the failed page")
    letter = page.locator("section.letter", has_text="tell-the-partner")
    assert "500" in letter.inner_text()
    shoot(page, "failed-en")
    letter.get_by_role("link", name="Retry").click()
    assert page.get_by_role("heading", name="Send it again?").is_visible()
    shoot(page, "confirm-en")
    page.get_by_role("button", name="Yes, send it again").click()
    assert page.get_by_role("status").inner_text().startswith("Queued again")
    wait_for(lambda: [r.json for r in partner.successes] == [{"id": "lead-vip"}], what="the retried delivery")
    assert len(partner.requests) == 2  # the failed attempt and the retry: nothing else


def test_the_playground_runs_a_pasted_body_and_sends_nothing(page, served: Served, partner: Stub) -> None:
    log_in(page, served)
    page.goto(console_url(served) + "playground")
    page.get_by_label("Event").select_option("lead.updated")
    body = json.loads(sample_bytes())
    body["lead"].update({"id": "lead-play", "cf_string_hang": "VIP"})
    page.get_by_label("The body Hana sends (JSON)").fill(json.dumps(body, ensure_ascii=False))
    page.locator("#p-previous").fill('{"lead": {"cf_string_hang": "Thường"}}')
    before = len(partner.requests)
    page.get_by_role("button", name="Try it").click()
    card = page.locator("section.rule-card.matched", has_text="tell-the-partner")
    assert "lead.cf_string_hang changed to “VIP”: saw “Thường” → “VIP”" in card.inner_text()
    assert '"id": "lead-play"' in card.locator("pre").inner_text()
    assert len(partner.requests) == before
    shoot(page, "playground-en")


def test_dead_letters_that_failed_alike_are_one_row_and_go_together(page, served: Served) -> None:
    """The shipped phone rule has no Hana address here: every lead created is a dead letter alike."""
    for n in range(3):
        post(served, "lead.created", {"id": f"lead-bulk-{n}"})
    log_in(page, served)

    def grouped() -> bool:
        page.goto(console_url(served) + "failed")
        row = page.locator("table.groups tbody tr", has_text="normalize-phone-to-e164")
        return row.count() == 1 and int(row.locator("strong").inner_text()) >= 3

    wait_for(grouped, what="the phone rule's dead letters in one row")
    row = page.locator("table.groups tbody tr", has_text="normalize-phone-to-e164")
    assert "no hana_update_url/access_token configured" in row.inner_text()
    shoot(page, "failed-groups-en")
    row.get_by_role("link", name="Delete all").click()
    assert page.get_by_role("heading", name="Delete them all?").is_visible()
    page.get_by_role("button", name="Yes, delete them").click()
    assert page.get_by_role("status").inner_text() == "Deleted."
    assert page.locator("section.letter", has_text="normalize-phone-to-e164").count() == 0
