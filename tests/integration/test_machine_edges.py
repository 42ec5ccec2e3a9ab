"""Edges of issue 12 found by an adversarial review, each broken on purpose.

Duplicates judged across machines (one journaling), a late update after a delete,
a new journal taken for one already fed, a drain forgetting entries no replica
has, a second serve started by mistake, a damaged published rule set.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from engine.config import Settings
from engine.runtime.connection import receiver_client
from engine.runtime.embedded import free_port, redis_server_binary
from engine.runtime.events import EventStatus, EventStore, Outcome
from engine.runtime.intake import Intake
from engine.runtime.journal import Journal
from engine.runtime.state_store import state_key
from engine.runtime.worker import build_worker
from tests.conftest import SHOP_A
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def body(lead_id: str, **attributes: object) -> bytes:
    return json.dumps({"application": {"id": SHOP_A}, "lead": {"id": lead_id, **attributes}}).encode()


def machines(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> tuple[Intake, Intake, EventStore]:
    """Two receivers sharing one Redis, each with its own journal (its own data_dir)."""
    store = EventStore(redis_client)
    app = settings.application(SHOP_A)
    assert app is not None
    a = Intake(settings, store, Journal(tmp_path / "machine-a"))
    b = Intake(settings, store, Journal(tmp_path / "machine-b"))
    return a, b, store


def lead_state(client: redis.Redis, lead_id: str) -> dict | None:
    raw = client.get(state_key(f"{SHOP_A}:lead:{lead_id}"))
    return json.loads(raw) if raw else None


# duplicates, judged in receive order across machines -----------------------------------------------------------


def test_a_toggle_back_received_while_another_machine_journals_is_not_a_duplicate(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Hana: L1 funnel A (t0, machine B), B (t1, machine A: cut off, journals), A (t2, machine B).
    SPEC §4: A→B→A is three events. Machine B compares t2 with the last event *Redis* knows (t0), not
    with the last event *received* (t1, in A's journal): t2 is answered "duplicate" and dropped, and the
    lead's state ends at B, although the latest value Hana sent is A."""
    a, b, store = machines(settings, redis_client, tmp_path)
    app = settings.application(SHOP_A)
    t0 = b.judge("lead.updated", body("L1", baseFunnelStatus="A"), app)
    assert b.keep(t0).outcome is Outcome.ACCEPTED
    t1 = a.judge("lead.updated", body("L1", baseFunnelStatus="B"), app)
    a.journal.append(t1)  # machine A cannot reach Redis
    t2 = b.judge("lead.updated", body("L1", baseFunnelStatus="A"), app)
    answer = b.keep(t2)
    a.journal.drain(store.feed)  # A reaches Redis again
    build_worker(settings, redis_client).work(burst=True)

    assert lead_state(redis_client, "L1")["baseFunnelStatus"] == "A", "the lead ends at an older value than Hana's"
    # Machine B could not know of t1 when it answered: "duplicate" was its best judgement. Kept dormant,
    # t2 was revived once A's journal showed t1 came between, and processed in its place.
    assert answer.outcome is Outcome.DUPLICATE
    revived = store.load(t2.id)
    assert revived is not None and revived.status is EventStatus.DONE
    assert revived.context["previous"]["lead"]["baseFunnelStatus"] == "B"  # after t1, as received


