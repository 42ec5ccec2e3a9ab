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

EVENTS_QUEUE = "events"
PROCESS_EVENT = "engine.runtime.jobs.process_event"
#: A job runs at most this long; with SimpleWorker's heartbeat TTL (timeout + 60 s) and the
#: workers' 15 s maintenance, the work of a dead worker is taken up within 2 minutes.
JOB_TIMEOUT = 30
PROCESS_EVENT_RETRIES = 3
_PLACEHOLDER = "__hana_rules_event_id__"


def event_job_id(event_id: str) -> str:
    """Derived from the event id, so enqueuing one event twice is recognisable."""
    return f"ev-{event_id}"


def queue(connection: redis.Redis, name: str = EVENTS_QUEUE) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer, default_timeout=JOB_TIMEOUT)


@dataclass(frozen=True)
class JobTemplate:
    """The fields of an RQ job hash for `process_event(<event id>)`, minus what varies."""

    queue_key: str
    queues_key: str
    job_key_prefix: str
    fields: tuple[tuple[str, bytes | str | int], ...]
    data: bytes

    @classmethod
    def for_events(cls, connection: redis.Redis) -> JobTemplate:
        events = queue(connection)
        job = Job.create(
            PROCESS_EVENT,
            args=[_PLACEHOLDER],
            id=event_job_id("template"),
            connection=connection,
            serializer=JSONSerializer,
            timeout=JOB_TIMEOUT,
            result_ttl=0,  # the outcome lives on the event, not in RQ
            failure_ttl=7 * 86400,
            retry=Retry(max=PROCESS_EVENT_RETRIES),
        )
        job.origin = events.name
        job.enqueued_at = datetime.now(UTC)
        # Empty fields are what RQ's Job.restore reads as absent; leaving them out halves the
        # arguments of the receiver's one Redis call. A real worker consumes these jobs in the tests.
        fields = {
            key: value
            for key, value in job.to_dict().items()
            if key not in ("data", "created_at", "enqueued_at") and value != ""
        }
        fields["description"] = "process_event"
        fields["status"] = "queued"
        return cls(
            queue_key=events.key,
            queues_key=Queue.redis_queues_keys,
            job_key_prefix=Job.redis_job_namespace_prefix,
            fields=tuple(fields.items()),
            data=job.data,
        )

    def job_fields(self, event_id: str) -> list[bytes | str | int]:
        """Flat field/value list of the job hash for one event."""
        data = self.data.replace(json.dumps(_PLACEHOLDER).encode(), json.dumps(event_id).encode())
        stamp = utcformat(datetime.now(UTC))
        flat: list[bytes | str | int] = ["data", zlib.compress(data), "created_at", stamp, "enqueued_at", stamp]
        for key, value in self.fields:
            flat += [key, value]
        return flat
