"""Redis unreachable: events go to the fsynced journal, answered 200, and are fed back exactly once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import redis
import requests

from engine.config import Settings
from engine.runtime.connection import receiver_client
from engine.runtime.embedded import EmbeddedRedis
from engine.runtime.events import EventStatus, EventStore, Outcome
from engine.runtime.intake import Intake
from engine.runtime.journal import Journal
from engine.runtime.worker import build_worker
from engine.web.app import create_app
from tests.conftest import SHOP_A, SHOP_A_TOKEN
from tests.helpers import live_server, wait_for


def lead(name: str, lead_id: str) -> dict:
    return {"application": {"id": SHOP_A}, "lead": {"id": lead_id, "baseName": name}}


def post(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/hooks/lead.updated", params={"token": SHOP_A_TOKEN}, json=body, timeout=10)


def test_redis_stopped_mid_run_loses_nothing_and_processes_each_event_once(settings: Settings, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "own-redis").start()
    client = redis.Redis.from_url(server.url)
    settings = replace(settings, redis_url=server.url)
    app = create_app(settings, connection=receiver_client(server.url))
    journal: Journal = app.extensions["hana_rules.journal"]
    try:
        with live_server(app) as url:
            before = post(url, lead("before", "L1")).json()
            assert before["status"] == "accepted"

            server.stop()
            during = []
            for index in range(5):
                answer = post(url, lead(f"during-{index}", f"L{index % 2}"))
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "accepted"
                during.append(answer.json()["event_id"])
            assert journal.depth() == 5
            ready = requests.get(f"{url}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json()["journal_depth"] == 5

            server.start()  # same port, same append-only file
            wait_for(lambda: journal.depth() == 0, what="the drainer to feed the journal into Redis")
            after = post(url, lead("after", "L1")).json()
            assert after["status"] == "accepted"

        build_worker(settings, client).work(burst=True)
        store = EventStore(client)
        ids = [before["event_id"], *during, after["event_id"]]
        for event_id in ids:
            event = store.load(event_id)
            assert event is not None, f"event {event_id} was lost"
            assert event.status is EventStatus.DONE
            assert event.runs == 1, f"event {event_id} processed {event.runs} times"
        # Arrival order is kept: the events index lists them as they were received.
        assert [i.decode() for i in client.zrange("hr:events", 0, -1)] == ids
    finally:
        app.extensions["hana_rules.drainer"].stop()
        server.stop()


def test_a_journal_entry_fed_twice_is_stored_once(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A crash between Redis accepting the entry and the journal deleting it must not duplicate it."""
    journal = Journal(tmp_path / "journal")
    store = EventStore(redis_client)
    intake = Intake(settings, store, journal)
    event = intake.judge("lead.created", b'{"application": {"id": "%s"}, "lead": {"id": "L9"}}' % SHOP_A.encode(),
                         settings.applications[0])  # fmt: skip
    journal.append(event)

    def crash_after_storing(entry):
        store.feed(entry)
        raise ConnectionError("process died before deleting the journal entry")

    with pytest.raises(ConnectionError):
        journal.drain(crash_after_storing)
    assert journal.depth() == 1
    outcomes = []
    journal.drain(lambda entry: outcomes.append(store.feed(entry)))
    assert outcomes == [(Outcome.EXISTS, event.id)]
    assert journal.depth() == 0
    assert redis_client.llen("rq:queue:events") == 1


def test_journal_is_fsynced_sqlite_in_wal_mode(tmp_path: Path, settings: Settings) -> None:
    journal = Journal(tmp_path / "j")
    intake = Intake(settings, EventStore(redis.Redis(port=1)), journal)
    journal.append(intake.judge("lead.created", b"{}", settings.applications[0]))
    connection = journal._connect()
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync at every commit


def test_503_only_when_neither_redis_nor_the_journal_can_keep_the_event(settings: Settings, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "data-dir-is-a-file"
    not_a_folder.write_text("the journal cannot be created under a regular file, even by root")
    settings = replace(settings, data_dir=not_a_folder, redis_url="redis://127.0.0.1:1/0")
    app = create_app(settings, connection=receiver_client(settings.redis_url), drain_journal=False)
    with live_server(app) as url:
        answer = post(url, lead("x", "L1"))
    assert answer.status_code == 503
    assert "retry" in answer.json()["error"]


def test_entries_wait_in_front_of_new_events_in_every_process_sharing_the_journal(
    settings: Settings, tmp_path: Path
) -> None:
    """Two Journal objects on one folder are two web processes: each must send new events
    behind the other's entries, or an event could overtake an earlier one of its lead."""
    this_process, other_process = Journal(tmp_path / "j"), Journal(tmp_path / "j")
    intake = Intake(settings, EventStore(redis.Redis(port=1)), other_process)
    assert not this_process.has_pending() and not other_process.has_pending()

    other_process.append(intake.judge("lead.updated", b"{}", settings.applications[0]))
    assert other_process.has_pending()  # its own entry: at once
    wait_for(this_process.has_pending, timeout=10 * Journal.RECHECK_SECONDS, interval=0.005,
             what="the other process's entry to be seen")  # fmt: skip

    assert this_process.drain(lambda entry: None) == 1
    assert not this_process.has_pending()  # drained here: at once
    # The other process keeps queueing behind its own entry until its drainer looks (every 0.5 s).
    assert other_process.drain(lambda entry: None) == 0
    assert not other_process.has_pending()
