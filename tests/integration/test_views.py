"""The console's read models over the worker's indexes, with the real receiver, workers and Redis."""

from __future__ import annotations

import json

import redis
import requests

from engine.runtime import jobs, state_store
from engine.runtime.events import EVENTS_INDEX
from engine.runtime.indexes import INDEXED_SINCE, SWEPT, Sweep
from engine.runtime.retention import Retention
from engine.runtime.views import EventFilter, entity_events, list_events, rule_events
from tests.conftest import SHOP_A, SHOP_A_TOKEN, SHOP_B
from tests.helpers import let_redis_time_pass

RULES = f"""
rules:
  - id: youtube
    on: [lead.created, lead.updated]
    when: {{field: lead.baseSourceInput, contains: Youtube}}
    then: [{{log: "youtube {{{{ lead.id }}}}"}}]
  - id: every-opportunity
    on: opportunity.created
    then: [{{log: "opportunity {{{{ opportunity.id }}}}"}}]
  - id: shop-b-only
    on: lead.created
    applications: ["{SHOP_B}"]
    then: [{{log: "never here"}}]
"""


def lead(lead_id: str, n: int, source: str = "Facebook") -> dict:
    """A lead event; `n` makes each body different, so none is taken for Hana's retry of the one before."""
    return {"application": {"id": SHOP_A}, "lead": {"id": lead_id, "baseSourceInput": [source], "cf_number_n": n}}


def ids(rows: list[dict]) -> list[str]:
    return [row["id"] for row in rows]


def listed(client: redis.Redis, limit: int = 100, **wanted: str) -> list[str]:
    return ids(list_events(client, EventFilter(**wanted), limit=limit).rows)


def index_keys(client: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in client.keys("hr:idx:*") if client.type(k) == b"zset")


def start_indexing(deployment) -> str:  # noqa: ANN001
    """One event processed: the first commit marks when indexing began; later events are indexed."""
    first = deployment.post("lead.created", lead("WARM-UP", 0))
    deployment.run_burst()
    assert deployment.client.get(INDEXED_SINCE)
    return first


