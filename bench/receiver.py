"""Receiver throughput and latency beside two baselines, under the same gunicorn settings.

    python bench/receiver.py [--duration 10] [--connections 16]

Needs `wrk` (Debian: apt-get install wrk). Each request posts a distinct Hana
body (a new lead id per request), so hana-rules stores and enqueues every one
instead of answering `duplicate`. Baselines, in the same run:
  bare       a Flask app answering {}
  one-write  a Flask app that parses the body and makes one Redis LPUSH
SPEC §9 target: hana-rules ≥ 0.9× one-write accepted events/s, p99 < 20 ms.
--diagnose adds hana-rules-lpush: hana-rules with its accept script replaced by one
LPUSH (see bench/_server.py), which splits the gap into the script and the rest.
--journal-backlog N measures something else (SPEC §9, Journal backlog): answer
times while N journaled events (left by a Redis outage) are fed back into Redis,
beside the calm answer times of the same server and load in the same run.
Besides events/s, each app's CPU per event (web processes, Redis) is printed: it
is steadier than events/s when the machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config import load_settings  # noqa: E402
from engine.runtime.embedded import EmbeddedRedis, free_port  # noqa: E402

SAMPLE = json.loads((ROOT / "tests" / "data" / "events" / "lead.created.json").read_text())

WRK_SCRIPT = """
local counter = 0
local template = %s
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local id = string.format("%%d-%%d", math.random(1, 1000000000), counter)
  return wrk.format(nil, nil, nil, string.gsub(template, "LEAD_ID", id))
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%f %%f %%f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def body_template() -> str:
    body = json.loads(json.dumps(SAMPLE))
    body["lead"]["id"] = {"nomalizeData": "LEAD_ID", "rawData": "LEAD_ID"}
    return json.dumps(body)


