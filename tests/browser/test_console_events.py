"""The console's read side in a real browser: log in, find an event, read its story in both languages."""

from __future__ import annotations

import json

import requests

from tests.browser.conftest import admin_token, console_url, event_done, log_in, shoot
from tests.e2e.test_serve import Served
from tests.helpers import sample_bytes

LEAD_ID = "e734c76a-52ca-44f0-a21e8e1fe627c308"  # the sample body's lead


def post(served: Served, body: bytes) -> str:
    answer = requests.post(served.url_for("lead.created"), data=body, headers={"Content-Type": "application/json"},
                           timeout=10)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()["event_id"]


def sentence(line) -> str:
    """A condition line as read (the ✓/✗ aside): its claim and what was seen."""
    return line.locator(".claim").inner_text() + line.locator(".seen").inner_text()


def test_login_is_required_a_wrong_token_is_refused_and_logout_ends_the_session(page, served: Served) -> None:
    page.goto(console_url(served) + "events")
    assert "/console/login" in page.url
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text().startswith("That is not the admin token.")
    shoot(page, "login-refused-en")
    page.get_by_label("Admin token").fill(admin_token(served))
    page.get_by_role("button", name="Log in").click()
    assert page.url.endswith("/console/events") and page.get_by_role("heading", name="Events").is_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "hana_rules_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Log out").click()
    assert "/console/login" in page.url
    page.goto(console_url(served) + "events")
    assert "/console/login" in page.url


def test_an_event_shows_each_condition_as_a_sentence_in_english_and_vietnamese(page, served: Served) -> None:
    event_id = post(served, sample_bytes())
    log_in(page, served)
    event_done(page, served, event_id)
    matched = page.locator("section.rule-card.matched", has_text="normalize-phone-to-e164")
    first = matched.locator("li.condition").first
    assert first.locator(".mark").inner_text() == "✓"
    assert sentence(first) == "lead.basePhonenumber matches the pattern “^0[0-9]{9}$”: saw “0978712200”"
    assert '"basePhonenumber": "+84978712200"' in matched.locator("pre").first.inner_text()
    unmatched = page.locator("section.rule-card.unmatched", has_text="complaint-keyword")
    assert "Why it did not fire: lead.cf_string_ghi_chu contains one of [khieu nai, phan nan, hoan tien] " \
           "(ignoring case and accents): it has no value" in unmatched.inner_text()
    shoot(page, "event-en")

    page.get_by_role("button", name="Tiếng Việt").click()
    assert page.url.endswith(f"/console/events/{event_id}")
    matched = page.locator("section.rule-card.matched", has_text="normalize-phone-to-e164")
    first = matched.locator("li.condition").first
    assert sentence(first) == "lead.basePhonenumber khớp với mẫu “^0[0-9]{9}$”: thấy “0978712200”"
    assert "khớp" in matched.locator(".verdict").inner_text()
    unmatched = page.locator("section.rule-card.unmatched", has_text="complaint-keyword")
    assert "Vì sao không chạy: lead.cf_string_ghi_chu chứa một trong [khieu nai, phan nan, hoan tien] " \
           "(không phân biệt hoa thường và dấu): chưa có giá trị" in unmatched.inner_text()
    assert page.locator("html").get_attribute("lang") == "vi"
    shoot(page, "event-vi")
    page.goto(console_url(served) + "events")  # the choice is remembered
    assert page.get_by_role("heading", name="Sự kiện").is_visible()
    shoot(page, "events-vi")


def test_the_list_filters_by_lead_id(page, served: Served) -> None:
    body = json.loads(sample_bytes())
    body["lead"]["id"] = "lead-for-the-filter"
    mine = post(served, json.dumps(body).encode())
    other = post(served, sample_bytes())
    log_in(page, served)
    event_done(page, served, mine)
    page.goto(console_url(served) + "events")
    page.get_by_label("Customer or opportunity id").fill("lead-for-the-filter")
    page.get_by_role("button", name="Filter").click()
    links = page.locator("table.events tbody tr td:first-child a")
    assert [link.get_attribute("href").rsplit("/", 1)[1] for link in links.all()] == [mine]
    assert other not in page.content()
    shoot(page, "events-filtered-en")


def test_a_forged_post_without_the_csrf_token_is_refused(page, served: Served) -> None:
    log_in(page, served)
    forged = page.request.post(console_url(served) + "logout", form={"nothing": "here"})
    assert forged.status == 403 and "This form has expired" in forged.text()
    page.goto(console_url(served) + "events")
    assert page.url.endswith("/console/events")  # still logged in: the forged logout did nothing
    headers = page.request.get(console_url(served) + "events").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"


def test_a_lead_named_like_html_is_shown_as_text(page, served: Served) -> None:
    body = json.loads(sample_bytes())
    body["lead"]["id"] = "lead-with-markup"
    markup = "<img src=x onerror=alert(1)>"
    body["lead"]["baseName"] = {"rawData": markup, "nomalizeData": markup}
    event_id = post(served, json.dumps(body).encode())
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, served)
    event_done(page, served, event_id)
    page.get_by_text("The body, as received").click()
    body = page.locator("details", has_text="The body, as received").locator("pre")
    assert '"rawData": "<img src=x onerror=alert(1)>"' in body.inner_text()
    assert page.locator("img").count() == 0 and dialogs == []
