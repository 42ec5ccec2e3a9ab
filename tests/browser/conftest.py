"""A real `hana-rules serve` and Debian's chromium, driven by Playwright (never `playwright install`).

Without a browser the browser tests skip with one line, unless CI is set: there a missing
browser fails the run. Screenshots of every run are kept in `var/screenshots/` (gitignored).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.runtime.embedded import free_port
from tests.e2e.test_serve import Served, running, serve
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    found = os.environ.get("HANA_RULES_CHROMIUM") or next((p for p in CHROMIUM_PATHS if os.path.exists(p)), None)
    return found or shutil.which("chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium found: the browser tests need `apt-get install -y chromium` (CI is set)")
        pytest.skip("no chromium found; apt-get install -y chromium to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("console")
    with serve(folder, free_port()) as running:
        yield running


def admin_token(served: Served) -> str:
    match = re.search(r"^Admin token: (\S+)$", served.stdout, re.MULTILINE)
    assert match, served.stdout
    return match.group(1)


def console_url(served: Served) -> str:
    match = re.search(r"^Console: (\S+)", served.stdout, re.MULTILINE)
    assert match, served.stdout
    return match.group(1)


@pytest.fixture
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh browser context (no cookies) per test, English unless the test switches."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    opened = context.new_page()
    yield opened
    context.close()


def shoot(page: object, name: str) -> None:
    """Keep a screenshot of what the user saw, wide and narrow, to look at after the run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-wide.png"), full_page=True)  # type: ignore[attr-defined]
    size = page.viewport_size  # type: ignore[attr-defined]
    page.set_viewport_size({"width": 390, "height": 844})  # type: ignore[attr-defined]
    page.screenshot(path=str(SCREENSHOTS / f"{name}-narrow.png"), full_page=True)  # type: ignore[attr-defined]
    page.set_viewport_size(size)  # type: ignore[attr-defined]


@contextmanager
def serve_configured(folder: Path, config: str, rules: dict[str, str]) -> Iterator[Served]:
    """`hana-rules serve` with this configuration and these rule files (plus the shipped examples)."""
    shutil.copytree(ROOT / "rules", folder / "rules", dirs_exist_ok=True)
    for name, text in rules.items():
        (folder / "rules" / name).write_text(text, encoding="utf-8")
    (folder / "hana-rules.yaml").write_text(config, encoding="utf-8")
    command = [sys.executable, "-m", "engine.cli", "serve", "--config", str(folder / "hana-rules.yaml"),
               "--port", str(free_port())]  # fmt: skip
    with running(folder, command) as served:
        yield served


def log_in(page: object, served: Served, path: str = "login") -> None:
    """Open a console page (the login form first) and log in with the admin token serve printed."""
    page.goto(console_url(served) + path)  # type: ignore[attr-defined]
    page.get_by_label("Admin token").fill(admin_token(served))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Log in").click()  # type: ignore[attr-defined]


def event_done(page: object, served: Served, event_id: str) -> None:
    """Reload the event's page until it shows the event processed."""

    def shows_done() -> bool:
        page.goto(console_url(served) + f"events/{event_id}")  # type: ignore[attr-defined]
        return page.locator("h1 .badge-done").count() == 1  # type: ignore[attr-defined]

    wait_for(shows_done, what=f"event {event_id} to be done")
