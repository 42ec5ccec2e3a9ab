"""process_event through real RQ SimpleWorkers: receiver → Redis → worker is one real path."""

from __future__ import annotations

import json
import time

import redis
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from engine.config import Settings
from engine.rules.compiler import compile_texts
from engine.runtime.events import EventStatus, EventStore
from engine.runtime.intake import Intake
from engine.runtime.journal import Journal
from engine.runtime.queues import JOB_TIMEOUT, event_job_id, queue
from engine.runtime.retention import Retention
from engine.runtime.worker import MAINTENANCE_INTERVAL, WORKER_TTL, build_worker
from tests.conftest import SHOP_A
from tests.helpers import sample_bytes


def accept(settings: Settings, client: redis.Redis, body: bytes, event_type: str = "lead.created") -> str:
    intake = Intake(settings, EventStore(client), Journal(settings.data_dir))
    receipt = intake.receive(event_type, body, settings.applications[0])
    return receipt.event_id


def test_worker_records_the_normalized_context_on_the_event(settings: Settings, redis_client: redis.Redis) -> None:
    event_id = accept(settings, redis_client, sample_bytes())
    build_worker(settings, redis_client).work(burst=True)
    event = EventStore(redis_client).load(event_id)
    assert event.status is EventStatus.DONE
    assert event.context["lead"]["baseName"] == "Toan Truyen"
    assert event.context["application"] == {"id": "dbd9a5f7-b3c4-45bb-a8eb-2b8e10bff8c2", "name": "Shop A"}
    assert event.context["event"]["type"] == "lead.created"
    assert event.warnings == ()


def test_worker_evaluates_the_rules_and_stores_the_trace_with_pending_actions(
    settings: Settings, redis_client: redis.Redis
) -> None:
    rule_set = compile_texts(
        {
            "rules/r.yaml": """
rules:
  - id: phone
    on: lead.created
    when: {field: lead.basePhonenumber, starts_with: "0"}
    then:
      - hana_update: {lead: {id: "{{ lead.id }}", basePhonenumber: "{{ lead.basePhonenumber | phone_e164 }}"}}
  - id: never
    on: lead.created
    when: {field: lead.baseName, equals: nobody}
"""
        }
    )
    event_id = accept(settings, redis_client, sample_bytes())
    build_worker(settings, redis_client, rule_set=rule_set).work(burst=True)
    stored = {k.decode(): v for k, v in redis_client.hgetall(f"hr:event:{event_id}").items()}
    assert stored["version"].decode() == rule_set.version
    assert json.loads(stored["matched"]) == ["phone"]
    evaluation = json.loads(stored["evaluation"])
    assert [r["id"] for r in evaluation["rules"]] == ["phone", "never"]
    assert evaluation["rules"][1]["conditions"][0]["value"] == "Toan Truyen"
    assert json.loads(stored["actions"]) == [{
        "rule": "phone", "index": 0, "kind": "hana_update", "status": "pending", "attempts": [],
        "payload": {"lead": {"id": "e734c76a-52ca-44f0-a21e8e1fe627c308", "basePhonenumber": "+84978712200"}},
    }]  # fmt: skip


def test_warnings_of_a_surprising_body_are_kept_on_the_event(settings: Settings, redis_client: redis.Redis) -> None:
    event_id = accept(settings, redis_client, b'{"lead": {"id": "L1", "cf_number_x": "many"}}', "lead.updated")
    build_worker(settings, redis_client).work(burst=True)
    event = EventStore(redis_client).load(event_id)
    assert event.status is EventStatus.DONE
    assert any("application.id is missing" in w for w in event.warnings)
    assert any("cf_number_x should be a number" in w for w in event.warnings)


def test_jobs_are_json_and_carry_only_the_event_id(settings: Settings, redis_client: redis.Redis) -> None:
    event_id = accept(settings, redis_client, sample_bytes())
    data = redis_client.hget(f"rq:job:{event_job_id(event_id)}", "data")
    function, instance, args, kwargs = json.loads(data)  # JSON, not pickle; uncompressed, which RQ reads too
    assert function == "engine.runtime.jobs.process_event"
    assert (instance, args, kwargs) == (None, [event_id], {})
    job = Job.fetch(event_job_id(event_id), connection=redis_client, serializer=JSONSerializer)
    assert (job.func_name, job.args, job.origin, job.get_status()) == (function, [event_id], "events", "queued")


