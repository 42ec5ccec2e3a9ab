"""Several machines, one Redis (issue 12 point 3): one loses its network to Redis while another goes on.

Machine A's receiver reaches the shared Redis through a TCP relay the test cuts;
machine B's does not. Each has its own data_dir, so its own journal. What A
journaled meanwhile must take its place among each lead's events by receive
time, and every lead's state must end at the latest value Hana sent.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import redis
import requests

from engine.config import Settings
from engine.runtime.connection import receiver_client
from engine.runtime.events import EventStore
from engine.runtime.state_store import state_key
from engine.runtime.worker import build_worker
from engine.web.app import create_app
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.helpers import live_server, wait_for
from tests.stubs import tcp_proxy


def post(url: str, lead: dict) -> str:
    answer = requests.post(f"{url}/hooks/lead.updated", params={"token": SHOP_A_TOKEN}, timeout=10,
                           json={"application": {"id": SHOP_A}, "lead": lead})  # fmt: skip
    assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
    return answer.json()["event_id"]


def state(client: redis.Redis, lead_id: str) -> dict:
    return json.loads(client.get(state_key(f"{SHOP_A}:lead:{lead_id}")))


def test_a_machine_cut_off_from_redis_feeds_its_events_in_their_place_and_states_end_at_the_latest(
    settings: Settings, redis_client: redis.Redis, redis_server, tmp_path: Path  # noqa: ANN001
) -> None:
    with tcp_proxy(redis_server.port) as relay:
        machine_a = replace(settings, data_dir=tmp_path / "a", redis_url=relay.url)
        machine_b = replace(settings, data_dir=tmp_path / "b")
        app_a = create_app(machine_a, connection=receiver_client(relay.url))
        app_b = create_app(machine_b, connection=receiver_client(settings.redis_url), drain_journal=False)
        try:
            with live_server(app_a) as a, live_server(app_b) as b:
                relay.cut()  # A alone loses Redis: it journals
                first_l1 = post(a, {"id": "L1", "baseFunnelStatus": "new", "cf_string_note": "from A"})
                first_l2 = post(a, {"id": "L2", "baseFunnelStatus": "new"})
                assert app_a.extensions["hana_rules.journal"].depth() == 2
                later_l1 = post(b, {"id": "L1", "baseFunnelStatus": "won"})  # B goes on, and is processed
                build_worker(settings, redis_client).work(burst=True)
                later_l2 = post(b, {"id": "L2", "baseFunnelStatus": "won"})  # this one still waits
                relay.restore()
                wait_for(lambda: app_a.extensions["hana_rules.journal"].depth() == 0, what="A's journal to be fed")
            queue = [i.decode() for i in redis_client.lrange(f"hr:queue:{SHOP_A}:lead:L2", 0, -1)]
            assert queue == [first_l2, later_l2]  # by receive time, not behind B's newer event
            build_worker(settings, redis_client).work(burst=True)
        finally:
            app_a.extensions["hana_rules.drainer"].stop()
    store = EventStore(redis_client)
    # L2: evaluated in the order Hana sent them.
    assert store.load(later_l2).context["previous"]["lead"]["baseFunnelStatus"] == "new"
    assert state(redis_client, "L2")["baseFunnelStatus"] == "won"
    # L1: A's event came after B's newer one was processed: its older status is not applied,
    # its attribute nobody sent since is.
    assert state(redis_client, "L1") == {"id": "L1", "baseFunnelStatus": "won", "cf_string_note": "from A"}
    late = store.load(first_l1)
    assert any("received before newer events of this lead" in w and "baseFunnelStatus" in w for w in late.warnings)
    assert late.context["lead"]["baseFunnelStatus"] == "won" and "baseFunnelStatus" not in late.context["changes"]
    assert store.load(later_l1).status.value == "done"
