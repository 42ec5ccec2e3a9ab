"""A deployment for delivery tests: the real receiver over HTTP, stub Hana and Slack, real workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from engine.config import Settings, load_settings, with_generated_tokens
from engine.runtime.action_state import ActionStore
from engine.runtime.connection import receiver_client
from engine.runtime.embedded import EmbeddedRedis
from engine.runtime.worker import build_worker
from engine.web.app import create_app
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.helpers import live_server, worker_processes
from tests.stubs import Stub, stub_server

ACCESS_TOKEN = "hana-access-token-0123456789abcdef"
FAST_DELIVERY = "{max_attempts: 3, backoff: 0.2s, max_backoff: 1s}"


@dataclass
class Deployment:
    settings: Settings
    config: Path
    url: str
    hana: Stub
    slack: Stub
    client: redis.Redis
    redis_url: str

    def post(self, event_type: str, body: dict) -> str:
        answer = requests.post(f"{self.url}/hooks/{event_type}", params={"token": SHOP_A_TOKEN}, timeout=10,
                               data=json.dumps(body, ensure_ascii=False).encode(),  # as Hana sends it: UTF-8
                               headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.json()["status"] == "accepted", answer.text
        return answer.json()["event_id"]

    def actions(self, event_id: str) -> list:
        return ActionStore(self.client).for_event(event_id)

    def run_burst(self, rule_set: Any = None) -> None:
        build_worker(self.settings, self.client, rule_set=rule_set).work(burst=True)

    def end_delays(self, rule_set: Any = None) -> None:
        """Make every scheduled job due now, then let a worker's RQ scheduler and the worker run them."""
        scheduled = self.client.zrange("rq:scheduled:actions", 0, -1)
        if scheduled:
            self.client.zadd("rq:scheduled:actions", {job_id: 0 for job_id in scheduled})
        build_worker(self.settings, self.client, rule_set=rule_set).work(burst=True, with_scheduler=True)

    def workers(self, count: int = 1):  # noqa: ANN201
        return worker_processes(self.config, self.redis_url, count)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.settings.admin_token}"}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def console(self) -> tuple[requests.Session, str]:
        """A logged-in console session and its CSRF token (login makes a new one: read after it)."""
        session = requests.Session()
        form = session.get(f"{self.url}/console/login").text
        session.post(f"{self.url}/console/login", data={"token": self.settings.admin_token,
                                                        "csrf_token": _csrf_token(form)})  # fmt: skip
        return session, _csrf_token(session.get(f"{self.url}/console/editor").text)

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "engine.cli", *arguments, "--config", str(self.config), "--url", self.url]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ})


def _csrf_token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page)[1]  # type: ignore[index]


@pytest.fixture
def deploy(
    tmp_path: Path, redis_server: EmbeddedRedis, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator:
    """deploy(rules_yaml, extra_settings_yaml) → a running receiver with stub Hana and Slack."""
    opened = []

    def make(rules: str, extra: str = "", *, timeout: str = "5s", delivery: str = FAST_DELIVERY,
             application_id: str = SHOP_A) -> Deployment:  # fmt: skip
        hana = opened.append(stub_server()) or opened[-1].__enter__()
        slack = opened.append(stub_server()) or opened[-1].__enter__()
        monkeypatch.setenv("SLACK_HOOK", f"{slack.url}/services/T/B/s3cr3t")
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir(exist_ok=True)
        (rules_dir / "rules.yaml").write_text(textwrap.dedent(rules))
        config = tmp_path / "hana-rules.yaml"
        config.write_text(
            textwrap.dedent(f"""
            rules_dir: rules
            data_dir: var
            redis_url: {redis_server.url}
            applications:
              - id: "{application_id}"
                name: Shop A
                webhook_token: {SHOP_A_TOKEN}
                hana_update_url: {hana.url}/api/update
                access_token: {ACCESS_TOKEN}
            outbound: {{allow_hosts: [127.0.0.1], timeout: {timeout}, telegram_api: "{slack.url}"}}
            delivery: {delivery}
        """)
            + textwrap.dedent(extra)
        )
        settings = with_generated_tokens(load_settings(config))
        app = create_app(settings, connection=receiver_client(redis_server.url), drain_journal=False)
        server = live_server(app)
        opened.append(server)
        url = server.__enter__()
        return Deployment(settings, config, url, hana, slack, redis_client, redis_server.url)

    yield make
    for item in reversed(opened):
        item.__exit__(None, None, None)
