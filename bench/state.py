"""What per-entity ordering costs: events/s through process_event, one hot lead vs many leads.

    python bench/state.py [--events 2000]

Real `hana-rules worker` processes (RQ SimpleWorkers) against an embedded
Redis, the example rules loaded, events accepted through the receiver's own
accept script. Baseline in the same run: the rate at which the same worker
processes drain no-op RQ jobs (`os.getpid`). bench/fields.py measures the
attribute catalogue with these helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from bench.baseline import drain_noop  # noqa: E402
from engine.config import load_settings, with_generated_tokens  # noqa: E402
from engine.runtime.embedded import EmbeddedRedis  # noqa: E402
from engine.runtime.events import WAITING_QUEUES, EventStore  # noqa: E402
from engine.runtime.intake import Intake  # noqa: E402
from engine.runtime.journal import Journal  # noqa: E402

SAMPLE = json.loads((ROOT / "tests" / "data" / "events" / "lead.created.json").read_text())


#: `hana-rules worker` with the attribute catalogue turned off (fields.MAX_ATTRIBUTES = 0).
WITHOUT_CATALOGUE = ("import engine.runtime.fields as fields; fields.MAX_ATTRIBUTES = 0; "
                     "from engine.cli import main; main()")  # fmt: skip


def start_workers(count: int, config: Path, redis_url: str, client: redis.Redis,
                  *, catalogue: bool = True) -> list[subprocess.Popen[bytes]]:  # fmt: skip
    environment = {**os.environ, "REDIS_URL": redis_url}
    program = ["-m", "engine.cli"] if catalogue else ["-c", WITHOUT_CATALOGUE]
    workers = [subprocess.Popen([sys.executable, *program, "worker", "--config", str(config)],
                                env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(count)]  # fmt: skip
    deadline = time.monotonic() + 30
    while client.scard("rq:workers") < count:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start")
        time.sleep(0.05)
    return workers


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(30)


def wait_until(check, timeout: float = 300) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.01)


def body(lead_id: str, seq: int, wide: int = 0) -> bytes:
    """The sample lead; with `wide`, padded with custom attributes up to that many."""
    data = json.loads(json.dumps(SAMPLE))
    data["lead"]["id"] = {"nomalizeData": lead_id, "rawData": lead_id}
    for index in range(len(data["lead"]) + 2, wide + 1):
        value = f"value {seq % 5}"
        data["lead"][f"cf_string_extra_{index:02d}"] = {"nomalizeData": value, "rawData": value}
    data["lead"]["cf_number_seq"] = {"nomalizeData": seq, "rawData": seq}
    # already +84: the example phone rule does not act, so this measures evaluation and ordering only
    data["lead"]["basePhonenumber"] = {"nomalizeData": "+84978712200", "rawData": "+84978712200"}
    return json.dumps(data).encode()


MEMORY: dict[str, float] = {}


def run_events(intake: Intake, client: redis.Redis, count: int, distinct: bool, *, wide: int = 0,
               measure: bool = True, prefix: str = "L") -> float:  # fmt: skip
    bodies = [body(f"{prefix}{i}" if distinct else "HOT", i, wide) for i in range(count)]
    application = intake.settings.applications[0]
    before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    for data in bodies:
        intake.receive("lead.updated" if not distinct else "lead.created", data, application)
    wait_until(lambda: client.zcard(WAITING_QUEUES) == 0 and client.llen("rq:queue:events") == 0)
    rate = count / (time.perf_counter() - started)
    wait_until(lambda: client.llen("rq:queue:actions") == 0)
    if distinct and measure:  # event, trace, action records, the lead's state, the dedup key: what retention keeps
        MEMORY["per_event"] = (client.info("memory")["used_memory"] - before) / count
        MEMORY["event_hash"] = statistics.mean(
            client.memory_usage(f"hr:event:{i.decode()}", samples=0) or 0 for i in client.zrange("hr:events", -50, -1)
        )
    return rate


@contextmanager
def deployment() -> Iterator[tuple[Path, EmbeddedRedis, redis.Redis, Intake]]:
    """A settings file with the example rules, an embedded Redis and the receiver's intake, in a temporary
    folder: (settings file, Redis, a client, intake). bench/fields.py starts its workers the same way."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        config = work / "hana-rules.yaml"
        config.write_text(f"rules_dir: {ROOT / 'rules'}\ndata_dir: {work / 'var'}\nlog_format: text\n")
        with EmbeddedRedis(work / "redis") as server:
            client = redis.Redis.from_url(server.url)
            settings = with_generated_tokens(replace(load_settings(config, env={}), redis_url=server.url))
            yield config, server, client, Intake(settings, EventStore(client), Journal(work / "var"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    arguments = parser.parse_args()
    results: dict[tuple[int, str], float] = {}
    with deployment() as (config, server, client, intake):
        for workers in (1, 2):
            client.flushall()
            processes = start_workers(workers, config, server.url, client)
            try:
                results[(workers, "no-op RQ jobs")] = drain_noop(client, arguments.events)
                results[(workers, "1,000+ distinct leads")] = run_events(intake, client, arguments.events, True)
                results[(workers, "one hot lead")] = run_events(intake, client, arguments.events, False)
            finally:
                stop(processes)
    print(f"\nevents/s through process_event ({arguments.events} events each; example rules; "
          f"accept + state + evaluation + commit)")  # fmt: skip
    print(f"{'':24} {'1 worker':>10} {'2 workers':>10}")
    for name in ("no-op RQ jobs", "1,000+ distinct leads", "one hot lead"):
        print(f"{name:24} {results[(1, name)]:>10.0f} {results[(2, name)]:>10.0f}")
    print(
        f"Redis memory per processed event (the sample lead, example rules): {MEMORY['per_event'] / 1024:.1f} KiB "
        f"in all, of which the event's own hash (body, context, trace) {MEMORY['event_hash'] / 1024:.1f} KiB"
    )
    for workers in (1, 2):
        noop = results[(workers, "no-op RQ jobs")]
        print(f"{workers} worker(s): distinct leads at {results[(workers, '1,000+ distinct leads')] / noop:.2f}x "
              f"the no-op rate, hot lead at {results[(workers, 'one hot lead')] / noop:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
