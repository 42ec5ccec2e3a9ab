"""Outbound calls reach only the host the policy checked, at an address it allows (SPEC §6).

Real servers on 127.0.0.1 stand in for the partners. An allowed name that hides
another host, or a name that resolves to an internal address, never gets a
request; the admin's own `hana_update_url` on 127.0.0.1 does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from engine.actions.errors import ActionError
from engine.actions.kinds import ActionEnvironment, execute
from engine.actions.outbound import OutboundClient
from engine.actions.policy import OutboundPolicy, RefusedHost
from engine.config import load_settings
from tests.stubs import stub_server

#: `hooks.slack.com` is allowed; 127.0.0.0/8 is listed, so the stub's address itself passes the
#: address check and only the host check stands between a rule and the stub.
POLICY = OutboundPolicy(frozenset({"hooks.slack.com", "127.0.0.0/8"}))


def test_a_backslash_before_an_allowed_host_is_refused_and_the_host_before_it_gets_nothing() -> None:
    client = OutboundClient(POLICY, timeout=2)
    with stub_server() as stub:
        # urllib.parse reads hooks.slack.com here; urllib3 connects to localhost:<port>, headers and all.
        url = f"http://localhost:{stub.port}\\@hooks.slack.com/services/T/B/x"
        with pytest.raises(RefusedHost) as error:
            client.send("POST", url, headers={"Authorization": "Bearer s3cr3t"}, json={"text": "hi"})
    assert stub.requests == []
    assert not error.value.retryable
    assert "the URL's host part holds a backslash" in str(error.value)
    assert "s3cr3t" not in str(error.value)


def test_the_connection_checks_the_host_it_opens_whatever_read_the_url_before() -> None:
    client = OutboundClient(POLICY, timeout=2)
    with stub_server() as stub:
        # Straight to the session, past send()'s own check: the connection is the last word.
        with pytest.raises(requests.exceptions.ConnectionError) as error:
            client.session.post(f"http://localhost:{stub.port}/hook", json={}, timeout=2)
    assert stub.requests == []
    assert "host 'localhost' is not in outbound.allow_hosts" in str(error.value)


def test_the_default_applications_update_url_on_127_0_0_1_reaches_a_stub_hana(tmp_path: Path) -> None:
    config = tmp_path / "hana-rules.yaml"
    config.write_text("rules_dir: rules\ndata_dir: var\noutbound: {allow_hosts: [localhost], timeout: 2s}\n")
    with stub_server() as hana, stub_server() as other:
        settings = load_settings(config, env={"HANA_UPDATE_URL": f"http://127.0.0.1:{hana.port}/update",
                                              "HANA_ACCESS_TOKEN": "hana-access-token-0123456789"})  # fmt: skip
        client = OutboundClient(OutboundPolicy.from_settings(settings), timeout=2)
        environment = ActionEnvironment(settings=settings, client=client, application=settings.applications[0])
        response = execute("hana_update", {"lead": {"id": "L1", "baseName": "Toan"}}, environment)
        assert response is not None and response.status_code == 200
        [request] = hana.requests
        assert request.path == "/update" and request.json == {"lead": {"id": "L1", "baseName": "Toan"}}
        assert request.headers["authorization"] == "Bearer hana-access-token-0123456789"

        # Only that host, at that port: an allowed name resolving to 127.0.0.1 is still refused, and
        # so is the update host on another port.
        for url in (f"http://localhost:{hana.port}/update", f"http://127.0.0.1:{other.port}/x"):
            with pytest.raises(ActionError, match="internal address 127.0.0.1 .loopback") as error:
                client.send("POST", url, json={})
            assert not error.value.retryable
        assert len(hana.requests) == 1 and other.requests == []


def test_a_literal_url_hiding_its_host_behind_a_backslash_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "hana-rules.yaml").write_text(
        "rules_dir: rules\ndata_dir: var\noutbound: {allow_hosts: [hooks.slack.com]}\n"
    )
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "bad.yaml").write_text(
        "rules:\n  - id: leak\n    on: lead.created\n    then:\n      - webhook: {url: 'http://x\\@hooks.slack.com/'}\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HANA_", "HANA_RULES_"))}
    result = subprocess.run([sys.executable, "-m", "engine.cli", "check", "--config", "hana-rules.yaml"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=environment)  # fmt: skip
    assert result.returncode == 1, result.stdout
    [line] = [line for line in result.stderr.splitlines() if "bad.yaml" in line]
    assert line.startswith("rules/bad.yaml:2:5 [leak] then/0/webhook: the URL's host part holds a backslash"), line
