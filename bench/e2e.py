"""End to end: events/s from receipt to the Hana update reaching a local stub, under `hana-rules serve`.

    python bench/e2e.py [--duration 60] [--workers 1 2]

For each worker count: `hana-rules serve` with a rule turning every lead.created
into a hana_update (2 jobs per event: process_event, run_action); a stub Hana
on 127.0.0.1 records when each update arrives.
  throughput  events posted for --duration seconds keeping ~200 waiting (enough to keep the
              workers busy without the poster taking their CPU); updates arriving per
              second, after a 5 s warm-up
  latency     events posted at half that rate for 15 s; receipt → update p50/p99
  baseline    the same worker processes draining no-op RQ jobs (os.getpid)
SPEC §9 target: throughput >= 0.5 x (no-op rate / 2 jobs per event).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from bench.baseline import drain_noop  # noqa: E402
from engine.runtime.embedded import free_port  # noqa: E402

RULE = """
rules:
  - id: to-hana
    on: lead.created
    then:
      - hana_update: {lead: {id: "{{ lead.id }}", cf_string_seen: "yes"}}
"""


class HanaStub:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.arrivals.setdefault(body["lead"]["id"], time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/update"


def serve(folder: Path, workers: int, hana: HanaStub) -> tuple[subprocess.Popen[bytes], str, redis.Redis]:
    (folder / "rules").mkdir(exist_ok=True)
    (folder / "rules" / "r.yaml").write_text(RULE)
    (folder / "hana-rules.yaml").write_text(
        f"data_dir: var\nrules_dir: rules\nworkers: {workers}\n"
        "outbound: {allow_hosts: [127.0.0.1]}\n"
        f"applications:\n  - {{id: app, name: Bench, webhook_token: bench-webhook-token-0123456789,"
        f" hana_update_url: '{hana.url}', access_token: bench-access}}\n"
    )
    port = free_port()
    command = [sys.executable, "-m", "engine.cli", "serve", "--config", "hana-rules.yaml", "--port", str(port)]
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    for line in process.stdout:
        if b"Press Ctrl-C" in line:
            break
    runtime = json.loads((folder / "var" / "runtime.json").read_text())
    url = f"http://127.0.0.1:{port}/hooks/lead.created?token=bench-webhook-token-0123456789"
    return process, url, redis.Redis.from_url(runtime["redis_url"])


BACKLOG = 200


def post_many(url: str, stop_at: float, sent: dict[str, float], rate: float | None, prefix: str,
              client: redis.Redis | None = None) -> None:  # fmt: skip
    """Post distinct leads until `stop_at`: at `rate`/s, or as fast as a backlog of BACKLOG allows."""
    session = requests.Session()
    interval = 1.0 / rate if rate else 0.0
    count = 0
    next_at = time.monotonic()
    while time.monotonic() < stop_at:
        if client is not None and count % 20 == 0:
            while client.zcard("hr:queues") + client.llen("rq:queue:actions") > BACKLOG and time.monotonic() < stop_at:
                time.sleep(0.005)
        lead_id = f"{prefix}-{threading.get_ident()}-{count}"
        sent[lead_id] = time.monotonic()
        session.post(url, json={"application": {"id": "app"}, "lead": {"id": lead_id}}, timeout=10)
        count += 1
        if interval:
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def measure(workers: int, duration: int) -> dict[str, float]:
    hana = HanaStub()
    with tempfile.TemporaryDirectory() as folder:
        process, url, client = serve(Path(folder), workers, hana)
        try:
            sent: dict[str, float] = {}
            started = time.monotonic()
            post_many(url, started + duration, sent, None, "t", client)
            window = [t for t in hana.arrivals.values() if started + 5 <= t <= started + duration]
            throughput = len(window) / (duration - 5)
            # drain the backlog before measuring latency at half the throughput
            while client.llen("rq:queue:events") or client.llen("rq:queue:actions") or client.zcard("hr:queues"):
                time.sleep(0.2)
            latency_sent: dict[str, float] = {}
            stop_at = time.monotonic() + 15
            pacer = threading.Thread(target=post_many, args=(url, stop_at, latency_sent, throughput / 2, "l"))
            pacer.start()
            pacer.join()
            time.sleep(3)
            latencies = [(hana.arrivals[k] - t) * 1000 for k, t in latency_sent.items() if k in hana.arrivals]
            noop = drain_noop(client, 2000)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    return {"throughput": throughput, "noop": noop, "p50": statistics.median(latencies),
            "p99": sorted(latencies)[int(len(latencies) * 0.99) - 1], "lost": len(latency_sent) - len(latencies),
            "posted": len(sent)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    arguments = parser.parse_args()
    os.environ.pop("REDIS_URL", None)
    results = {workers: measure(workers, arguments.duration) for workers in arguments.workers}
    print(f"\nend to end under `hana-rules serve`: receipt → Hana update at a local stub "
          f"({arguments.duration} s sustained; latency at half that rate)")  # fmt: skip
    print(f"{'workers':>7} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'no-op jobs/s':>13} {'target':>8} {'ratio':>7}")
    for workers, r in results.items():
        target = 0.5 * r["noop"] / 2
        print(f"{workers:>7} {r['throughput']:>9.0f} {r['p50']:>8.0f} {r['p99']:>8.0f} {r['noop']:>13.0f} "
              f"{target:>8.0f} {r['throughput'] / (r['noop'] / 2):>6.2f}x")  # fmt: skip
    print("ratio = events/s ÷ (no-op jobs/s ÷ 2 jobs per event); SPEC §9 target: >= 0.5x")


if __name__ == "__main__":
    main()