def run_wrk(url: str, duration: int, connections: int, script: Path) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)", output)
    if not match:
        raise SystemExit(f"could not read wrk's output:\n{output}")
    total, errors, micros, p50, p99, _mean = (float(g) for g in match.groups())
    return {"rate": (total - errors) / (micros / 1e6), "errors": errors, "p50_ms": p50 / 1000, "p99_ms": p99 / 1000}


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by a process and its living descendants."""
    stats: dict[int, tuple[int, float]] = {}  # pid: (parent pid, cpu seconds)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, total, grew = {root}, 0.0, True
    while grew:
        grew = False
        for pid, (parent, _) in stats.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    for pid in tree:
        total += stats.get(pid, (0, 0.0))[1]
    return total


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def fresh_start(client: redis.Redis) -> None:
    """An empty Redis with a compacted append-only file, so no run pays for an earlier one's
    AOF rewrite (a fork and a full write, triggered when the file has doubled)."""
    client.flushall()
    client.bgrewriteaof()
    deadline = time.monotonic() + 60
    while client.info("persistence")["aof_rewrite_in_progress"] or client.info("persistence")["aof_rewrite_scheduled"]:
        if time.monotonic() > deadline:
            raise SystemExit("Redis did not finish rewriting its append-only file")
        time.sleep(0.1)


def measure(
    kind: str, redis_url: str, data_dir: Path, duration: int, connections: int, script: Path, shape: tuple[int, int]
) -> dict:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_server.py"), kind, str(port), redis_url, str(data_dir),
         *map(str, shape)],
        stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            secrets = data_dir / "secrets.json"
            token = json.loads(secrets.read_text())["webhook_token"] if secrets.exists() else "x"
            url = f"http://127.0.0.1:{port}/hooks/lead.created?token={token}"
            try:
                probe = requests.post(url, data=body_template().replace("LEAD_ID", "warmup"), timeout=1)
                if probe.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind} server did not come up")
            time.sleep(0.1)
        run_wrk(url, 2, connections, script)  # warm-up: imports, connection pools, Lua script cache
        # CPU per event is steadier than events/s on a noisy machine: it shows where the time goes.
        client = redis.Redis.from_url(redis_url)
        server_before, redis_before = tree_cpu_seconds(server.pid), redis_cpu_seconds(client)
        result = run_wrk(url, duration, connections, script)
        served = result["rate"] * duration
        result["server_us"] = (tree_cpu_seconds(server.pid) - server_before) / served * 1e6
        result["redis_us"] = (redis_cpu_seconds(client) - redis_before) / served * 1e6
        return result
    finally:
        server.terminate()
        server.wait(15)


def journal_backlog(entries: int, duration: int, connections: int, shape: tuple[int, int]) -> None:
    """Answer times while a journal backlog drains, beside calm ones: same server, same load."""
    from engine.config import with_generated_tokens
    from engine.runtime.events import EventStore
    from engine.runtime.intake import Intake
    from engine.runtime.journal import Journal

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT % json.dumps(body_template()))
        data_dir = work / "var"
        with EmbeddedRedis(work / "redis") as server:
            client = redis.Redis.from_url(server.url)
            fresh_start(client)
            calm = measure("hana-rules", server.url, data_dir, duration, connections, script, shape)
            # What an outage leaves: N entries in this machine's journal, fed back when the server starts.
            fresh_start(client)
            settings = with_generated_tokens(replace(load_settings(env={}), data_dir=data_dir))
            journal = Journal(data_dir)
            intake = Intake(settings, EventStore(client), journal)
            template = body_template()
            for number in range(entries):
                data = template.replace("LEAD_ID", f"backlog-{number}").encode()
                journal.append(intake.judge("lead.created", data, settings.applications[0]))
            journal.close()
            depths: list[tuple[float, int]] = []
            started = time.monotonic()
            stop_watching = False

            def watch() -> None:
                while not stop_watching:
                    depths.append((time.monotonic() - started, Journal(data_dir).depth()))
                    time.sleep(0.25)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            during = measure("hana-rules", server.url, data_dir, duration, connections, script, shape)
            stop_watching = True
            watcher.join()
            emptied = next((at for at, depth in depths if depth == 0), None)
            stored = client.zcard("hr:events")
    print(f"\njournal backlog: {entries} journaled events fed back while Hana keeps posting "
          f"({connections} connections, {duration} s, gunicorn {shape[0]} x {shape[1]})")
    print(f"{'':<26} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, result in (("calm (no backlog)", calm), ("while the backlog drains", during)):
        print(f"{name:<26} {result['rate']:>9.0f} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} "
              f"{result['errors']:>7.0f}")  # fmt: skip
    drained = f"empty after {emptied:.1f} s" if emptied is not None else "not empty by the end"
    print(f"backlog: {entries} entries, {drained}; {stored} events stored in all")
    verdict = "MET" if during["p99_ms"] <= 2 * calm["p99_ms"] and not during["errors"] else "NOT MET"
    print(f"target (p99 while draining within 2x the calm p99, no errors): {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are printed (default 5)")
    parser.add_argument("--diagnose", action="store_true", help="also run hana-rules-lpush (see the docstring)")
    parser.add_argument("--redis-fsync", choices=("always", "everysec"), default="everysec",
                        help="appendfsync of the benchmark's Redis (default everysec; see README, Durability)")
    parser.add_argument("--journal-backlog", type=int, default=0, metavar="N",
                        help="measure answer times while N journaled events drain instead (see the docstring)")
    defaults = load_settings(env={})
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.web_workers,
        help=f"gunicorn processes for every app (default: the web_workers default, {defaults.web_workers})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=defaults.web_threads,
        help=f"threads per process for every app (default: the web_threads default, {defaults.web_threads})",
    )
    arguments = parser.parse_args()
    shape = (arguments.workers, arguments.threads)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    if arguments.journal_backlog:
        journal_backlog(arguments.journal_backlog, arguments.duration, arguments.connections, shape)
        return
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT % json.dumps(body_template()))
        data_dir = work / "var"  # the hana-rules server generates its tokens here at start
        rounds: dict[str, list[dict]] = {"bare": [], "one-write": [], "hana-rules": []}
        if arguments.diagnose:
            rounds["hana-rules-lpush"] = []
        with EmbeddedRedis(work / "redis", fsync=arguments.redis_fsync) as server:
            # Interleaved rounds, every other one in reverse order: this machine's speed drifts by
            # tens of percent within a minute, so each app is compared with its neighbours in time.
            for number in range(1, arguments.rounds + 1):
                for kind in list(rounds) if number % 2 else reversed(rounds):
                    fresh_start(redis.Redis.from_url(server.url))
                    result = measure(
                        kind, server.url, data_dir, arguments.duration, arguments.connections, script, shape
                    )
                    result["stored"] = redis.Redis.from_url(server.url).zcard("hr:events")
                    rounds[kind].append(result)
                    print(f"  round {number} {kind:<16} {result['rate']:>6.0f}/s"
                          f"  p99 {result['p99_ms']:5.1f} ms  web {result['server_us']:4.0f} µs/ev"
                          f"  Redis {result['redis_us']:3.0f} µs/ev", file=sys.stderr, flush=True)  # fmt: skip
                for runs in rounds.values():
                    runs[-1]["ratio"] = runs[-1]["rate"] / rounds["one-write"][-1]["rate"]
    results = {kind: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for kind, runs in rounds.items()}
    print(f"\nreceiver, {arguments.connections} connections, {arguments.duration}s x {arguments.rounds} interleaved "
          f"rounds (medians), gunicorn gthread {arguments.workers} workers x {arguments.threads} threads, "
          f"same settings for all, Redis appendfsync {arguments.redis_fsync}")  # fmt: skip
    print(f"{'app':<17} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs one-write':>13}"
          f" {'web CPU µs/ev':>14} {'Redis CPU µs/ev':>16}")  # fmt: skip
    for kind, result in results.items():
        print(f"{kind:<17} {result['rate']:>10.0f} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} "
              f"{result['errors']:>7.0f} {result['ratio']:>12.2f}x "
              f"{result['server_us']:>14.0f} {result['redis_us']:>16.0f}")  # fmt: skip
    hana = results["hana-rules"]
    ratios = ", ".join(f"{r['ratio']:.2f}" for r in rounds["hana-rules"])
    verdict = "MET" if hana["ratio"] >= 0.9 and hana["p99_ms"] < 20 else "NOT MET"
    print(f"hana-rules / one-write per round: {ratios} (the ratio column is their median)")
    print(f"target (>= 0.9x one-write, p99 < 20 ms): {verdict}; events stored per round: {hana['stored']:.0f}")


if __name__ == "__main__":
    main()
