"""The receiver's answer times while a dry run of 1,000 events runs on a worker, beside calm ones.

    python bench/dry_run_load.py [--duration 10] [--rounds 3] [--rate 100] [--events 1000]

Real processes, as in production: the receiver under hana-rules' own gunicorn
settings (bench/_server.py), one `hana-rules worker`, an embedded Redis. The set
running: 50 generated rules (bench/rules.py, log actions only: nothing leaves the
machine). Seeding (not timed): --events leads with varied attributes, posted to
the receiver and processed by the worker. Then, in interleaved rounds, wrk posts
webhooks at a steady --rate (Hana's traffic, not a flood: a flood keeps the
events queue full, and a worker never takes a dry run before events) for
--duration seconds:
  calm                          nothing else runs
  dry runs started in Redis     a draft of 50 other rules against the last --events
                                events, started again as soon as one finishes, for
                                the whole window, by dry_runs.start from this process:
                                the worker's share alone
  dry runs started by the API   the same through POST /admin/dry-runs, which first
                                compiles the draft on the receiver's threads (to refuse
                                a broken one at once); polled as the page polls it
Printed: the receiver's p50/p99 (wrk), and the processing lag of probe events
posted every 0.25 s (received → finished; a dry run yields to events every 250
events, so the lag stays within one chunk). Issue 14: Hana's answers must not
wait for a user's experiment.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.receiver import WRK_SCRIPT, body_template, run_wrk  # noqa: E402
from bench.rules import NOTES, SOURCES, STATUSES, generate  # noqa: E402
from engine.config import load_settings  # noqa: E402
from engine.runtime import dry_runs  # noqa: E402
from engine.runtime.drafts import compile_draft_texts  # noqa: E402
from engine.runtime.embedded import EmbeddedRedis, free_port  # noqa: E402
from engine.runtime.events import received_us_of  # noqa: E402


def rules_text(seed: int) -> str:
    rules, _ = generate(50, random.Random(seed))
    return "rules:\n" + "".join(rules)


def wait_until(check: Any, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def drained(client: redis.Redis) -> bool:
    return not (client.zcard("hr:queues") or client.llen("rq:queue:events") or client.llen("rq:queue:actions"))


class Probe(threading.Thread):
    """Posts one event every 0.25 s, so the lag of processing can be read afterwards."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.ids, self.stop = url, [], threading.Event()

    def run(self) -> None:
        session = requests.Session()
        number = 0
        while not self.stop.wait(0.25):
            number += 1
            body = body_template().replace("LEAD_ID", f"probe-{time.monotonic_ns()}-{number}")
            answer = session.post(self.url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
            self.ids.append(answer.json()["event_id"])


class DryRuns(threading.Thread):
    """Keeps a dry run going: a new one as soon as the last finished.

    Started through POST /admin/dry-runs (which compiles the draft on the receiver's threads
    to refuse a broken one), or, with `direct`, by the very function that endpoint calls next,
    from this process: the worker's share alone.
    """

    def __init__(self, base: str, token: str, rules_dir: Path, events: int, direct: redis.Redis | None) -> None:
        super().__init__(daemon=True)
        self.base, self.events, self.direct = base, events, direct
        self.draft = rules_text(8)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.durations: list[float] = []
        self.stop = threading.Event()
        settings = replace(load_settings(env={}), rules_dir=rules_dir)
        self.candidate, self.texts = compile_draft_texts(settings, {"bench.yaml": self.draft})

    def run(self) -> None:
        session = requests.Session()
        session.headers.update(self.headers)
        while not self.stop.is_set():
            started = time.monotonic()
            if self.direct is not None:
                run_id = dry_runs.start(self.direct, self.candidate, self.texts, drafts=["bench.yaml"],
                                        events=self.events)  # fmt: skip
            else:
                answer = session.post(f"{self.base}/admin/dry-runs", timeout=30,
                                      json={"files": {"bench.yaml": self.draft}, "events": self.events})  # fmt: skip
                if answer.status_code != 202:
                    raise SystemExit(f"the dry run was refused: {answer.text}")
                run_id = answer.json()["id"]
            while True:
                report = session.get(f"{self.base}/admin/dry-runs/{run_id}", timeout=30).json()
                if report["status"] in ("finished", "failed"):
                    break
                time.sleep(0.5)  # as the console's page polls
            if report["status"] == "failed" or report["total"] < self.events:
                raise SystemExit(f"the dry run did not read {self.events} events: {report}")
            self.durations.append(time.monotonic() - started)


CALM, WORKER, API = "calm", "dry runs started in Redis", "dry runs started by the API"


def phase(kind: str, base: str, hook: str, token: str, client: redis.Redis, arguments: Any, work: Path) -> dict:
    wait_until(lambda: drained(client), "the worker to be idle")
    probe = Probe(hook)
    runs = DryRuns(base, token, work / "rules", arguments.events, client if kind == WORKER else None)
    if kind != CALM:
        runs.start()
        time.sleep(0.5)  # the first chunk under way
    probe.start()
    result = run_wrk(hook, arguments.duration, arguments.connections, work / "post.lua")
    probe.stop.set()
    runs.stop.set()
    probe.join()
    if kind != CALM:
        runs.join(timeout=300)
    wait_until(lambda: all(client.zscore("hr:finished", i) for i in probe.ids), "the probe events to finish")
    lags = [client.zscore("hr:finished", i) - received_us_of(i) / 1000 for i in probe.ids]
    return {**result, "lag_p50": statistics.median(lags), "lag_max": max(lags), "runs": len(runs.durations),
            "run_s": statistics.median(runs.durations) if runs.durations else 0.0}  # fmt: skip


def seed_body(number: int, rng: random.Random) -> str:
    """A lead as Hana sends it, with the attributes the generated rules look at, varied."""
    body = json.loads(body_template().replace("LEAD_ID", f"seed-{number}"))
    values = {"baseSourceInput": rng.sample(SOURCES, rng.randint(1, 3)), "baseFunnelStatus": rng.choice(STATUSES),
              "cf_number_score": rng.randint(0, 10), "baseEmail": rng.choice(["an@gmail.com", "chi@example.com"]),
              "basePhonenumber": rng.choice(["0978712200", "0312345670", "+84395458994"]),
              "cf_string_ghi_chu": rng.choice(NOTES)}  # fmt: skip
    body["lead"].update({name: {"nomalizeData": value, "rawData": value} for name, value in values.items()})
    return json.dumps(body, ensure_ascii=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed (default 3)")
    parser.add_argument("--rate", type=int, default=100, help="webhooks per second during each window (default 100)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--events", type=int, default=1000, help="stored events, and the dry run's N (default 1000)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "rules").mkdir()
        (work / "rules" / "bench.yaml").write_text(rules_text(7))
        config = work / "hana-rules.yaml"
        config.write_text("rules_dir: rules\ndata_dir: var\n")
        script = work / "post.lua"  # read by phase()
        period_ms = arguments.connections * 1000 // arguments.rate
        script.write_text(WRK_SCRIPT % json.dumps(body_template()) + f"\ndelay = function() return {period_ms} end\n")
        with EmbeddedRedis(work / "redis") as server:
            client = redis.Redis.from_url(server.url)
            port = free_port()
            # Both in the work folder: rule files are named alike by every process (relative to it).
            environment = {**os.environ, "REDIS_URL": server.url, "PYTHONPATH": str(ROOT)}
            worker = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--config", str(config)],
                                      cwd=work, env=environment, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)  # fmt: skip
            wait_until(lambda: client.hget("hr:rules", "version"), "the worker to publish the rules")
            serve = [sys.executable, str(ROOT / "bench" / "_server.py"), "hana-rules", str(port), server.url,
                     str(work / "var")]  # fmt: skip
            receiver = subprocess.Popen(serve, cwd=work, stdout=subprocess.DEVNULL)
            try:
                secrets = json.loads((work / "var" / "secrets.json").read_text())
                base = f"http://127.0.0.1:{port}"
                hook = f"{base}/hooks/lead.created?token={secrets['webhook_token']}"
                wait_until(lambda: _up(base), "the receiver")
                session = requests.Session()
                rng = random.Random(7)
                for number in range(arguments.events):  # seeding, through the real receiver and worker
                    session.post(hook, data=seed_body(number, rng).encode(),
                                 headers={"Content-Type": "application/json"}, timeout=10)  # fmt: skip
                wait_until(lambda: drained(client), "the seeded events to be processed")
                results: dict[str, list[dict]] = {CALM: [], WORKER: [], API: []}
                for number in range(arguments.rounds):
                    for kind in list(results) if number % 2 == 0 else reversed(results):
                        result = phase(kind, base, hook, secrets["admin_token"], client, arguments, work)
                        results[kind].append(result)
                        print(f"  round {number + 1} {kind:<28} {result['rate']:5.0f}/s p50 {result['p50_ms']:5.2f} "
                              f"p99 {result['p99_ms']:6.2f} ms  lag p50 {result['lag_p50']:5.0f} "
                              f"max {result['lag_max']:5.0f} ms  dry runs {result['runs']}", file=sys.stderr,
                              flush=True)  # fmt: skip
            finally:
                receiver.terminate()
                worker.terminate()
                receiver.wait(15)
                worker.wait(30)
    print(f"\nreceiver while dry runs of {arguments.events} events run on the worker: wrk {arguments.connections} "
          f"connections at ~{arguments.rate} webhooks/s, {arguments.duration} s x {arguments.rounds} interleaved "
          f"rounds (medians); 1 worker process, gunicorn as `hana-rules web`")  # fmt: skip
    print(f"{'':28} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'lag p50 ms':>11} {'lag max ms':>11}"
          f" {'dry runs':>9} {'s per run':>10}")  # fmt: skip
    for kind, runs in results.items():
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"{kind:28} {median['rate']:>9.0f} {median['p50_ms']:>8.2f} {median['p99_ms']:>8.2f} "
              f"{median['errors']:>7.0f} {median['lag_p50']:>11.0f} {median['lag_max']:>11.0f} "
              f"{sum(r['runs'] for r in runs):>9} {median['run_s']:>10.2f}")  # fmt: skip


def _up(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
