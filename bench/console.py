"""The console's read side with 100,000 stored events: server time of each page and filtered list.

    python bench/console.py [--events 100000] [--samples 200] [--processes 2] [--deliver 10000]

Seeding (not timed) goes through the real code, in-process instead of through RQ:
  receive   bodies built from the sample lead (tests/data/events/lead.created.json), judged by
            Intake.judge and stored by the receiver's own accept script, pipelined; receive times
            spread over the last 7 days (the default retention), oldest first. About 5,000
            leads with a long tail (30 hot leads get ~30% of the events), an opportunity now
            and then, a few deletes, 0.5% quarantined (bodies that are not JSON), 0.1% whose
            processing fails (their body damaged in Redis before processing).
  process   jobs.drain, the very function the worker's job runs, in --processes processes:
            the example rules (rules/), evaluated with traces, and commit.lua writing state,
            outcome, trace, action records and the console's indexes.
  deliver   the actions of the newest --deliver events (default 10,000) are delivered by
            delivery.deliver (claim, send, record the attempt) to a stub Hana and Slack on
            127.0.0.1; the older ones stay pending, as behind a parked application (delivering
            them all adds ~90 s on 2 cores: --deliver -1; the pages read a pending action and
            a delivered one alike, one hash each).
  sweep     the maintenance step that indexes quarantined events (indexes.Sweep).
The installation is taken as one that has indexed for a week (hr:idx:since set before the
oldest event); right after an upgrade the views walk the older events (see views.py).

Measured: the Flask app in this process (test client: routing, view, Redis round trips,
JSON or template rendering; no socket), each request timed alone, --samples times with
varied arguments (lead ids, event ids, rules). Baseline in the same run: one HGETALL of an
event plus one ZREVRANGE of 50 ids on the same connection.
SPEC §9 target: every page < 50 ms median and < 200 ms p99.

About 5 minutes on 2 cores, most of it processing the events through jobs.drain;
--events 20000 gives a first look in about a minute.
"""

from __future__ import annotations

import argparse
import html
import json
import multiprocessing
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config import load_settings, with_generated_tokens  # noqa: E402
from engine.hana import iso_from_microseconds  # noqa: E402
from engine.runtime import context as worker_context  # noqa: E402
from engine.runtime import delivery, jobs  # noqa: E402
from engine.runtime.action_state import DUE_ACTIONS, first_job_id  # noqa: E402
from engine.runtime.embedded import EmbeddedRedis  # noqa: E402
from engine.runtime.events import (  # noqa: E402
    EVENTS_INDEX,
    WAITING_QUEUES,
    EventStore,
    ReceivedEvent,
    new_event_id,
)
from engine.runtime.indexes import INDEXED_SINCE, SWEEP_BATCH, Sweep  # noqa: E402
from engine.runtime.intake import Intake  # noqa: E402
from engine.runtime.journal import Journal  # noqa: E402
from engine.runtime.views import EventFilter, entity_events, list_events, rule_events  # noqa: E402

SAMPLE = json.loads((ROOT / "tests" / "data" / "events" / "lead.created.json").read_text())
APPLICATION = SAMPLE["application"]["id"]
WEEK_US = 7 * 86_400 * 1_000_000
HOT_LEADS = 30
NAMES = ("Nguyễn Văn An", "Trần Thị Bình", "Lê Hà My", "Phạm Quốc Cường", "Hoàng Minh Đức", "Võ Thị Hạnh",
         "Đặng Gia Huy", "Bùi Ngọc Lan", "Toan Truyen", "Đỗ Thanh Tâm")  # fmt: skip
SOURCES = (["Youtube", "Sendo"], ["Facebook Ads"], ["Zalo"], ["Website"], ["Youtube"], ["Shopee", "Zalo"])
FUNNEL = ("new", "contacted", "actived", "lost")
NOTES = ("khách hỏi giá", "muốn giao hàng nhanh", "hàng lỗi, khiếu nại", "hẹn gọi lại chiều nay", "")


# Seeding ---------------------------------------------------------------------------------------------------------


def envelope(value: Any) -> dict[str, Any]:
    return {"nomalizeData": value, "rawData": value}


