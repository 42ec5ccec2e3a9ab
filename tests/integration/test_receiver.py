"""Every row of SPEC §4's table, over real HTTP, against a real Redis."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import pytest
import redis
import requests

from engine.runtime.events import EventStatus, EventStore
from tests.conftest import SHOP_A, SHOP_A_TOKEN, SHOP_B_TOKEN
from tests.helpers import sample, sample_bytes


def post(base: str, event_type: str, body: bytes | dict | list, *, token: str | None = SHOP_A_TOKEN,
         header: bool = False) -> requests.Response:  # fmt: skip
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    params = {"token": token} if token and not header else {}
    headers = {"Content-Type": "application/json"}
    if token and header:
        headers["X-Webhook-Token"] = token
    return requests.post(f"{base}/hooks/{event_type}", params=params, data=data, headers=headers, timeout=10)


def nothing_stored(client: redis.Redis) -> bool:
    """No event, no index entry, no job: what "nothing stored" means to a user."""
    leftovers = [k.decode() for k in client.keys("hr:event*") + client.keys("rq:queue:*") + client.keys("hr:queue*")]
    assert leftovers == [], f"stored: {leftovers}"
    return True


def stored(client: redis.Redis, event_id: str):
    return EventStore(client).load(event_id)


def lead(name: str, lead_id: str = "L1", app: str = SHOP_A) -> dict:
    return {"application": {"id": app}, "lead": {"id": {"nomalizeData": lead_id, "rawData": lead_id},
                                                  "baseName": {"nomalizeData": name, "rawData": name}}}  # fmt: skip


def test_accepted_event_is_stored_before_the_answer(receiver: str, redis_client: redis.Redis) -> None:
    answer = post(receiver, "lead.created", sample_bytes())
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "accepted"
    event = stored(redis_client, body["event_id"])  # no waiting: it must be there already
    assert event is not None
    assert event.body == sample_bytes()
    assert event.type == "lead.created"
    assert event.status is EventStatus.RECEIVED
    assert redis_client.llen("rq:queue:events") == 1


def test_token_may_come_in_the_header(receiver: str) -> None:
    assert post(receiver, "lead.created", sample(), header=True).json()["status"] == "accepted"


def test_hana_retry_is_a_duplicate_answered_with_the_first_id(receiver: str, redis_client: redis.Redis) -> None:
    first = post(receiver, "lead.updated", sample()).json()
    # Same JSON, different key order and spacing: still Hana's retry of the same call.
    reordered = json.dumps(dict(reversed(list(sample().items()))), indent=2).encode()
    second = post(receiver, "lead.updated", reordered).json()
    assert second == {"status": "duplicate", "event_id": first["event_id"]}
    assert redis_client.llen("rq:queue:events") == 1
    assert stored(redis_client, first["event_id"]).duplicates == 1


def test_lead_toggled_back_and_forth_is_four_events(receiver: str, redis_client: redis.Redis) -> None:
    answers = [post(receiver, "lead.updated", lead(name)).json() for name in ("A", "B", "A", "B")]
    assert [a["status"] for a in answers] == ["accepted"] * 4
    ids = [a["event_id"] for a in answers]
    assert len(set(ids)) == 4
    # Queued behind each other in arrival order; one job drains the lead's queue.
    assert [i.decode() for i in redis_client.lrange(f"hr:queue:{SHOP_A}:lead:L1", 0, -1)] == ids
    assert redis_client.llen("rq:queue:events") == 1


def test_same_body_under_another_event_type_is_not_a_duplicate(receiver: str) -> None:
    assert post(receiver, "lead.created", lead("A")).json()["status"] == "accepted"
    assert post(receiver, "lead.updated", lead("A")).json()["status"] == "accepted"


def test_other_leads_do_not_break_duplicate_detection(receiver: str) -> None:
    first = post(receiver, "lead.updated", lead("A", "L1")).json()
    post(receiver, "lead.updated", lead("X", "L2"))
    assert post(receiver, "lead.updated", lead("A", "L1")).json() == {
        "status": "duplicate", "event_id": first["event_id"],
    }  # fmt: skip


@pytest.mark.parametrize(
    "odd_value",
    [b"123456789012345678901234567890", b"1e400"],
    ids=["integer beyond 64 bits", "float overflow"],
)
def test_valid_json_the_fast_parser_refuses_is_accepted_and_deduplicated(
    receiver: str, redis_client: redis.Redis, odd_value: bytes
) -> None:
    body = json.dumps(lead("A")).encode()[:-1] + b', "extra": ' + odd_value + b"}"
    first = post(receiver, "lead.updated", body).json()
    assert first["status"] == "accepted"
    assert post(receiver, "lead.updated", body).json() == {"status": "duplicate", "event_id": first["event_id"]}
    assert stored(redis_client, first["event_id"]).body == body


@pytest.mark.parametrize("token", [None, "wrong-token", SHOP_A_TOKEN[:-1], SHOP_A_TOKEN + "x"])
def test_missing_or_wrong_token_is_401_and_nothing_is_stored(
    receiver: str, redis_client: redis.Redis, token: str | None
) -> None:
    answer = post(receiver, "lead.created", sample(), token=token)
    assert answer.status_code == 401
    assert "token" in answer.json()["error"]
    assert nothing_stored(redis_client)


def test_unknown_event_type_is_404_listing_the_valid_ones(receiver: str, redis_client: redis.Redis) -> None:
    answer = post(receiver, "lead.exploded", sample())
    assert answer.status_code == 404
    assert "lead.exploded" in answer.json()["error"]
    assert "opportunity.deleted" in answer.json()["valid"] and "ticket.created" in answer.json()["valid"]
    assert nothing_stored(redis_client)


def test_ticket_alias_is_stored_as_opportunity(receiver: str, redis_client: redis.Redis) -> None:
    answer = post(receiver, "ticket.created", {"application": {"id": SHOP_A}, "opportunity": {"id": "O1"}}).json()
    assert stored(redis_client, answer["event_id"]).type == "opportunity.created"


def test_body_over_1_mib_is_413_before_the_body_is_read(receiver: str, redis_client: redis.Redis) -> None:
    url = urlparse(receiver)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    # Announce 2 MiB but send none of it: the answer must come without the body being read.
    connection.putrequest("POST", f"/hooks/lead.created?token={SHOP_A_TOKEN}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(2 * 1024 * 1024))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 413
    assert "1 MiB" in json.loads(answer.read())["error"]
    connection.close()
    assert nothing_stored(redis_client)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2, 3]", "JSON array, not an object"),
        (b'"text"', "JSON string, not an object"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"a":' * 50 + b"1" + b"}" * 50, "nested more than"),
        (b"[" * 200_000 + b"]" * 200_000, "nested more than"),
        (b'{"a":' * 200_000, "not valid JSON|nested more than"),
    ],
)
def test_bad_body_with_valid_token_is_quarantined_never_4xx_or_500(
    receiver: str, redis_client: redis.Redis, body: bytes, reason: str
) -> None:
    answer = post(receiver, "lead.updated", body)
    assert answer.status_code == 200
    result = answer.json()
    assert result["status"] == "quarantined"
    assert any(part in result["reason"] for part in reason.split("|")), result["reason"]
    event = stored(redis_client, result["event_id"])
    assert event.status is EventStatus.QUARANTINED
    assert event.body == body  # the raw bytes are kept for the admin
    assert redis_client.llen("rq:queue:events") == 0  # no rule runs


def test_body_of_another_application_is_quarantined(receiver: str, redis_client: redis.Redis) -> None:
    # Shop B's token with a body naming Shop A: a token never lets one application act as another.
    answer = post(receiver, "lead.created", sample(), token=SHOP_B_TOKEN)
    assert answer.status_code == 200
    assert answer.json()["status"] == "quarantined"
    assert "token belongs to 'Shop B'" in answer.json()["reason"]
    body = sample()
    body["application"]["id"] = "unknown-app"
    assert post(receiver, "lead.created", body).json()["status"] == "quarantined"
    assert redis_client.llen("rq:queue:events") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"lead": {"id": {"nomalizeData": "L1"}}},  # no application.id
        {"application": {"id": SHOP_A}, "lead": {"id": "L1", "baseName": "bare"}},  # no envelope
        {"application": {"id": SHOP_A}, "surprise": True, "lead": {"id": {"nomalizeData": "L1"}}},
        {"application": {"id": SHOP_A}},  # neither lead nor opportunity
    ],
)
def test_shape_surprises_are_accepted(receiver: str, body: dict) -> None:
    answer = post(receiver, "lead.updated", body)
    assert answer.status_code == 200 and answer.json()["status"] == "accepted"


def test_no_input_gets_a_500(receiver: str) -> None:
    for path in ("/hooks/", "/hooks/lead.created/extra", "/admin", "/hooks/" + "x" * 5000):
        assert requests.post(f"{receiver}{path}", params={"token": SHOP_A_TOKEN}, timeout=10).status_code < 500
    answer = requests.get(f"{receiver}/hooks/lead.created", timeout=10)
    assert answer.status_code == 405 and "error" in answer.json()


def test_health_and_readiness(receiver: str) -> None:
    assert requests.get(f"{receiver}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{receiver}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["redis"] == "ok"


def test_metrics_count_what_the_receiver_answered(receiver: str) -> None:
    def value(page: str, line_start: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(line_start))

    before = requests.get(f"{receiver}/metrics", timeout=10).text
    post(receiver, "lead.created", sample())
    post(receiver, "lead.created", sample())  # Hana's retry
    post(receiver, "lead.created", b"[]")
    post(receiver, "lead.created", sample(), token="wrong")
    after = requests.get(f"{receiver}/metrics", timeout=10).text
    for outcome, added in (("accepted", 1), ("duplicate", 1), ("quarantined", 1), ("401", 1)):
        line = f'hana_rules_events_received_total{{outcome="{outcome}",type="lead.created"}}'
        assert value(after, line) - value(before, line) == added, outcome
    assert value(after, "hana_rules_receive_seconds_count") - value(before, "hana_rules_receive_seconds_count") == 4
    assert 'hana_rules_queue_depth{queue="events"} 1.0' in after
    assert "hana_rules_dead_letters 0.0" in after and "hana_rules_journal_depth 0.0" in after
