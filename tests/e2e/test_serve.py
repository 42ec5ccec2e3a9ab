"""`hana-rules serve` as a user runs it: a real process tree, real HTTP, real signals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import requests

from engine.runtime.embedded import EmbeddedRedis, free_port
from engine.runtime.events import EventStatus, EventStore
from tests.helpers import sample_bytes, wait_for

ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Served:
    def __init__(self, process: subprocess.Popen[bytes], folder: Path) -> None:
        self.process = process
        self.folder = folder

    @property
    def stdout(self) -> str:
        return (self.folder / "stdout.txt").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.folder / "stderr.txt").read_text(errors="replace")

    def url_for(self, event_type: str) -> str:
        match = re.search(rf"^\s+{re.escape(event_type)}\s+(\S+)$", self.stdout, re.MULTILINE)
        assert match, self.stdout
        return match.group(1)

    def runtime(self) -> dict:
        return json.loads((self.folder / "var" / "runtime.json").read_text())


def serve_command(folder: Path, port: int, *, web_workers: int = 1) -> list[str]:
    settings = f"data_dir: var\nrules_dir: rules\nworkers: 1\nweb_workers: {web_workers}\n"
    (folder / "hana-rules.yaml").write_text(settings)
    if not (folder / "rules").exists():
        shutil.copytree(ROOT / "rules", folder / "rules")
    return [sys.executable, "-m", "engine.cli", "serve", "--config", str(folder / "hana-rules.yaml"),
            "--port", str(port)]  # fmt: skip


@contextmanager
def serve(folder: Path, port: int, *, web_workers: int = 1) -> Iterator[Served]:
    with running(folder, serve_command(folder, port, web_workers=web_workers)) as served:
        yield served


@contextmanager
def running(folder: Path, command: list[str]) -> Iterator[Served]:
    """`command` (a `serve`) run in `folder` until it has printed its URLs; killed at the end."""
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        process = subprocess.Popen(command, cwd=folder, stdout=out, stderr=err)
    served = Served(process, folder)
    try:
        wait_for(lambda: "Admin token:" in served.stdout or process.poll() is not None, timeout=60,
                 what="serve to print its URLs")  # fmt: skip
        assert process.poll() is None, served.stderr
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_accepts_processes_stops_cleanly_and_keeps_events_across_restart(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path, port) as served:
        url = served.url_for("lead.created")
        token = url.split("token=", 1)[1]
        assert "Admin token:" in served.stdout
        answer = requests.post(url, data=sample_bytes(), headers={"Content-Type": "application/json"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["status"] == "accepted"
        event_id = answer.json()["event_id"]

        client = redis.Redis.from_url(served.runtime()["redis_url"])
        store = EventStore(client)
        event = wait_for(lambda: (e := store.load(event_id)) and e.status is EventStatus.DONE and e,
                         what="the worker to process the event")  # fmt: skip
        assert event.context["lead"]["baseName"] == "Toan Truyen"
        assert json.loads(client.hget(f"hr:event:{event_id}", "matched")) == ["normalize-phone-to-e164"]
        ready = requests.get(url.split("/hooks/")[0] + "/readyz", timeout=10).json()
        assert ready["rules"]["count"] == 6
        # Counters of the gunicorn workers and of the RQ worker process, added up on one page.
        metrics = wait_for(lambda: (page := requests.get(url.split("/hooks/")[0] + "/metrics", timeout=10).text)
                           and 'hana_rules_actions_total{kind="hana_update",outcome="failed"}' in page and page,
                           what="the worker's counters on /metrics")  # fmt: skip
        assert 'hana_rules_events_received_total{outcome="accepted",type="lead.created"} 1.0' in metrics
        assert 'hana_rules_rule_matches_total{rule="normalize-phone-to-e164"} 1.0' in metrics
        assert "hana_rules_receive_seconds_bucket" in metrics and "hana_rules_ruleset_info{version=" in metrics

        # Chunked bodies have no length to check up front; gunicorn + Flask still stop at 1 MiB.
        chunks = (b" " * 262144 for _ in range(8))
        too_big = requests.post(url, data=chunks, timeout=10)
        assert too_big.status_code == 413

        tree = descendants(served.process.pid)
        assert len(tree) >= 4  # redis, gunicorn master and worker, one RQ worker
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0
        survivors = [pid for pid in tree if alive(pid)]
        assert survivors == [], f"orphans left behind: {survivors}"
        assert token not in served.stderr, "the webhook token leaked into the logs"
        assert '"POST /hooks/lead.created"' in served.stderr  # the access log is there, without the query
        client.close()

    os.rename(tmp_path / "stdout.txt", tmp_path / "first-stdout.txt")
    with serve(tmp_path, port) as served:
        assert served.url_for("lead.created") == url  # same tokens after a restart
        client = redis.Redis.from_url(served.runtime()["redis_url"])
        event = EventStore(client).load(event_id)
        assert event is not None and event.status is EventStatus.DONE, "an accepted event was lost on restart"
        client.close()
        served.process.send_signal(signal.SIGINT)
        assert served.process.wait(60) == 0


def test_serve_killed_with_sigkill_leaves_no_process_behind(tmp_path: Path) -> None:
    """Its children are told (PDEATHSIG) as the embedded Redis dies with it: a worker whose loop ended
    on the lost Redis still honours the stop it was sent, instead of reconnecting for ever."""
    with serve(tmp_path, free_port()) as served:
        answer = requests.post(served.url_for("lead.created"), data=sample_bytes(), timeout=10,
                               headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == 200
        tree = descendants(served.process.pid)
        assert len(tree) >= 4
        served.process.kill()
        served.process.wait()
        wait_for(lambda: not [pid for pid in tree if alive(pid)], timeout=60,
                 what=f"every child of the killed serve to exit: {[p for p in tree if alive(p)]}")  # fmt: skip


def test_a_second_serve_on_the_same_port_says_so_in_one_line_and_the_first_keeps_every_event(
    tmp_path: Path,
) -> None:
    """Each web process listens on its own SO_REUSEPORT socket, which would let a second
    instance bind the port too and quietly take half of Hana's events."""
    port = free_port()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with serve(first, port, web_workers=2) as served:
        refused = subprocess.run(serve_command(second, port), cwd=second, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}: another hana-rules or another program is using it" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not (second / "var" / "redis").exists(), "the refused instance started its Redis anyway"

        url = served.url_for("lead.created")
        store = EventStore(redis.Redis.from_url(served.runtime()["redis_url"]))
        for index in range(20):  # a new connection each time, spread over both web processes
            body = json.loads(sample_bytes())
            body["lead"]["id"] = f"L{index}"
            answer = requests.post(url, json=body, timeout=10, headers={"Connection": "close"})
            assert answer.status_code == 200 and answer.json()["status"] == "accepted"
            assert store.load(answer.json()["event_id"]) is not None
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0


