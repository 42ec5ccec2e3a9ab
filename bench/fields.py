"""What the attribute catalogue costs the workers: events/s with it and without it, in one run.

    python bench/fields.py [--events 2000] [--wide 40] [--rounds 3]

Real `hana-rules worker` processes (RQ SimpleWorkers, as bench/state.py) against an
embedded Redis, the example rules loaded, distinct leads accepted through the receiver's
own accept script. Workers with the catalogue (as shipped) and workers started with it
turned off (engine.runtime.fields.MAX_ATTRIBUTES = 0) take turns, --rounds times each, so
that drift on a shared machine hits both alike; the median of each is shown, for the
sample lead (8 attributes) and for a lead of --wide attributes. Beside them, Redis's time
in scripts per event (INFO commandstats: accept, commit and the rest; the catalogue's own
script, fields.lua, is the difference) and the Python time of `catalogue_writes` for one
event.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.state import body, deployment, run_events, start_workers, stop  # noqa: E402
from engine.hana import normalize  # noqa: E402
from engine.runtime.fields import catalogue_writes  # noqa: E402


def script_microseconds(client: redis.Redis) -> float:
    """Redis's own time in EVALSHA/EVAL calls so far (µs): the accept and commit scripts, and the rest."""
    stats = client.info("commandstats")
    return sum(float(stats.get(name, {}).get("usec", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def python_microseconds(wide: int) -> float:
    """`catalogue_writes` for one event, as the worker calls it (µs)."""
    context = normalize(json.loads(body("L1", 1, wide)), event_id="e", event_type="lead.created", received_at="now")
    context_data = context.context
    runs = 2000
    return timeit.timeit(lambda: catalogue_writes(context_data, frozenset({"s3cr3t-token"})), number=runs) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--wide", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    sizes = ((8, "sample lead (8 attributes)"), (arguments.wide, f"lead of {arguments.wide} attributes"))
    rates: dict[tuple[int, int, bool], list[float]] = {}
    redis_us: dict[tuple[int, int, bool], list[float]] = {}
    with deployment() as (config, server, client, intake):
        for workers in (1, 2):
            for attempt in range(arguments.rounds):
                for catalogue in (True, False):
                    processes = start_workers(workers, config, server.url, client, catalogue=catalogue)
                    try:
                        for wide, _ in sizes:
                            key = (workers, wide, catalogue)
                            before = script_microseconds(client)
                            rate = run_events(intake, client, arguments.events, True, wide=wide, measure=False,
                                                  prefix=f"W{workers}R{attempt}C{catalogue:d}A{wide}-")  # fmt: skip
                            rates.setdefault(key, []).append(rate)
                            spent = (script_microseconds(client) - before) / arguments.events
                            redis_us.setdefault(key, []).append(spent)
                    finally:
                        stop(processes)
    print(f"\ndistinct leads through process_event, events/s ({arguments.events} events a run; median of "
          f"{arguments.rounds} runs each, with and without the catalogue taking turns)")  # fmt: skip
    print(f"{'':44} {'1 worker':>10} {'2 workers':>10}   Redis script µs/event")
    for wide, size in sizes:
        for catalogue in (True, False):
            name = f"{size}, {'with the catalogue' if catalogue else 'without it'}"
            row = [statistics.median(rates[(w, wide, catalogue)]) for w in (1, 2)]
            spent = statistics.median(redis_us[(1, wide, catalogue)] + redis_us[(2, wide, catalogue)])
            print(f"{name:44} {row[0]:>10.0f} {row[1]:>10.0f}   {spent:>8.0f}")
        costs = [1 - statistics.median(rates[(w, wide, True)]) / statistics.median(rates[(w, wide, False)])
                 for w in (1, 2)]  # fmt: skip
        print(f"  the catalogue's share of the time per event: {costs[0]:.1%} (1 worker), {costs[1]:.1%} (2 workers); "
              f"catalogue_writes in Python: {python_microseconds(wide):.0f} µs an event")  # fmt: skip


if __name__ == "__main__":
    main()
