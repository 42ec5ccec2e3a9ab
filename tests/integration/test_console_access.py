"""The console's door (SPEC §10, Access), over real HTTP against the real app and Redis."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from engine.config import Settings
from engine.runtime.connection import receiver_client
from engine.web.app import create_app
from engine.web.console.access import MAX_FAILED_LOGINS, generated_secret_key
from tests.helpers import live_server

HOOK_RULE = """
rules:
  - id: hook
    on: lead.created
    then:
      - slack: {webhook_url: "${HOOK_URL:-https://hooks.slack.com/services/T1/B1/XYZsecret}", text: hi}
"""


@pytest.fixture
def console(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[str]:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "hook.yaml").write_text(HOOK_RULE)
    settings = settings.__class__(**{**settings.__dict__, "rules_dir": tmp_path / "rules"})
    app = create_app(settings, connection=receiver_client(settings.redis_url), drain_journal=False)
    with live_server(app) as url:
        yield url + "/console/"


def form_token(session: requests.Session, url: str) -> str:
    page = session.get(url + "login")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def log_in(session: requests.Session, url: str, token: str, **extra: str) -> requests.Response:
    return session.post(url + "login", data={"token": token, "csrf_token": form_token(session, url), **extra},
                        allow_redirects=False)  # fmt: skip


def test_failed_logins_are_limited_per_client_even_with_the_right_token_after(console: str, settings) -> None:
    session = requests.Session()
    for _ in range(MAX_FAILED_LOGINS):
        assert log_in(session, console, "wrong").status_code == 401
    refused = log_in(session, console, settings.admin_token)
    assert refused.status_code == 429 and "Wait 15 minutes" in refused.text


def test_a_login_without_its_csrf_token_is_refused(console: str, settings) -> None:
    session = requests.Session()
    answer = session.post(console + "login", data={"token": settings.admin_token}, allow_redirects=False)
    assert answer.status_code == 403 and "This form has expired" in answer.text
    assert session.get(console + "events", allow_redirects=False).status_code == 302  # not logged in


def test_login_never_redirects_off_the_console(console: str, settings) -> None:
    for target in ("https://evil.example/", "//evil.example/console/", "/console/\\\\evil.example"):
        answer = log_in(requests.Session(), console, settings.admin_token, next=target)
        assert answer.status_code == 302 and answer.headers["Location"] == "/console/overview", target
    answer = log_in(requests.Session(), console, settings.admin_token, next="/console/events?status=failed")
    assert answer.headers["Location"] == "/console/events?status=failed"


def test_every_page_is_refused_before_login_and_carries_the_guards(console: str) -> None:
    answer = requests.get(console + "events/anything", allow_redirects=False)
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/console/login?next=")
    login = requests.get(console + "login")
    assert login.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in login.headers["Content-Security-Policy"]
    assert "<script>" not in login.text and 'style="' not in login.text  # nothing inline: the CSP forbids it


def test_the_generated_session_key_is_made_once_and_kept_beside_the_tokens(tmp_path: Path) -> None:
    first = generated_secret_key(tmp_path)
    assert generated_secret_key(tmp_path) == first and len(first) >= 48
    stored = (tmp_path / "secrets.json").read_text()
    assert first in stored and (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600


def logged_in(console: str, settings) -> requests.Session:
    session = requests.Session()
    assert log_in(session, console, settings.admin_token).status_code == 302
    return session


def test_a_rule_page_masks_the_secrets_written_in_its_file(console: str, settings) -> None:
    page = logged_in(console, settings).get(console + "rules/hook")
    assert page.status_code == 200 and "XYZsecret" not in page.text and "${HOOK_URL:-***}" in page.text


def test_odd_addresses_get_a_page_not_a_500_nor_a_redirect_elsewhere(console: str, settings) -> None:
    session = logged_in(console, settings)
    token = form_token(session, console)
    for back in ("/console/../../evil", "/console/events\r\nSet-Cookie: x=1", "https://evil.example/console/"):
        answer = session.post(console + "language", data={"lang": "vi", "back": back, "csrf_token": token},
                              allow_redirects=False)  # fmt: skip
        assert answer.status_code == 302 and answer.headers["Location"] == "/console/overview", back
    assert session.get(console + "events?offset=99999999999999999999").status_code == 200
    missing = session.get(console + "no-such-page")
    assert missing.status_code == 404 and "text/html" in missing.headers["Content-Type"]
    assert "frame-ancestors 'none'" in missing.headers["Content-Security-Policy"]
    assert session.get(console + "failed/nothing:here:0/delete").status_code == 404


def test_behind_a_trusted_proxy_failed_logins_count_per_client_not_per_proxy(settings, redis_client, tmp_path) -> None:
    from dataclasses import replace

    from engine.config import Console

    (tmp_path / "rules").mkdir(exist_ok=True)
    settings = replace(settings, rules_dir=tmp_path / "rules", console=Console(trusted_proxies=1))
    app = create_app(settings, connection=receiver_client(settings.redis_url), drain_journal=False)
    with live_server(app) as url:
        console = url + "/console/"
        attacker = requests.Session()
        attacker.headers["X-Forwarded-For"] = "203.0.113.7"
        for _ in range(MAX_FAILED_LOGINS):
            assert log_in(attacker, console, "wrong").status_code == 401
        assert log_in(attacker, console, settings.admin_token).status_code == 429
        colleague = requests.Session()
        colleague.headers["X-Forwarded-For"] = "198.51.100.20"
        assert log_in(colleague, console, settings.admin_token).status_code == 302


def test_a_quarantine_reason_reads_in_vietnamese_with_the_engines_exact_words_kept(console: str, settings) -> None:
    base = console.removesuffix("/console/")
    token = settings.applications[0].webhook_token
    answer = requests.post(f"{base}/hooks/lead.created?token={token}", data=b"{not json", timeout=10)
    assert answer.json()["status"] == "quarantined"
    session = logged_in(console, settings)
    page = session.get(console + "events/" + answer.json()["event_id"], headers={"Accept-Language": "vi"})
    assert "Nội dung không phải JSON hợp lệ" in page.text
    assert "Nguyên văn của hệ thống" in page.text and "the body is not valid JSON" in page.text


def test_events_pages_go_older_and_back_newer_to_the_same_rows(console: str, settings) -> None:
    base = console.removesuffix("/console/")
    token = settings.applications[0].webhook_token
    with requests.Session() as hana:
        for index in range(120):
            body = {"id": f"L{index}", "baseName": f"lead {index}"}
            assert hana.post(f"{base}/hooks/lead.created?token={token}", json=body, timeout=10).ok
    session = logged_in(console, settings)

    def rows_and_links(url: str) -> tuple[list[str], dict[str, str]]:
        page = session.get(url).text
        links = dict(re.findall(r'<a href="([^"]+)" rel="(next|prev)"', page))
        rows = list(dict.fromkeys(re.findall(r'href="/console/events/([0-9a-f]+)"', page)))  # a row links twice
        return rows, {rel: href for href, rel in links.items()}

    first, links = rows_and_links(console + "events?type=lead.created")
    assert len(first) == 50 and "prev" not in links
    second, links = rows_and_links(base + links["next"].replace("&amp;", "&"))
    third, links = rows_and_links(base + links["next"].replace("&amp;", "&"))
    assert len(second) == 50 and len(third) == 20 and "next" not in links
    assert not set(first) & set(second) and not set(second) & set(third)
    back, links = rows_and_links(base + links["prev"].replace("&amp;", "&"))
    assert back == second
    again, links = rows_and_links(base + links["prev"].replace("&amp;", "&"))
    assert again == first and "type=lead.created" in session.get(console + "events?type=lead.created").url
