"""Redis over TLS (`rediss://`, as managed Redis services offer it): receiver, worker and admin API alike."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import redis
import requests
import trustme

from engine.config import Settings
from engine.runtime.connection import receiver_client, worker_client
from engine.runtime.events import EventStatus, EventStore
from engine.runtime.worker import build_worker
from engine.web.app import create_app
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.helpers import live_server
from tests.stubs import tls_relay


def test_a_rediss_url_carries_every_part_of_the_installation_over_tls(
    settings: Settings, redis_client: redis.Redis, redis_server, tmp_path: Path  # noqa: ANN001
) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    with tls_relay(redis_server.port, server_context) as relay:
        url = f"{relay.url}?ssl_ca_certs={ca_file}&ssl_cert_reqs=required"
        over_tls = replace(settings, redis_url=url)
        app = create_app(over_tls, connection=receiver_client(url), drain_journal=False)
        with live_server(app) as receiver:
            answer = requests.post(f"{receiver}/hooks/lead.created", params={"token": SHOP_A_TOKEN}, timeout=10,
                                   json={"application": {"id": SHOP_A}, "lead": {"id": "L1"}})  # fmt: skip
            assert answer.json()["status"] == "accepted"
            ready = requests.get(f"{receiver}/readyz", timeout=10)
            assert ready.status_code == 200
        build_worker(over_tls, worker_client(url)).work(burst=True)
        # A client that does not trust the relay's authority gets nothing through.
        untrusted = redis.Redis.from_url(relay.url, socket_connect_timeout=2, ssl_cert_reqs="required")
        try:
            untrusted.ping()
            raise AssertionError("an untrusted certificate was accepted")
        except redis.ConnectionError:
            pass
    event = EventStore(redis_client).load(answer.json()["event_id"])
    assert event is not None and event.status is EventStatus.DONE