def test_a_journal_feed_does_not_make_a_retry_of_the_latest_event_count_again(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """t1 (body X) journaled on A; t2 (body Y) stored by B; A feeds t1, whose accept script overwrites the
    lead's dedup memory with X. Hana then retries t2 (body Y): the previous event received is t2 itself,
    so it is a duplicate (SPEC §4) — but it is accepted and processed a second time."""
    a, b, store = machines(settings, redis_client, tmp_path)
    app = settings.application(SHOP_A)
    t1 = a.judge("lead.updated", body("L2", baseName="X"), app)
    a.journal.append(t1)
    t2 = b.judge("lead.updated", body("L2", baseName="Y"), app)
    assert b.keep(t2).outcome is Outcome.ACCEPTED
    a.journal.drain(store.feed)
    retry = b.judge("lead.updated", body("L2", baseName="Y"), app)
    assert b.keep(retry).outcome is Outcome.DUPLICATE, "Hana's retry of the latest event is processed twice"


# state: a late event after a delete ----------------------------------------------------------------------------


def test_a_late_update_does_not_bring_back_a_lead_deleted_after_it(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """lead.updated at t1 journaled on machine A; lead.deleted at t2 stored and processed via machine B; A
    feeds t1 late. Hana's latest word is 'deleted', yet the late update's values are all applied (the
    delete removed the state *and* its receive times, so nothing looks newer): the lead is resurrected."""
    a, b, store = machines(settings, redis_client, tmp_path)
    app = settings.application(SHOP_A)
    created = b.judge("lead.created", body("L3", baseName="first"), app)
    assert b.keep(created).outcome is Outcome.ACCEPTED
    build_worker(settings, redis_client).work(burst=True)
    t1 = a.judge("lead.updated", body("L3", baseName="renamed"), app)
    a.journal.append(t1)
    t2 = b.judge("lead.deleted", body("L3"), app)
    assert b.keep(t2).outcome is Outcome.ACCEPTED
    build_worker(settings, redis_client).work(burst=True)
    assert lead_state(redis_client, "L3") is None
    a.journal.drain(store.feed)
    build_worker(settings, redis_client).work(burst=True)
    assert lead_state(redis_client, "L3") is None, "a lead Hana deleted has a state again (older values)"


# the journal's progress names the journal itself, not its file's inode number (which file systems reuse) ------


def test_a_new_journal_file_is_fed_even_when_it_gets_the_old_files_inode(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """`journal.fed` holds "<seq> <inode>". Remove the journal files (an operator emptying a drained journal,
    a restore) and SQLite's next file usually gets the same inode on ext4/tmpfs: the old progress then
    covers the new file's first entries, which are never fed — and the next drain deletes them."""
    directory = tmp_path / "journal"
    store = EventStore(redis_client)
    from engine.runtime.events import ReceivedEvent, new_event_id

    def event(name: str) -> ReceivedEvent:
        us = time.time_ns() // 1000
        return ReceivedEvent(id=new_event_id(us), type="lead.updated", received_at="2026-01-01T00:00:00Z",
                             received_us=us, body=body("L4", baseName=name), application_id=SHOP_A,
                             entity_id="L4", fingerprint=name)  # fmt: skip

    for _ in range(20):  # the file system hands a freed inode out again, within a round or two
        old = Journal(directory)
        for index in range(5):
            old.append(event(f"old-{index}"))
        assert old.drain(store.feed) == 5  # progress: "<seq> <this file's inode>"
        old.close()
        inode = (directory / "journal.sqlite3").stat().st_ino
        for suffix in ("", "-wal", "-shm"):
            Path(f"{directory / 'journal.sqlite3'}{suffix}").unlink(missing_ok=True)
        new = Journal(directory)
        kept = event("new")
        new.append(kept)  # Redis away again: answered 200 from the journal
        reused = (directory / "journal.sqlite3").stat().st_ino == inode
        if reused:
            break
        new.drain(store.feed)
        new.close()
    assert new.depth() == 1, f"an acknowledged entry counts as already fed (inode reused: {reused})"
    new.drain(store.feed)
    assert redis_client.exists(f"hr:event:{kept.id}"), f"an acknowledged event was never fed (inode reused: {reused})"


# with replicas, a drain forgets only what a replica has -------------------------------------------------------


def _redis(folder: Path, *arguments: str) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([redis_server_binary(), "--dir", str(folder), "--save", "", "--appendonly", "no",
                             "--daemonize", "no", "--bind", "127.0.0.1", *arguments],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


class _PausableRelay:
    """master → replica relay whose master→replica direction can be held: a replica that lags while its
    link stays up (the master still counts it online)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.dropping = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, held: bool) -> None:
        try:
            while data := source.recv(65536):
                if held:
                    self.flowing.wait()
                    if self.dropping:
                        return
                sink.sendall(data)
        except OSError:
            pass


def test_a_drain_keeps_its_entries_until_a_replica_has_them(tmp_path: Path) -> None:
    """README, Production: "no acknowledged event is lost to a failover". The receiver WAITs for a replica
    (and journals a copy when none confirms), but the drainer feeds the master and deletes the entries
    at once, WAIT-less: with the replica lagging, a failover right after the drain loses them."""
    master_port, replica_port = free_port(), free_port()
    master = _redis(tmp_path / "master", "--port", str(master_port))
    wait_for(lambda: _ping(redis.Redis(port=master_port)), what="the master")
    relay = _PausableRelay(master_port)
    replica = _redis(tmp_path / "replica", "--port", str(replica_port), "--replicaof", "127.0.0.1", str(relay.port))
    try:
        primary = redis.Redis(port=master_port)
        second = redis.Redis(port=replica_port)
        wait_for(lambda: _ping(second) and second.info("replication").get("master_link_status") == "up",
                 what="the replica's sync")  # fmt: skip
        relay.flowing.clear()  # the replica lags; its link is up
        assert primary.info("replication").get("connected_slaves") == 1

        journal = Journal(tmp_path / "journal")
        from engine.runtime.events import ReceivedEvent, new_event_id

        us = time.time_ns() // 1000
        entry = ReceivedEvent(id=new_event_id(us), type="lead.updated", received_at="2026-01-01T00:00:00Z",
                              received_us=us, body=body("L5", baseName="x"), application_id=SHOP_A,
                              entity_id="L5", fingerprint="f")  # fmt: skip
        journal.append(entry)  # journaled during a first failover
        from dataclasses import replace as with_

        from engine.config import RedisSentinel, load_settings

        settings = with_(load_settings(env={}), redis_sentinel=RedisSentinel("m", (("127.0.0.1", 1),)))
        intake = Intake(settings, EventStore(receiver_client(f"redis://127.0.0.1:{master_port}/0")), journal)
        with pytest.raises(redis.ConnectionError, match="no replica has the fed events yet"):
            journal.drain(intake.feed)  # what the receiver's drainer feeds with
        master.kill()  # the master fails in turn
        master.wait()
        relay.dropping = True
        relay.flowing.set()
        second.execute_command("REPLICAOF", "NO", "ONE")  # promoted
        in_journal = sqlite3.connect(journal.path).execute("SELECT count(*) FROM entries").fetchone()[0]
        assert second.exists(f"hr:event:{entry.id}") or in_journal, "an acknowledged event is gone everywhere"
    finally:
        relay.flowing.set()
        relay.listener.close()
        for process in (master, replica):
            if process.poll() is None:
                process.kill()
                process.wait()


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


# nothing before serve's port check ---------------------------------------------------------------------------

def test_a_serve_refused_for_a_busy_port_leaves_the_metrics_folder_alone(tmp_path: Path) -> None:
    """README: "nothing changes: the port check comes before anything else". `serve` empties
    data_dir/metrics (rmtree) before its port check: a second `serve` started by mistake on the same
    data_dir wipes the running one's counters, and its live processes go on writing into deleted files."""
    (tmp_path / "hana-rules.yaml").write_text("data_dir: var\nrules_dir: rules\nworkers: 1\n")
    (tmp_path / "rules").mkdir()
    metrics = tmp_path / "var" / "metrics"
    metrics.mkdir(parents=True)
    counters = metrics / "counter_host_4242.db"
    counters.write_bytes(b"counters of the serve already running")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    try:
        config = str(tmp_path / "hana-rules.yaml")
        done = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", config,
                               "--port", str(busy.getsockname()[1])], cwd=tmp_path, env=env, capture_output=True,
                              timeout=60)  # fmt: skip
    finally:
        busy.close()
    assert done.returncode != 0, done.stdout
    assert counters.exists(), "a serve refused for a busy port wiped the metrics folder of the one running"


# the README --------------------------------------------------------------------------------------------------


def test_the_readme_states_the_drain_batch_the_code_uses() -> None:
    """README, The journal: "A drainer feeds the entries in order, 200 per round trip"."""
    readme = (ROOT / "README.md").read_text()
    assert f"{Journal.BATCH} per round trip" in readme, f"README: 200 per round trip; the code feeds {Journal.BATCH}"


# a damaged published set -------------------------------------------------------------------------------------


def test_a_damaged_published_set_does_not_stop_a_process_from_booting(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """RuleRegistry.boot falls back to the last good set when the published one does not compile, but
    `json.loads` of the published text is outside that net: a truncated or hand-edited `hr:rules`
    makes every web process and worker fail to boot (gunicorn: "Worker failed to boot")."""
    from engine.runtime.loading import PUBLISHED_RULES, RuleRegistry

    redis_client.hset(PUBLISHED_RULES, mapping={"version": "v-damaged", "files": '{"rules.yaml": "rul'})  # cut
    registry = RuleRegistry.boot(redis_client, settings)
    assert registry.rule_set is not None