def test_processing_an_event_twice_is_a_no_op(settings: Settings, redis_client: redis.Redis) -> None:
    event_id = accept(settings, redis_client, sample_bytes())
    build_worker(settings, redis_client).work(burst=True)
    queue(redis_client).enqueue("engine.runtime.jobs.process_event", event_id)  # e.g. an admin's mistake
    build_worker(settings, redis_client).work(burst=True)
    assert EventStore(redis_client).load(event_id).runs == 1


def test_the_job_of_a_dead_worker_is_taken_up_by_another(settings: Settings, redis_client: redis.Redis) -> None:
    event_id = accept(settings, redis_client, sample_bytes())
    doomed = build_worker(settings, redis_client)
    job, job_queue = doomed.dequeue_job_and_maintain_ttl(timeout=1)
    doomed.prepare_execution(job)  # what SimpleWorker.execute_job does before running the function …
    doomed.prepare_job_execution(job)  # … and the worker dies here, without finishing it
    registry = StartedJobRegistry(queue=job_queue)
    assert registry.count == 1

    # What a surviving worker's maintenance does once the dead worker's heartbeat has expired:
    heartbeat_expiry = JOB_TIMEOUT + 60
    registry.cleanup(timestamp=time.time() + heartbeat_expiry + 1)
    build_worker(settings, redis_client).work(burst=True)

    event = EventStore(redis_client).load(event_id)
    assert event.status is EventStatus.DONE and event.runs == 1
    # The promise of SPEC §6: the heartbeat expires, then maintenance runs within its interval.
    assert heartbeat_expiry + MAINTENANCE_INTERVAL <= 120
    assert WORKER_TTL - 15 <= MAINTENANCE_INTERVAL  # an idle worker wakes up often enough to do it


def test_retention_trims_finished_events_by_count_with_their_records(
    settings: Settings, redis_client: redis.Redis
) -> None:
    rule_set = compile_texts({"r.yaml": "rules:\n  - {id: hi, on: lead.created, then: [{log: hi}]}\n"})
    ids = [accept(settings, redis_client, b'{"lead": {"id": "L%d"}}' % n) for n in range(5)]
    build_worker(settings, redis_client, rule_set=rule_set).work(burst=True)
    assert all(redis_client.exists(f"hr:action:{i}:hi:0") for i in ids)
    retention = Retention(redis_client, retention=60)
    assert retention.trim(max_events=3) == 2
    assert EventStore(redis_client).recent(10) == ids[:1:-1]  # the three newest remain, newest first
    assert not redis_client.exists(f"hr:event:{ids[0]}") and not redis_client.exists(f"hr:action:{ids[0]}:hi:0")
    redis_client.zadd("hr:events", {"ancient": 1})  # an index entry whose event is long gone
    assert retention.trim(max_events=100) == 1
    assert redis_client.ttl(f"hr:event:{ids[-1]}") == -1  # nothing expires by itself: only finished events go


def test_a_body_without_application_id_belongs_to_its_tokens_application(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Rules limited to an application must not silently skip its events that lack application.id."""
    rule = f"{{id: shop-a-only, on: lead.created, applications: [{SHOP_A}]}}"
    rule_set = compile_texts({"r.yaml": f"rules:\n  - {rule}\n"})
    event_id = accept(settings, redis_client, b'{"lead": {"id": "L1"}}')  # the token is Shop A's
    build_worker(settings, redis_client, rule_set=rule_set).work(burst=True)
    event = EventStore(redis_client).load(event_id)
    assert json.loads(event.fields["matched"]) == ["shop-a-only"]
    assert event.context["application"] == {"id": SHOP_A, "name": "Shop A"}
    assert "application.id is missing; the webhook token's application is used" in event.warnings
