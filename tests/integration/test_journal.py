"""Redis unreachable: events go to the fsynced journal, answered 200, and are fed back exactly once."""

from __future__ import annotations

import threading
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
            # Until the drainer has looked again, "after" may still queue behind the backlog (the
            # journal keeps each lead's order): acknowledged either way, in Redis a moment later.
            wait_for(lambda: journal.depth() == 0, what="the drainer to feed what queued behind")

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

    def crash_after_storing(entries):  # noqa: ANN001
        store.feed(entries)
        raise ConnectionError("process died before recording how far it fed")

    with pytest.raises(ConnectionError):
        journal.drain(crash_after_storing)
    assert journal.depth() == 1
    outcomes = []
    journal.drain(lambda entries: outcomes.extend(store.feed(entries)))
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


def test_an_append_never_waits_for_a_drain_feeding_redis(settings: Settings, tmp_path: Path) -> None:
    """A drain feeds a backlog holding no lock across the network: Hana's next event is kept meanwhile."""
    journal = Journal(tmp_path / "j")
    intake = Intake(settings, EventStore(redis.Redis(port=1)), journal)

    def event(n: int):  # noqa: ANN202
        return intake.judge("lead.updated", b'{"lead": {"id": "L%d"}}' % n, settings.applications[0])

    for n in range(3):
        journal.append(event(n))
    in_flight, release = threading.Event(), threading.Event()
    fed = []

    def slow_feed(entries) -> None:  # noqa: ANN001 - Redis far away: the first feed waits on the network
        in_flight.set()
        release.wait(30)
        fed.extend(entry.id for entry in entries)

    draining = threading.Thread(target=journal.drain, args=(slow_feed,))
    draining.start()
    assert in_flight.wait(10)
    appending = threading.Thread(target=journal.append, args=(event(9),))
    appending.start()
    appending.join(10)
    alive = appending.is_alive()
    release.set()
    draining.join(30)
    assert not alive, "the append waited for the drain's network call"
    assert journal.depth() == 0 and len(fed) == 4  # the late entry was fed too, in its turn


def test_one_drainer_per_machine_feeds_at_a_time(settings: Settings, tmp_path: Path) -> None:
    """Every web process runs a drainer; two feeding one backlog at once would only race each other."""
    this_process, other_process = Journal(tmp_path / "j"), Journal(tmp_path / "j")
    intake = Intake(settings, EventStore(redis.Redis(port=1)), this_process)
    this_process.append(intake.judge("lead.updated", b"{}", settings.applications[0]))
    in_flight, release = threading.Event(), threading.Event()

    def slow_feed(entries) -> None:  # noqa: ANN001
        in_flight.set()
        release.wait(30)

    draining = threading.Thread(target=this_process.drain, args=(slow_feed,))
    draining.start()
    assert in_flight.wait(10)
    assert other_process.drain(lambda entry: pytest.fail("fed twice")) == 0  # its turn is skipped
    release.set()
    draining.join(30)
    assert this_process.depth() == 0


def test_while_a_backlog_drains_only_the_leads_it_holds_queue_behind_it(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Once Redis is back, an event of another lead goes to Redis at once (no fsync, no wait); one of a
    lead with entries still waiting goes behind them, so that lead's order is kept."""
    journal = Journal(tmp_path / "j")
    store = EventStore(redis_client)
    intake = Intake(settings, store, journal)
    application = settings.applications[0]

    def body(lead_id: str, n: int) -> bytes:
        return b'{"application": {"id": "%s"}, "lead": {"id": "%s", "n": %d}}' % (SHOP_A.encode(), lead_id.encode(), n)

    backlog = [intake.judge("lead.updated", body("L1", n), application) for n in range(2)]
    for entry in backlog:
        journal.append(entry)  # an outage left these
    second_batch, release = threading.Event(), threading.Event()

    def feed(entries) -> None:  # noqa: ANN001 - Redis is back; the second batch takes its time
        if entries[0].id == backlog[1].id:
            second_batch.set()
            release.wait(30)
        store.feed(entries)

    draining = threading.Thread(target=journal.drain, args=(feed,), kwargs={"batch": 1})
    draining.start()
    assert second_batch.wait(10)
    other = intake.receive("lead.updated", body("L2", 0), application)
    same = intake.receive("lead.updated", body("L1", 2), application)
    stored_at_once = store.load(other.event_id) is not None, store.load(same.event_id) is not None
    release.set()
    draining.join(30)
    assert stored_at_once == (True, False)  # L2 went to Redis; L1 queued behind its own entries
    queue = [i.decode() for i in redis_client.lrange(f"hr:queue:{SHOP_A}:lead:L1", 0, -1)]
    assert queue == [backlog[0].id, backlog[1].id, same.event_id]
    assert not journal.has_pending() and journal.depth() == 0
