"""RQ wiring: queue names, the JSON serializer and the one-round-trip enqueue.

An `rq.Queue.enqueue` costs eight Redis commands and about half a millisecond
of CPU, more than the whole rest of the receiver. So the receiver writes the
job hash RQ expects from a template built once by RQ itself, inside the same
Lua script that stores the event: one round trip for store + dedup + enqueue.
A real RQ worker consumes these jobs in the integration tests, so a change of
RQ's job format fails the suite instead of production.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from engine import config

EVENTS_QUEUE = "events"
ACTIONS_QUEUE = "actions"
#: Users' experiments (dry runs of a draft): workers take from it only when events and actions are empty.
DRAFTS_QUEUE = "drafts"
PROCESS_EVENT = "engine.runtime.jobs.process_event"
DRAIN_QUEUE = "engine.runtime.jobs.drain_queue"
RUN_ACTION = "engine.runtime.delivery.run_action"
#: A job runs at most this long; with SimpleWorker's heartbeat TTL (timeout + 60 s) and the
#: workers' 15 s maintenance, the work of a dead worker is taken up within 2 minutes.
JOB_TIMEOUT = int(config.JOB_TIMEOUT)
PROCESS_EVENT_RETRIES = 3
SCHEDULED_PREFIX = "rq:scheduled:"


def _placeholder(index: int) -> str:
    return f"__hana_rules_arg{index}__"


def event_job_id(event_id: str) -> str:
    """Derived from the event id, so enqueuing one event twice is recognisable."""
    return f"ev-{event_id}"


def queue_key(name: str) -> str:
    """The Redis list RQ keeps a queue's job ids in."""
    return f"{Queue.redis_queue_namespace_prefix}{name}"


def queue(connection: redis.Redis, name: str = EVENTS_QUEUE) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer, default_timeout=JOB_TIMEOUT)


@dataclass(frozen=True)
class JobTemplate:
    """The fields of an RQ job hash for `function(<ids>)`, minus what varies.

    Built once by RQ itself, so Lua scripts can write jobs RQ workers run, atomically
    with the data they belong to.
    """

    queue_key: str
    queues_key: str
    job_key_prefix: str
    scheduled_key: str
    fields: tuple[tuple[str, bytes | str | int], ...]
    data: bytes
    arity: int

    @classmethod
    def for_events(cls, connection: redis.Redis) -> JobTemplate:
        return cls.build(connection, PROCESS_EVENT, EVENTS_QUEUE, arity=1)

    @classmethod
    def build(cls, connection: redis.Redis, function: str, queue_name: str, *, arity: int,
              retries: int = PROCESS_EVENT_RETRIES) -> JobTemplate:  # fmt: skip
        """`retries`: how often RQ itself runs the job again after it failed (a worker died mid-job).

        Action jobs take 0: their own state machine decides every retry, so RQ never re-sends.
        """
        target = queue(connection, queue_name)
        job = Job.create(
            function,
            args=[_placeholder(i) for i in range(arity)],
            id="template",
            connection=connection,
            serializer=JSONSerializer,
            timeout=JOB_TIMEOUT,
            result_ttl=0,  # outcomes live on events and actions, not in RQ
            failure_ttl=7 * 86400,
            retry=Retry(max=retries) if retries else None,
        )
        job.origin = target.name
        job.enqueued_at = datetime.now(UTC)
        # Empty fields are what RQ's Job.restore reads as absent; leaving them out halves the
        # arguments of the receiver's one Redis call. A real worker consumes these jobs in the tests.
        fields = {
            key: value
            for key, value in job.to_dict().items()
            if key not in ("data", "created_at", "enqueued_at") and value != ""
        }
        fields["description"] = function.rsplit(".", 1)[1]
        fields["status"] = "queued"
        return cls(
            queue_key=target.key,
            queues_key=Queue.redis_queues_keys,
            job_key_prefix=Job.redis_job_namespace_prefix,
            scheduled_key=f"{SCHEDULED_PREFIX}{target.name}",
            fields=tuple(fields.items()),
            data=job.data,
            arity=arity,
        )

    def constant_fields(self, status: str = "queued") -> list[bytes | str | int]:
        """Flat field/value list of what every job of this template has in common."""
        flat: list[bytes | str | int] = []
        for key, value in self.fields:
            flat += [key, status if key == "status" else value]
        return flat

    def data_parts(self) -> list[bytes]:
        """The job's uncompressed data cut around its arguments: arity + 1 parts.

        Each argument goes between two parts as a JSON string body: for ids of [0-9a-z_-]
        that is the id itself, which lets a Lua script compose the data from the ids alone.
        """
        parts = [self.data]
        for index in range(self.arity):
            before, after = parts.pop().split(_placeholder(index).encode())
            parts += [before, after]
        return parts

    def job_fields(self, *args: str, status: str = "queued") -> list[bytes | str | int]:
        """Flat field/value list of the job hash for these arguments."""
        assert len(args) == self.arity
        data = self.data
        for index, value in enumerate(args):
            data = data.replace(json.dumps(_placeholder(index)).encode(), json.dumps(value).encode())
        stamp = utcformat(datetime.now(UTC))
        return ["data", zlib.compress(data), "created_at", stamp, "enqueued_at", stamp, *self.constant_fields(status)]