def test_filters_by_lead_rule_and_status_find_exactly_their_events_among_many(deploy) -> None:
    deployment = deploy(RULES)
    client = deployment.client
    warm_up = start_indexing(deployment)
    posted: dict[str, list[str]] = {}
    youtube, every = [], []
    for n in range(40):
        lead_id = "RARE" if n % 13 == 5 else f"L{n % 7}"
        source = "Youtube" if n % 4 == 0 else "Facebook"
        event_id = deployment.post("lead.updated" if n > 7 else "lead.created", lead(lead_id, n, source))
        posted.setdefault(lead_id, []).append(event_id)
        youtube += [event_id] if source == "Youtube" else []
        every.append(event_id)
    opportunities = [deployment.post("opportunity.created", {"application": {"id": SHOP_A},
                                                             "opportunity": {"id": f"O{n}", "n": n}})
                     for n in range(3)]  # fmt: skip
    poisoned = deployment.post("lead.updated", lead("RARE", 99))
    client.hset(f"hr:event:{poisoned}", "body", b"{not json")  # damaged in Redis: its processing fails
    quarantined = requests.post(f"{deployment.url}/hooks/lead.created", params={"token": SHOP_A_TOKEN},
                                data=b"{oops", timeout=10).json()  # fmt: skip
    assert quarantined["status"] == "quarantined"
    deployment.run_burst()
    since = int(client.get(INDEXED_SINCE))
    assert client.zcount(EVENTS_INDEX, "-inf", f"({since}") == 1  # only the warm-up is walked: the rest is indexed

    newest_first = list(reversed(every))
    rare = list(reversed(posted["RARE"] + [poisoned]))
    assert listed(client, entity="RARE") == rare
    assert listed(client, entity="RARE", application=SHOP_A) == rare
    assert listed(client, entity="RARE", application=SHOP_B) == []
    assert listed(client, entity="RARE", type="lead.created") == [i for i in rare if i in posted["RARE"][:1]]
    assert listed(client, entity="NOBODY") == []
    assert listed(client, rule="youtube") == list(reversed(youtube))
    assert listed(client, rule="youtube", entity="RARE") == [i for i in rare if i in youtube]
    assert listed(client, rule="every-opportunity") == list(reversed(opportunities))
    assert listed(client, status="failed") == [poisoned]
    assert listed(client, status="done", limit=1000) == [*reversed(opportunities), *newest_first, warm_up]
    created = every[:8]  # n <= 7: lead.created
    for swept in (False, True):  # before the maintenance's sweep the newest events are walked; after it, indexed
        if swept:
            assert Sweep(client).run() == 1
        assert listed(client, status="quarantined") == [quarantined["event_id"]]
        assert listed(client, type="opportunity.created") == list(reversed(opportunities))
        assert listed(client, type="lead.created") == [quarantined["event_id"], *reversed(created), warm_up]
        assert listed(client, type="lead.created", status="done", limit=3) == list(reversed(created))[:3]
    assert client.zscore("hr:idx:status:quarantined", quarantined["event_id"])
    assert client.zscore("hr:idx:type:lead.created", quarantined["event_id"])

    # The rule pages: every event a rule listened to, matched or not; a rule of another application hears none.
    heard = rule_events(client, "youtube", limit=100)
    assert ids(heard) == [*newest_first, warm_up]
    assert {row["id"] for row in heard if "youtube" in row["matched"]} == set(youtube)
    assert ids(rule_events(client, "youtube", limit=3)) == newest_first[:3]
    assert rule_events(client, "shop-b-only") == []
    assert rule_events(client, "no-such-rule") == []

    # Paging through an index: the pages join up, nothing twice, nothing left out.
    first = list_events(client, EventFilter(status="done"), limit=10)
    second = list_events(client, EventFilter(status="done"), limit=10, offset=first.next_offset or 0)
    assert ids(first.rows) + ids(second.rows) == [*reversed(opportunities), *newest_first][:20]

    # The admin API reads the same model.
    answer = deployment.admin("GET", "/admin/events", params={"entity": "RARE", "status": "done"}).json()
    assert [e["id"] for e in answer["events"]] == [i for i in rare if i != poisoned]


def test_a_timeline_is_in_receive_order_with_the_events_still_waiting(deploy) -> None:
    deployment = deploy(RULES)
    start_indexing(deployment)
    first = [deployment.post("lead.created" if n == 0 else "lead.updated", lead("T1", n)) for n in range(3)]
    deployment.post("lead.created", lead("T2", 0))
    deployment.run_burst()
    waiting = deployment.post("lead.updated", lead("T1", 3))  # not processed yet

    timeline = entity_events(deployment.client, "T1")
    assert ids(timeline) == [*first, waiting]
    assert [row["status"] for row in timeline] == ["done", "done", "done", "received"]
    assert [row["type"] for row in timeline] == ["lead.created", "lead.updated", "lead.updated", "lead.updated"]
    assert ids(entity_events(deployment.client, "T1", application=SHOP_A)) == [*first, waiting]
    assert ids(entity_events(deployment.client, "T1", limit=2)) == [first[2], waiting]  # the latest, in order
    assert entity_events(deployment.client, "T1", application=SHOP_B) == []

    # A lead whose only event still waits is found when its application is named.
    newcomer = deployment.post("lead.created", lead("T3", 0))
    assert ids(entity_events(deployment.client, "T3", application=SHOP_A)) == [newcomer]


