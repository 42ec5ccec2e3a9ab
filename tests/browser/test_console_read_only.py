"""`console.read_only: true` (SPEC §10): the pages say rules are managed elsewhere, and every write
is refused with that sentence, the files untouched (a real serve, a real browser)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.browser.conftest import console_url, log_in, serve_configured, shoot
from tests.e2e.test_serve import Served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = "data_dir: var\nrules_dir: rules\nworkers: 1\nweb_workers: 1\nconsole: {read_only: true}\n"
    with serve_configured(tmp_path_factory.mktemp("read-only"), config, {}) as running:
        yield running


def test_read_only_says_rules_are_managed_elsewhere_and_refuses_every_write(page, served: Served) -> None:
    before = (served.folder / "rules" / "leads.yaml").read_bytes()
    log_in(page, served, "editor")
    assert "Rules are managed elsewhere" in page.locator("p.note").inner_text()
    page.get_by_role("link", name="Open").first.click()
    assert "Rules are managed elsewhere" in page.locator("p.note").inner_text()
    assert page.get_by_role("button", name="Save and publish").count() == 0
    page.get_by_role("button", name="Check").click()  # checking and trying stay: they write nothing
    assert page.get_by_role("status").inner_text().startswith("No mistake")
    shoot(page, "editor-read-only-en")

    page.goto(console_url(served) + "rules")
    assert page.get_by_role("button", name=re.compile("^Disable")).count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for path, form in (("editor", {"name": "leads.yaml", "text": "rules: []\n", "do": "save"}),
                       ("rules/normalize-phone-to-e164/enabled", {"enabled": "0"})):  # fmt: skip
        answer = page.request.post(console_url(served) + path, form={**form, "csrf_token": token})
        assert answer.status == 403
        assert "Rules are managed elsewhere (console.read_only is on)" in answer.text()
    assert (served.folder / "rules" / "leads.yaml").read_bytes() == before