def lead_body(rng: random.Random, lead_id: str, seq: int) -> dict[str, Any]:
    data = json.loads(json.dumps(SAMPLE))
    lead = data["lead"]
    lead["id"] = envelope(lead_id)
    lead["baseName"] = envelope(rng.choice(NAMES))
    lead["baseSourceInput"] = envelope(rng.choice(SOURCES))
    lead["cf_number_diem_viral"] = envelope(rng.randint(0, 5))
    lead["basePhonenumber"] = envelope(f"0{rng.randint(300_000_000, 999_999_999)}" if rng.random() < 0.3
                                       else f"+84{rng.randint(300_000_000, 999_999_999)}")  # fmt: skip
    lead["baseFunnelStatus"] = envelope(rng.choice(FUNNEL))
    lead["cf_string_ghi_chu"] = envelope(rng.choice(NOTES))
    lead["cf_number_seq"] = envelope(seq)
    return data


def opportunity_body(rng: random.Random, opportunity_id: str, lead_name: str) -> dict[str, Any]:
    return {"application": {"id": APPLICATION},
            "opportunity": {"id": envelope(opportunity_id), "baseName": envelope("Đơn hàng " + opportunity_id),
                            "leadName": envelope(lead_name), "dealValue": envelope(rng.choice(
                                (5_000_000, 20_000_000, 60_000_000, 120_000_000)))}}  # fmt: skip