def test_events_from_before_indexing_began_are_found_by_the_walk_once(deploy) -> None:
    deployment = deploy(RULES)
    before = [deployment.post("lead.created" if n == 0 else "lead.updated", lead("OLD", n, "Youtube"))
              for n in range(2)]  # fmt: skip
    assert list_events(deployment.client, EventFilter(entity="OLD"), limit=10).rows  # nothing indexed: walked
    deployment.run_burst()  # the first commit: events received before it count as history
    after = deployment.post("lead.updated", lead("OLD", 2, "Youtube"))
    deployment.run_burst()
    expected = [after, *reversed(before)]
    assert listed(deployment.client, entity="OLD") == expected
    assert listed(deployment.client, rule="youtube") == expected
    assert listed(deployment.client, status="done") == expected
    assert ids(entity_events(deployment.client, "OLD")) == list(reversed(expected))


def test_retention_takes_events_out_of_every_index(deploy) -> None:
    # The default retention for the workers: with 1 s, a slow burst's own maintenance trimmed events
    # before the test did (a flake). The test's own Retention objects say how long events are kept.
    deployment = deploy(RULES)
    client = deployment.client
    start_indexing(deployment)
    for n in range(12):
        deployment.post("lead.created" if n < 2 else "lead.updated", lead(f"R{n % 3}", n, "Youtube"))
    deployment.run_burst()
    assert "hr:idx:entity:" + SHOP_A + ":lead:R0" in index_keys(client)

    retention = Retention(client, retention=3600)
    assert retention.trim(max_events=5) == 8  # the cap: the oldest finished events go
    kept = {member.decode() for member in client.zrange(EVENTS_INDEX, 0, -1)}
    assert len(kept) == 5
    for key in index_keys(client):
        assert {m.decode() for m in client.zrange(key, 0, -1)} <= kept, f"{key} names an event that is gone"
    for lead_id in ("R0", "R1", "R2", "WARM-UP"):
        for member in client.smembers(f"hr:idx:entity-keys:{lead_id}"):
            assert client.exists(member), f"the entity-keys of {lead_id} name an empty index"
    assert not client.exists("hr:idx:entity-keys:WARM-UP")

    let_redis_time_pass(client, 1.2)
    assert Retention(client, retention=1).trim(max_events=1000) == 5
    assert index_keys(client) == [] and client.keys("hr:idx:entity-keys:*") == []
    assert listed(client, entity="R0") == [] and rule_events(client, "youtube") == []


def test_a_replay_and_a_second_processing_leave_no_duplicate_or_stale_entry(deploy) -> None:
    deployment = deploy(RULES)
    client = deployment.client
    warm_up = start_indexing(deployment)
    original = deployment.post("lead.created", lead("P1", 0, "Youtube"))
    deployment.run_burst()
    replayed = deployment.admin("POST", f"/admin/events/{original}/replay").json()["event_id"]
    deployment.run_burst()
    entity_index = f"hr:idx:entity:{SHOP_A}:lead:P1"
    assert [m.decode() for m in client.zrange(entity_index, 0, -1)] == [original, replayed]
    assert listed(client, entity="P1") == [replayed, original]
    assert listed(client, rule="youtube", entity="P1") == [replayed, original]
    assert json.loads(client.hget(f"hr:event:{original}", "indexed")) == [
        entity_index, "hr:idx:status:done", "hr:idx:type:lead.created", "hr:idx:rule:youtube",
        "hr:idx:matched:youtube"]  # fmt: skip

    # Processed again (as after a crash between its start and its commit), now failing: it leaves
    # the done index and its rule's, and is in the failed one, once.
    queue_key = f"hr:queue:{SHOP_A}:lead:P1"
    client.lpush(queue_key, original)
    client.hset(f"hr:event:{original}", mapping={"status": "processing", "body": b"{damaged"})
    jobs.enqueue_drain(client, queue_key, "again")
    deployment.run_burst()
    assert client.hget(f"hr:event:{original}", "status") == b"failed"
    assert listed(client, status="failed") == [original]
    assert listed(client, status="done", entity="P1") == [replayed]
    assert client.zscore("hr:idx:status:done", original) is None
    assert client.zscore("hr:idx:matched:youtube", original) is None
    assert ids(rule_events(client, "youtube")) == [replayed, warm_up]
    assert [m.decode() for m in client.zrange(entity_index, 0, -1)] == [original, replayed]
    assert json.loads(client.hget(f"hr:event:{original}", "indexed")) == [
        entity_index, "hr:idx:status:failed", "hr:idx:type:lead.created"]  # fmt: skip


