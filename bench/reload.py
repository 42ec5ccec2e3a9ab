"""Reload cost, and reloads under load.

    python bench/reload.py [--stream 20]

1. Time to validate, compile and publish 100 and 1,000 generated rules
   (`RuleRegistry.publish_from_disk`, what POST /admin/reload runs), cold
   (no template cache) and warm, beside the time to merely parse the same YAML
   with PyYAML's C loader (the floor of any reload).
2. `hana-rules serve` with 2 workers; events posted at a steady ~100/s for
   --stream seconds while the 1,000-rule set is reloaded 10 times through the
   admin API. Counts failed requests (must be 0) and events not processed.
SPEC §9 targets: 1,000 rules live in < 1 s; no request fails during reloads.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import redis
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rules import generate  # noqa: E402
from engine.config import load_settings  # noqa: E402
from engine.rules.templates import compile_template  # noqa: E402
from engine.runtime.embedded import EmbeddedRedis, free_port  # noqa: E402
from engine.runtime.loading import RuleRegistry, load_rules  # noqa: E402


def write_rules(folder: Path, count: int, seed: int = 7) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    rules, _ = generate(count, random.Random(seed))
    for start in range(0, count, 100):
        (folder / f"rules-{start // 100:02d}.yaml").write_text("rules:\n" + "".join(rules[start : start + 100]))


def reload_times(work: Path) -> list[tuple[int, float, float, float]]:
    results = []
    with EmbeddedRedis(work / "redis") as server:
        client = redis.Redis.from_url(server.url)
        for count in (100, 1000):
            rules_dir = work / f"rules-{count}"
            write_rules(rules_dir, count)
            settings = replace(load_settings(env={}), rules_dir=rules_dir, data_dir=work / "var")
            registry = RuleRegistry(client, settings, load_rules(settings))
            compile_template.cache_clear()
            started = time.perf_counter()
            registry.publish_from_disk()
            cold = time.perf_counter() - started
            started = time.perf_counter()
            registry.publish_from_disk()
            warm = time.perf_counter() - started
            started = time.perf_counter()
            for path in rules_dir.glob("*.yaml"):
                yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
            parse = time.perf_counter() - started
            results.append((count, cold, warm, parse))
    return results


def reloads_under_load(work: Path, seconds: int) -> dict[str, float]:
    folder = work / "serve"
    write_rules(folder / "rules", 1000)
    (folder / "hana-rules.yaml").write_text("data_dir: var\nrules_dir: rules\nworkers: 2\n")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--config", "hana-rules.yaml",
                                "--port", str(port)], cwd=folder, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    assert process.stdout is not None
    banner = b""
    for line in process.stdout:
        banner += line
        if b"Press Ctrl-C" in line:
            break
    url = re.search(rb"lead\.created\s+(\S+)", banner).group(1).decode()
    admin = {"Authorization": "Bearer " + re.search(rb"Admin token: (\S+)", banner).group(1).decode()}
    base = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(json.loads((folder / "var" / "runtime.json").read_text())["redis_url"])
    failures = {"posts": 0, "reloads": 0}
    posted: list[str] = []
    stop = time.monotonic() + seconds

    def post() -> None:
        session = requests.Session()
        number = 0
        while time.monotonic() < stop:
            number += 1
            body = {"application": {"id": "app"}, "lead": {"id": f"L{number}", "baseFunnelStatus": "new"}}
            try:
                answer = session.post(url, json=body, timeout=10)
                if answer.status_code == 200:
                    posted.append(answer.json()["event_id"])
                else:
                    failures["posts"] += 1
            except requests.RequestException:
                failures["posts"] += 1
            time.sleep(0.01)

    poster = threading.Thread(target=post)
    poster.start()
    durations = []
    for number in range(10):
        time.sleep(seconds / 12)
        write_rules(folder / "rules", 1000, seed=number)  # a different set each time
        started = time.perf_counter()
        answer = requests.post(f"{base}/admin/reload", headers=admin, timeout=60)
        durations.append(time.perf_counter() - started)
        if answer.status_code != 200:
            failures["reloads"] += 1
    poster.join()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and client.zcard("hr:queues"):
        time.sleep(0.2)
    statuses = [client.hget(f"hr:event:{i}", "status") for i in posted]
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    return {"posted": len(posted), "failed_posts": failures["posts"], "failed_reloads": failures["reloads"],
            "not_processed": sum(s != b"done" for s in statuses), "reload_median": sorted(durations)[5]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", type=int, default=20, help="seconds of steady events during the 10 reloads")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        times = reload_times(Path(folder))
        load = reloads_under_load(Path(folder), arguments.stream)
    print("\nreload = read + YAML + schema + compile + publish in Redis")
    print(f"{'rules':>6} {'cold ms':>9} {'warm ms':>9} {'YAML parse alone ms':>20}")
    for count, cold, warm, parse in times:
        print(f"{count:>6} {cold * 1000:>9.0f} {warm * 1000:>9.0f} {parse * 1000:>20.0f}")
    print(f"\n10 reloads of 1,000 rules through the admin API during {arguments.stream} s of events under serve:")
    print(f"  events posted {load['posted']}, failed requests {load['failed_posts']}, failed reloads "
          f"{load['failed_reloads']}, events not processed {load['not_processed']}, "
          f"median reload {load['reload_median'] * 1000:.0f} ms")  # fmt: skip
    met = times[-1][1] < 1.0 and load["failed_posts"] == 0 and load["not_processed"] == 0
    print(f"targets (1,000 rules live < 1 s cold, no failed request, nothing lost): {'MET' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