def plan_events(count: int, intake: Intake, now_us: int, seed: int = 7) -> tuple[list[ReceivedEvent], dict[str, Any]]:
    """`count` events as the receiver would have judged them, received over the last week, oldest first."""
    rng = random.Random(seed)
    leads = max(count // 20, 50)
    application = intake.settings.applications[0]
    start = now_us - WEEK_US
    times = sorted(rng.randrange(start, now_us - 60_000_000) for _ in range(count))
    seen: set[str] = set()
    events: list[ReceivedEvent] = []
    opportunities = 0
    for n, received_us in enumerate(times):
        roll = rng.random()
        if roll < 0.005:
            event_type, body = "lead.updated", b'{"lead": {"id": "L1", "broken'  # quarantined: not JSON
        elif roll < 0.10:
            opportunities += 1
            kind = "opportunity.created" if rng.random() < 0.6 else "opportunity.updated"
            opportunity = f"O{rng.randrange(max(opportunities // 2, 1))}"
            event_type, body = kind, json.dumps(opportunity_body(rng, opportunity, rng.choice(NAMES))).encode()
        else:
            hot = rng.random() < 0.3
            lead_id = f"H{rng.randrange(HOT_LEADS)}" if hot else f"L{rng.randrange(leads)}"
            event_type = "lead.updated" if lead_id in seen else "lead.created"
            if lead_id in seen and rng.random() < 0.003:
                event_type = "lead.deleted"
            seen.add(lead_id)
            body = json.dumps(lead_body(rng, lead_id, n), ensure_ascii=False).encode()
        judged = intake.judge(event_type, body, application)
        events.append(replace(judged, id=new_event_id(received_us), received_us=received_us,
                              received_at=iso_from_microseconds(received_us)))  # fmt: skip
    return events, {"cold_leads": sorted(seen - {f"H{i}" for i in range(HOT_LEADS)})}


def store(client: redis.Redis, events: list[ReceivedEvent], batch: int = 500) -> None:
    """Through the receiver's own accept script (not from a journal: each goes behind its lead's earlier ones)."""
    events_store = EventStore(client)
    script = events_store._accept_script()
    for start in range(0, len(events), batch):
        with client.pipeline(transaction=False) as pipe:
            for event in events[start : start + batch]:
                script(keys=[], args=EventStore._arguments(event, False), client=pipe)
            pipe.execute()


def process_share(redis_url: str, config: str, queue_keys: list[str]) -> int:
    """One process's share of the entity queues, drained by jobs.drain as a worker's job does it."""
    import logging

    logging.disable(logging.CRITICAL)  # the poisoned events' tracebacks, the loop guard holding hot leads
    client = redis.Redis.from_url(redis_url)
    settings = with_generated_tokens(replace(load_settings(Path(config)), redis_url=redis_url))
    context = worker_context.configure(settings, client)
    done = 0
    for queue_key in queue_keys:
        while client.llen(queue_key):
            done += jobs.drain(context, queue_key)
    return done


def deliver_share(redis_url: str, config: str, action_ids: list[str]) -> int:
    import logging

    logging.disable(logging.CRITICAL)
    client = redis.Redis.from_url(redis_url)
    settings = with_generated_tokens(replace(load_settings(Path(config)), redis_url=redis_url))
    context = worker_context.configure(settings, client)
    for identifier in action_ids:
        delivery.deliver(context, identifier, first_job_id(identifier))  # the job the commit enqueued
    return len(action_ids)


def in_processes(function: Callable[..., int], redis_url: str, config: Path, items: list[str], processes: int) -> int:
    shares = [items[i::processes] for i in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return sum(pool.starmap(function, [(redis_url, str(config), share) for share in shares]))


class Stub:
    """Hana's update API and Slack's webhook on 127.0.0.1: 200 to everything."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def seed(client: redis.Redis, settings: Any, config: Path, count: int, processes: int, deliver: int) -> dict:
    intake = Intake(settings, EventStore(client), Journal(settings.data_dir))
    seconds, micros = client.time()
    now_us = seconds * 1_000_000 + micros
    started = time.perf_counter()
    events, facts = plan_events(count, intake, now_us)
    client.set(INDEXED_SINCE, events[0].received_us - 1)  # an installation that has indexed for a week
    store(client, events)
    poisoned = [e.id for e in random.Random(3).sample(events, max(count // 1000, 1)) if not e.quarantine_reason]
    with client.pipeline(transaction=False) as pipe:
        for event_id in poisoned:
            pipe.hset(f"hr:event:{event_id}", "body", b'{"lead": damaged')
        pipe.execute()
    print(f"  stored {count:,} events in {time.perf_counter() - started:.0f}s", flush=True)

    started = time.perf_counter()
    queue_keys = [member.decode() for member in client.zrange(WAITING_QUEUES, 0, -1)]
    random.Random(5).shuffle(queue_keys)
    processed = in_processes(process_share, settings.redis_url, config, queue_keys, processes)
    print(f"  processed {processed:,} in {time.perf_counter() - started:.0f}s ({processes} processes, jobs.drain)",
          flush=True)  # fmt: skip
    client.delete("rq:queue:events")  # the drain jobs the accept script enqueued: their work is done

    actions = [member.decode() for member in client.zrange(DUE_ACTIONS, 0, -1)]
    newest = {e.id for e in (events[max(len(events) - deliver, 0):] if deliver >= 0 else events)}
    chosen = [identifier for identifier in actions if identifier.split(":", 1)[0] in newest]
    if chosen:
        started = time.perf_counter()
        in_processes(deliver_share, settings.redis_url, config, chosen, processes)
        print(f"  delivered {len(chosen):,} of {len(actions):,} actions in {time.perf_counter() - started:.0f}s",
              flush=True)  # fmt: skip
    client.delete("rq:queue:actions")
    quarantined = Sweep(client).run(rounds=count // SWEEP_BATCH + 1)  # the workers' maintenance, every 15 s
    print(f"  swept: {quarantined:,} quarantined events indexed", flush=True)
    facts["actions"] = len(actions)
    facts["events"] = [e.id for e in events if not e.quarantine_reason]
    facts["hot_leads"] = [f"H{i}" for i in range(HOT_LEADS)]
    return facts


def index_memory(client: redis.Redis) -> int:
    """Bytes the console's indexes take: their sorted sets and sets, and the `indexed` field of each event."""
    total = 0
    keys = list(client.scan_iter("hr:idx:*", count=1000))
    for start in range(0, len(keys), 1000):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 1000]:
                pipe.memory_usage(key, samples=0)
            total += sum(size or 0 for size in pipe.execute())
    sample = client.zrandmember(EVENTS_INDEX, 1000) or []
    with client.pipeline(transaction=False) as pipe:
        for member in sample:
            pipe.hstrlen(f"hr:event:{member.decode()}", "indexed")
        lengths = pipe.execute()
    # the field's name and value, and about 16 bytes of hash entry each
    per_event = statistics.mean(length + len("indexed") + 16 for length in lengths) if lengths else 0
    return int(total + per_event * client.zcard(EVENTS_INDEX))


# Measuring -------------------------------------------------------------------------------------------------------


def timed(samples: int, call: Callable[[int], Any]) -> list[float]:
    for n in range(min(5, samples)):
        call(n)  # warm up: compiled templates, scripts loaded, connections open
    durations = []
    for n in range(samples):
        started = time.perf_counter()
        call(n)
        durations.append((time.perf_counter() - started) * 1000)
    return durations


def p99(durations: list[float]) -> float:
    ordered = sorted(durations)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def log_in(client: Any, token: str) -> bool:
    """The console's login form: its CSRF token from the page, then the admin token."""
    page = client.get("/console/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    if page.status_code != 200 or not found:
        return False
    answer = client.post("/console/login", data={"csrf_token": html.unescape(found.group(1)), "token": token})
    return answer.status_code in (302, 303) and client.get("/console/events").status_code == 200


def measure(app: Any, client: redis.Redis, settings: Any, facts: dict, samples: int) -> list[tuple[str, Any]]:
    rng = random.Random(11)
    events, hot, cold = facts["events"], facts["hot_leads"], facts["cold_leads"]
    picks = [rng.choice(events) for _ in range(samples + 5)]
    hot_picks = [rng.choice(hot) for _ in range(samples + 5)]
    cold_picks = [rng.choice(cold) for _ in range(samples + 5)]
    rules = [rule.id for rule in app.extensions["hana_rules.registry"].current().rules]
    admin = app.test_client()
    admin_headers = {"Authorization": f"Bearer {settings.admin_token}"}

    def api(path: str, **params: Any) -> Callable[[int], Any]:
        def call(n: int) -> None:
            chosen = {k: v(n) if callable(v) else v for k, v in params.items()}
            answer = admin.get(path(n) if callable(path) else path, query_string={"limit": 50, **chosen},
                               headers=admin_headers)  # fmt: skip
            assert answer.status_code == 200, (path, chosen, answer.status_code)

        return call

    results: list[tuple[str, Any]] = []

    def run(name: str, call: Callable[[int], Any]) -> None:
        try:
            results.append((name, timed(samples, call)))
        except Exception as exc:  # noqa: BLE001 - a page in flux is reported, not fatal
            results.append((name, f"n/a ({type(exc).__name__}: {str(exc)[:60]})"))

    run("baseline: HGETALL + ZREVRANGE 50", lambda n: (client.hgetall(f"hr:event:{picks[n]}"),
                                                       client.zrevrange(EVENTS_INDEX, 0, 49)))  # fmt: skip
    run("GET /admin/events", api("/admin/events"))
    run("  ?rule=<each rule in turn>", api("/admin/events", rule=lambda n: rules[n % len(rules)]))
    run("  ?status=done", api("/admin/events", status="done"))
    run("  ?status=failed (0.1%)", api("/admin/events", status="failed"))
    run("  ?status=quarantined (0.5%)", api("/admin/events", status="quarantined"))
    run("  ?type=lead.updated", api("/admin/events", type="lead.updated"))
    run("  ?type=opportunity.created (~6%)", api("/admin/events", type="opportunity.created"))
    run("  ?type=lead.deleted (~0.3%)", api("/admin/events", type="lead.deleted"))
    run("  ?entity=<hot lead>", api("/admin/events", entity=lambda n: hot_picks[n]))
    run("  ?entity=<other lead>", api("/admin/events", entity=lambda n: cold_picks[n]))
    run("  ?entity=<no such lead>", api("/admin/events", entity=lambda n: f"nobody-{n}"))
    run("GET /admin/events/<id>", api(lambda n: f"/admin/events/{picks[n]}"))
    run("entity_events(<hot lead>)", lambda n: entity_events(client, hot_picks[n]))
    run("entity_events(<other lead>)", lambda n: entity_events(client, cold_picks[n]))
    run("rule_events(<each rule>)", lambda n: rule_events(client, rules[n % len(rules)]))
    run("list_events(status=done, offset 5,000)",
        lambda n: list_events(client, EventFilter(status="done"), limit=50, offset=5000))

    console = app.test_client()
    if not log_in(console, settings.admin_token or ""):
        results.append(("console pages", "n/a (could not log in; the console is in flux)"))
        return results

    def page(path: Callable[[int], str]) -> Callable[[int], Any]:
        def call(n: int) -> None:
            answer = console.get(path(n))
            assert answer.status_code == 200, (path(n), answer.status_code)

        return call

    run("console /overview", page(lambda n: "/console/overview"))
    run("console /events", page(lambda n: "/console/events"))
    run("console /events?rule=", page(lambda n: f"/console/events?rule={rules[n % len(rules)]}"))
    run("console /events?status=failed", page(lambda n: "/console/events?status=failed"))
    run("console /events?type=opportunity.created", page(lambda n: "/console/events?type=opportunity.created"))
    run("console /events?entity=<hot lead>", page(lambda n: f"/console/events?entity={hot_picks[n]}"))
    run("console /events/<id>", page(lambda n: f"/console/events/{picks[n]}"))
    run("console /timeline?entity=<hot lead>", page(lambda n: f"/console/timeline?entity={hot_picks[n]}"))
    run("console /timeline?entity=<other lead>", page(lambda n: f"/console/timeline?entity={cold_picks[n]}"))
    run("console /rules/<id>", page(lambda n: f"/console/rules/{rules[n % len(rules)]}"))
    return results


def report(results: list[tuple[str, Any]], count: int) -> None:
    baseline = next(d for name, d in results if name.startswith("baseline"))
    base_median = statistics.median(baseline)
    print(f"\nserver time with {count:,} stored events (ms; target < 50 median, < 200 p99)")
    print(f"{'':46} {'median':>8} {'p99':>8} {'x baseline':>11}")
    missed = []
    for name, durations in results:
        if isinstance(durations, str):
            print(f"{name:46} {durations}")
            continue
        median = statistics.median(durations)
        flag = "" if name.startswith("baseline") or (median < 50 and p99(durations) < 200) else "  MISSES TARGET"
        missed += [name.strip()] if flag else []
        print(f"{name:46} {median:>8.2f} {p99(durations):>8.2f} {median / base_median:>10.0f}x{flag}")
    measured = sum(1 for name, d in results if not isinstance(d, str) and not name.startswith("baseline"))
    print(f"{measured - len(missed)} of {measured} meet the target", f"(missed: {', '.join(missed)})" if missed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--deliver", type=int, default=10_000, help="deliver the actions of the newest N events "
                        "(-1: all)")  # fmt: skip
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        stub = Stub()
        config = work / "hana-rules.yaml"
        config.write_text(
            f"rules_dir: {ROOT / 'rules'}\ndata_dir: {work / 'var'}\nlog_format: text\n"
            f"applications:\n  - id: {APPLICATION}\n    name: Shop\n    webhook_token: bench-webhook-token-0123456789\n"
            f"    hana_update_url: {stub.url}/api/update\n    access_token: bench-access-token-0123456789\n"
            "outbound: {allow_hosts: [127.0.0.1]}\n"
        )
        os.environ["SLACK_WEBHOOK_URL"] = f"{stub.url}/services/T/B/x"
        with EmbeddedRedis(work / "redis") as server:
            client = redis.Redis.from_url(server.url)
            settings = with_generated_tokens(replace(load_settings(config, env={}), redis_url=server.url))
            print(f"seeding {arguments.events:,} events (not timed)…", flush=True)
            facts = seed(client, settings, config, arguments.events, arguments.processes, arguments.deliver)
            memory = client.info("memory")["used_memory"]
            print(f"  Redis holds {client.zcard(EVENTS_INDEX):,} events and {facts['actions']:,} action records in "
                  f"{memory / 2**20:.0f} MiB, of which the console's indexes {index_memory(client) / 2**20:.1f} MiB",
                  flush=True)  # fmt: skip
            from engine.web.app import create_app

            app = create_app(settings, connection=client, drain_journal=False)
            results = measure(app, client, settings, facts, arguments.samples)
    report(results, arguments.events)


if __name__ == "__main__":
    main()