def test_sighup_and_watch_reload_the_rules_of_a_running_serve(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - {id: one, on: lead.created}\n")
    port = free_port()
    (tmp_path / "hana-rules.yaml").write_text("data_dir: var\nrules_dir: rules\nworkers: 1\nweb_workers: 1\n")
    command = [sys.executable, "-m", "engine.cli", "serve", "--config", str(tmp_path / "hana-rules.yaml"),
               "--port", str(port), "--watch"]  # fmt: skip
    with open(tmp_path / "stdout.txt", "wb") as out, open(tmp_path / "stderr.txt", "wb") as err:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=err)
    served = Served(process, tmp_path)
    try:
        wait_for(lambda: "Admin token:" in served.stdout, timeout=60, what="serve to start")
        admin_token = re.search(r"Admin token: (\S+)", served.stdout).group(1)

        def live_rules() -> list[str]:
            answer = requests.get(f"http://127.0.0.1:{port}/admin/rules", timeout=10,
                                  headers={"Authorization": f"Bearer {admin_token}"})  # fmt: skip
            return [rule["id"] for rule in answer.json()["rules"]]

        assert live_rules() == ["one"]
        (rules / "r.yaml").write_text("rules:\n  - {id: one, on: lead.created}\n  - {id: two, on: lead.created}\n")
        wait_for(lambda: live_rules() == ["one", "two"], timeout=30, what="--watch to publish the edit")
        (rules / "r.yaml").write_text("rules:\n  - {id: broken, on: lead.creatd}\n")
        wait_for(lambda: "were NOT published" in served.stdout, timeout=30, what="the broken edit to be refused")
        assert live_rules() == ["one", "two"]  # the running set stays
        (rules / "r.yaml").write_text("rules:\n  - {id: three, on: lead.created}\n")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: live_rules() == ["three"], timeout=30, what="SIGHUP to publish")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_standalone_web_records_where_it_runs_only_while_it_runs(tmp_path: Path) -> None:
    """`hana-rules reload/events/failed` find a running `web` through data_dir/runtime.json;
    once it stopped, they must say nothing runs rather than call a dead address."""
    with EmbeddedRedis(tmp_path / "redis") as own_redis:  # web publishes its rules there: not in the shared one
        shutil.copytree(ROOT / "rules", tmp_path / "rules")
        (tmp_path / "hana-rules.yaml").write_text(f"data_dir: var\nrules_dir: rules\nredis_url: {own_redis.url}\n")
        port = free_port()
        command = [sys.executable, "-m", "engine.cli", "web", "--config", str(tmp_path / "hana-rules.yaml"),
                   "--port", str(port)]  # fmt: skip
        runtime = tmp_path / "var" / "runtime.json"
        with open(tmp_path / "stderr.txt", "wb") as err:
            web = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
        try:

            def answers() -> bool:
                try:
                    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
                except requests.ConnectionError:
                    return web.poll() is not None  # exited: the assertion below says why

            wait_for(answers, timeout=60, what="web to answer")
            assert web.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert json.loads(runtime.read_text())["url"] == f"http://127.0.0.1:{port}"
            web.send_signal(signal.SIGTERM)
            assert web.wait(60) == 0
        finally:
            if web.poll() is None:
                web.kill()
                web.wait()
    assert not runtime.exists(), "a stopped web left runtime.json behind"
    events = subprocess.run([sys.executable, "-m", "engine.cli", "events", "list", "--config", "hana-rules.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert events.returncode == 1
    assert "no running server found" in events.stderr


def test_serve_outlives_its_embedded_redis_killed_and_loses_no_event(tmp_path: Path) -> None:
    """kill -9 of the embedded redis-server: Hana keeps getting 200 (the journal), serve starts Redis
    again on its data, and every event is processed exactly once afterwards."""
    with serve(tmp_path, free_port()) as served:
        url = served.url_for("lead.created")
        redis_pid = served.runtime()["children"]["redis"]
        answers, started = [], time.monotonic()
        posted = 0
        while time.monotonic() - started < 10:
            if posted == 5:
                os.kill(redis_pid, signal.SIGKILL)  # mid-stream
            body = json.loads(sample_bytes())
            body["lead"]["id"] = f"L{posted}"
            answers.append(requests.post(url, json=body, timeout=10))
            posted += 1
            time.sleep(0.05)  # Hana's pace, not a wait for anything
        assert [a.status_code for a in answers] == [200] * posted
        assert "the embedded Redis exited (code -9); restarting it on the same data (restart 1)" in served.stderr
        ids = [a.json()["event_id"] for a in answers]
        client = redis.Redis.from_url(served.runtime()["redis_url"])
        store = EventStore(client)

        def all_processed() -> bool:
            events = [store.load(i) for i in ids]
            return all(e is not None and e.status is EventStatus.DONE for e in events)

        wait_for(all_processed, timeout=120, what="every event, journaled or not, to be processed")
        assert [store.load(i).runs for i in ids] == [1] * posted  # exactly once
        assert served.runtime()["children"]["redis"] != redis_pid
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0


def gunicorn_workers(served: Served) -> list[int]:
    """The gunicorn worker processes under serve's web child (their command line is the arbiter's)."""
    web = served.runtime()["children"]["web"]
    return sorted(pid for pid in descendants(web))


def test_a_web_process_restarting_while_a_rule_file_is_half_edited_boots_from_the_running_set(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, free_port(), web_workers=2) as served:
        url = served.url_for("lead.created")
        [edited] = sorted((tmp_path / "rules").glob("*.yaml"))[:1]
        edited.write_text(edited.read_text()[:200])  # the editor saved half of it
        before = gunicorn_workers(served)
        os.kill(before[0], signal.SIGKILL)  # gunicorn starts another in its place, which loads the rules
        wait_for(lambda: len(set(gunicorn_workers(served)) - set(before)) == 1, what="a new web process")
        for _ in range(10):
            answer = requests.post(url, data=sample_bytes(), headers={"Content-Type": "application/json",
                                   "Connection": "close"}, timeout=10)  # fmt: skip
            assert answer.status_code == 200
        assert served.process.poll() is None, served.stderr
        assert "Worker failed to boot" not in served.stderr
        ready = requests.get(url.split("/hooks/")[0] + "/readyz", timeout=10).json()
        assert ready["rules"]["count"] == 6  # the running set, not the half file
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0


def start_web(folder: Path, redis_url: str, port: int, rules: str) -> subprocess.Popen[bytes]:
    (folder / "rules").mkdir(parents=True, exist_ok=True)
    (folder / "rules" / "r.yaml").write_text(rules)
    (folder / "hana-rules.yaml").write_text(f"data_dir: var\nrules_dir: rules\nredis_url: {redis_url}\n"
                                            "admin_token: admin-token-for-the-test-0123\n")  # fmt: skip
    command = [sys.executable, "-m", "engine.cli", "web", "--config", str(folder / "hana-rules.yaml"),
               "--port", str(port)]  # fmt: skip
    with open(folder / "stderr.txt", "ab") as err:
        return subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=err)


def rule_ids(port: int) -> list[str]:
    answer = requests.get(f"http://127.0.0.1:{port}/admin/rules", timeout=10,
                          headers={"Authorization": "Bearer admin-token-for-the-test-0123"})  # fmt: skip
    return [rule["id"] for rule in answer.json()["rules"]]


def test_starting_one_web_never_changes_the_rules_the_others_run(tmp_path: Path) -> None:
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    with EmbeddedRedis(tmp_path / "redis") as shared:
        port, other_port = free_port(), free_port()
        web = start_web(first, shared.url, port, "rules:\n  - {id: published, on: lead.created}\n")
        processes = [web]
        try:
            wait_for(lambda: rule_ids(port) if _answers(port) else None, timeout=60, what="the first web")
            metrics = first / "var" / "metrics"
            requests.post(f"http://127.0.0.1:{port}/hooks/lead.created", json={}, timeout=10)  # some counters
            counters = sorted(metrics.glob("*.db"))
            assert counters
            # Another machine starts with other files: it runs the published set and says so.
            processes.append(start_web(second, shared.url, other_port, "rules:\n  - {id: local, on: lead.created}\n"))
            wait_for(lambda: _answers(other_port), timeout=60, what="the second web")
            assert rule_ids(other_port) == rule_ids(port) == ["published"]
            assert "differ from the published set" in (second / "stderr.txt").read_text()
            # A web started by mistake on a busy port: refused before any side effect.
            shutil.copytree(first, third, dirs_exist_ok=True)
            (third / "rules" / "r.yaml").write_text("rules:\n  - {id: mistaken, on: lead.created}\n")
            shared_client = redis.Redis.from_url(shared.url)
            shared_client.delete("hr:rules")  # even when nothing is published, it must publish nothing
            refused = start_web(third, shared.url, port, (third / "rules" / "r.yaml").read_text())
            assert refused.wait(60) == 1
            assert not shared_client.exists("hr:rules")
            assert sorted(metrics.glob("*.db")) == counters  # the running web's counters are kept
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
    except requests.ConnectionError:
        return False


def test_web_and_workers_like_compose_services_add_up_on_one_metrics_page(tmp_path: Path) -> None:
    """As docker compose runs them: separate data_dirs, one shared PROMETHEUS_MULTIPROC_DIR."""
    shared_metrics = tmp_path / "metrics"
    with EmbeddedRedis(tmp_path / "redis") as redis_server:
        port = free_port()
        environment = {**os.environ, "REDIS_URL": redis_server.url, "PROMETHEUS_MULTIPROC_DIR": str(shared_metrics),
                       "HANA_RULES_ADMIN_TOKEN": "admin-token-for-the-test-0123",
                       "HANA_WEBHOOK_TOKEN": "webhook-token-for-the-test-0123"}  # fmt: skip
        processes = []
        services = (("web", ["web", "--port", str(port)]), ("worker-1", ["worker"]), ("worker-2", ["worker"]))
        for name, command in services:
            folder = tmp_path / name
            shutil.copytree(ROOT / "rules", folder / "rules")
            with open(folder / "stderr.txt", "wb") as err:
                processes.append(subprocess.Popen([sys.executable, "-m", "engine.cli", *command], cwd=folder,
                                                  env=environment, stdout=subprocess.DEVNULL, stderr=err))  # fmt: skip
        try:
            wait_for(lambda: _answers(port), timeout=60, what="the web process")
            url = f"http://127.0.0.1:{port}/hooks/lead.created?token=webhook-token-for-the-test-0123"
            for index in range(4):
                body = json.loads(sample_bytes())
                body["lead"]["id"] = f"L{index}"
                assert requests.post(url, json=body, timeout=10).status_code == 200
            page = wait_for(lambda: (text := requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
                            and 'hana_rules_rule_matches_total{rule="normalize-phone-to-e164"} 4.0' in text and text,
                            what="the workers' counters on the web's /metrics")  # fmt: skip
            assert 'hana_rules_actions_total{kind="hana_update"' in page
            # Files are named by host and pid: containers sharing the folder have equal small pids.
            assert all(f"_{socket.gethostname()}_" in path.name for path in shared_metrics.glob("*.db"))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)