def test_the_sweep_indexes_quarantined_events_and_waits_for_those_not_committed(deploy) -> None:
    deployment = deploy(RULES)
    client = deployment.client
    sweep = Sweep(client)
    assert sweep.run() == 0  # nothing indexed yet: nothing to sweep from

    def quarantine() -> str:
        answer = requests.post(f"{deployment.url}/hooks/lead.updated", params={"token": SHOP_A_TOKEN},
                               data=b"[1, 2]", timeout=10).json()  # fmt: skip
        assert answer["status"] == "quarantined"
        return answer["event_id"]

    start_indexing(deployment)
    first = quarantine()
    waiting = deployment.post("lead.updated", lead("W1", 1))
    second = quarantine()
    assert sweep.run() == 1  # the first; the second comes after an event a worker has not committed yet
    assert int(client.get(SWEPT)) < int(client.zscore(EVENTS_INDEX, waiting))
    assert client.zscore("hr:idx:status:quarantined", second) is None
    assert listed(client, status="quarantined") == [second, first]  # the newest are walked meanwhile
    assert listed(client, type="lead.updated") == [second, waiting, first]

    deployment.run_burst()
    assert sweep.run() == 1
    assert int(client.get(SWEPT)) == int(client.zscore(EVENTS_INDEX, second))
    assert [m.decode() for m in client.zrange("hr:idx:status:quarantined", 0, -1)] == [first, second]
    assert listed(client, type="lead.updated") == [second, waiting, first]
    assert sweep.run() == 0 and int(client.get(SWEPT)) == int(client.zscore(EVENTS_INDEX, second))

    # Quarantined events leave their indexes with retention, like every finished event.
    assert Retention(client, retention=3600).trim(max_events=0) == 4
    assert index_keys(client) == []


def test_a_rule_index_keeps_only_the_latest_events_the_rule_heard(deploy, monkeypatch) -> None:
    monkeypatch.setattr(state_store, "RULE_HEARD_KEPT", 3)  # 1,000 in production
    deployment = deploy(RULES)
    start_indexing(deployment)
    posted = [deployment.post("lead.updated", lead("K1", n, "Youtube" if n % 2 else "Zalo")) for n in range(6)]
    deployment.run_burst()
    assert ids(rule_events(deployment.client, "youtube", limit=50)) == list(reversed(posted))[:3]
    # What it matched stays whole: the list's rule filter finds every one.
    assert listed(deployment.client, rule="youtube") == list(reversed(posted))[::2]


def test_hanas_retries_are_charted_as_duplicates_and_leave_the_chart_with_retention(deploy) -> None:
    from engine.rules.compiler import compile_texts
    from engine.runtime.overview import chart_bars, read_overview

    deployment = deploy(RULES)
    client = deployment.client
    body = lead("RETRIED", 1)
    first = deployment.post("lead.created", body)
    for _ in range(3):  # Hana sends the same body again: each answered as a duplicate of the first
        answer = requests.post(f"{deployment.url}/hooks/lead.created", params={"token": SHOP_A_TOKEN},
                               json=body, timeout=10).json()  # fmt: skip
        assert answer == {**answer, "status": "duplicate", "event_id": first}
    deployment.run_burst()
    overview = read_overview(client, compile_texts({}))
    assert overview.received_24h == 1 and overview.duplicates_24h == 3
    last = chart_bars(overview)[-1]
    assert (last["count"], last["duplicates"]) == (1, 3)
    assert last["duplicates_y"] + last["duplicates_height"] == last["y"]  # stacked on the received part

    let_redis_time_pass(client, 1.2)
    assert Retention(client, retention=1).trim(max_events=1000) == 4  # the event and its three retries
    assert read_overview(client, compile_texts({})).duplicates_24h == 0 and index_keys(client) == []
