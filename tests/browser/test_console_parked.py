"""An application Hana refuses is parked, and resumed from the browser, in Vietnamese: against a real
serve and a real Hana stand-in on 127.0.0.1 whose update API first refuses the access token."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.browser.conftest import console_url, log_in, serve_configured, shoot
from tests.e2e.test_serve import Served
from tests.helpers import sample_bytes, wait_for
from tests.stubs import Answer, Stub, stub_server

APPLICATION = "dbd9a5f7-b3c4-45bb-a8eb-2b8e10bff8c2"  # the sample's


@pytest.fixture(scope="module")
def hana() -> Iterator[Stub]:
    with stub_server() as stub:
        yield stub


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, hana: Stub) -> Iterator[Served]:
    config = (
        "data_dir: var\nrules_dir: rules\nworkers: 1\nweb_workers: 1\n"
        "outbound: {allow_hosts: [127.0.0.1, hooks.slack.com, api.telegram.org]}\n"
        "applications:\n"
        f"  - {{id: {APPLICATION}, name: Cửa hàng A, webhook_token: shop-a-webhook-token-0123456789,\n"
        f"     hana_update_url: '{hana.url}/api/update', access_token: old-access-token}}\n"
    )
    with serve_configured(tmp_path_factory.mktemp("parked"), config, {}) as running:
        yield running


def test_a_parked_application_is_explained_in_vietnamese_and_resumed_from_the_browser(
    page, served: Served, hana: Stub
) -> None:
    hana.answer(Answer(401, {"error": "token expired"}))  # the first update: the application is parked
    body = json.loads(sample_bytes())
    answer = requests.post(served.url_for("lead.created"), json=body, timeout=10)
    assert answer.json()["status"] == "accepted"
    log_in(page, served)
    page.get_by_role("button", name="Tiếng Việt").click()

    def parked() -> bool:
        page.goto(console_url(served) + "failed")
        return page.locator("section.letter .badge-parked").count() >= 1

    wait_for(parked, what="the parked application on the failed page")
    letter = page.locator("section.letter").first
    assert "Hana từ chối access token của Cửa hàng A (401)" in letter.inner_text()
    shoot(page, "failed-parked-vi")
    refused = len(hana.requests)

    letter.get_by_role("link", name="Cho ứng dụng chạy tiếp").click()
    shoot(page, "confirm-parked-vi")
    page.locator("form button[type=submit]").first.click()
    assert page.get_by_role("status").is_visible()
    wait_for(lambda: len(hana.successes) >= 1, what="the resumed update to reach Hana")
    wait_for(lambda: page.goto(console_url(served) + "failed") and page.locator("section.letter").count() == 0,
             what="the failed page to empty")  # fmt: skip
    sent = [json.dumps(r.json, sort_keys=True) for r in hana.requests[refused:]]
    assert len(sent) == len(set(sent)), "an update was sent twice"
