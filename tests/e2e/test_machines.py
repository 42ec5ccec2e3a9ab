"""Several machines, one Redis (issue 12 point 3): one loses its network to Redis while another goes on.

Two machines, each a real `hana-rules web` and `hana-rules worker` with its own
data_dir (so its own journal), share one Redis; machine A reaches it through a
TCP relay the test cuts. What A journaled meanwhile must take its place among
each lead's events by receive time, and every lead's state must end at the
latest value Hana sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import requests

from engine.runtime.embedded import EmbeddedRedis, free_port
from engine.runtime.events import EventStatus, EventStore
from engine.runtime.state_store import state_key
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.helpers import wait_for
from tests.stubs import tcp_proxy

RULES = "rules:\n  - {id: seen, on: [lead.created, lead.updated], then: [{log: 'seen {{ lead.id }}'}]}\n"


class Machine:
    def __init__(self, folder: Path, redis_url: str) -> None:
        self.folder = folder
        self.port = free_port()
        (folder / "rules").mkdir(parents=True)
        (folder / "rules" / "r.yaml").write_text(RULES)
        (folder / "hana-rules.yaml").write_text(
            f"data_dir: var\nrules_dir: rules\nredis_url: {redis_url}\nadmin_token: admin-token-for-the-test-0123\n"
            f"applications:\n  - {{id: {SHOP_A}, name: Shop A, webhook_token: {SHOP_A_TOKEN}}}\n"
        )  # fmt: skip
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *command: str) -> subprocess.Popen[bytes]:
        environment = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
        with open(self.folder / f"{command[0]}.txt", "ab") as log:
            arguments = [sys.executable, "-m", "engine.cli", *command, "--config", "hana-rules.yaml"]
            process = subprocess.Popen(arguments, cwd=self.folder, env=environment, stdout=subprocess.DEVNULL,
                                       stderr=log)  # fmt: skip
        self.processes.append(process)
        return process

    def web(self) -> None:
        self.start("web", "--port", str(self.port))
        wait_for(self.answers, timeout=60, what=f"the web process of {self.folder.name}")

    def answers(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    def post(self, lead: dict) -> str:
        answer = requests.post(f"http://127.0.0.1:{self.port}/hooks/lead.updated", params={"token": SHOP_A_TOKEN},
                               json={"application": {"id": SHOP_A}, "lead": lead}, timeout=10)  # fmt: skip
        assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
        return answer.json()["event_id"]

    def journal_depth(self) -> int:
        return int(requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=10).json()["journal_depth"])


@contextmanager
def machines(folder: Path, redis_server: EmbeddedRedis) -> Iterator[tuple[Machine, Machine, object]]:
    with tcp_proxy(redis_server.port) as relay:
        cut_off, online = Machine(folder / "a", relay.url), Machine(folder / "b", redis_server.url)
        try:
            yield cut_off, online, relay
        finally:
            for process in cut_off.processes + online.processes:
                process.terminate()
            for process in cut_off.processes + online.processes:
                process.wait(30)


def test_a_machine_cut_off_from_redis_feeds_its_events_in_their_place_and_states_end_at_the_latest(
    tmp_path: Path,
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as shared, machines(tmp_path, shared) as (a, b, relay):
        client = redis.Redis.from_url(shared.url)
        store = EventStore(client)
        a.web()
        b.web()
        relay.cut()  # A alone loses Redis: it journals
        first_l1 = a.post({"id": "L1", "baseFunnelStatus": "new", "cf_string_note": "from A"})
        first_l2 = a.post({"id": "L2", "baseFunnelStatus": "new"})
        assert a.journal_depth() == 2
        worker = b.start("worker")  # B goes on, and its event of L1 is processed
        later_l1 = b.post({"id": "L1", "baseFunnelStatus": "won"})
        wait_for(lambda: (event := store.load(later_l1)) and event.status is EventStatus.DONE, timeout=60,
                 what="B's event of L1 to be processed")  # fmt: skip
        worker.terminate()
        assert worker.wait(30) == 0
        later_l2 = b.post({"id": "L2", "baseFunnelStatus": "won"})  # this one waits
        relay.restore()
        wait_for(lambda: a.journal_depth() == 0, timeout=60, what="A's journal to be fed")
        queue = [i.decode() for i in client.lrange(f"hr:queue:{SHOP_A}:lead:L2", 0, -1)]
        assert queue == [first_l2, later_l2]  # by receive time, not behind B's newer event
        a.start("worker")
        b.start("worker")
        ids = [first_l1, first_l2, later_l1, later_l2]
        wait_for(lambda: all((e := store.load(i)) and e.status is EventStatus.DONE for i in ids), timeout=60,
                 what="every event to be processed")  # fmt: skip
        # L2: evaluated in the order Hana sent them.
        assert store.load(later_l2).context["previous"]["lead"]["baseFunnelStatus"] == "new"
        assert json.loads(client.get(state_key(f"{SHOP_A}:lead:L2")))["baseFunnelStatus"] == "won"
        # L1: A's event came after B's newer one was processed: its older status is not applied, its
        # attribute nobody sent since is.
        state = json.loads(client.get(state_key(f"{SHOP_A}:lead:L1")))
        assert state == {"id": "L1", "baseFunnelStatus": "won", "cf_string_note": "from A"}
        late = store.load(first_l1)
        assert any("received before newer events of this lead" in w and "baseFunnelStatus" in w for w in late.warnings)
        assert late.context["lead"]["baseFunnelStatus"] == "won" and "baseFunnelStatus" not in late.context["changes"]
