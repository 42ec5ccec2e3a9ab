"""Rule evaluation speed: 1,000 generated rules vs the same conditions hand-written in Python.

    python bench/rules.py [--rules 1000] [--events 2000] [--seed 7]

Both sides get the same index by event type, the same events and the same
rules; the hand-written side is what a programmer would type for each rule
(plain dict lookups, `in`, comparisons, `re2.search`). hana-rules' figure also
renders the actions of the rules that match; the hand-written one does not.
SPEC §9 targets: < 1 ms median per event, <= 3x hand-written, reload of 1,000
rules < 1 s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import re2  # noqa: E402

from engine.hana import EVENT_TYPES, normalize  # noqa: E402
from engine.rules.compiler import load_rule_set  # noqa: E402
from engine.rules.templates import compile_template  # noqa: E402
from engine.state import apply_known_state  # noqa: E402

SOURCES = ["Youtube", "Sendo", "Facebook", "Tiki", "Shopee", "Zalo", "Website", "Facebook Ads"]
STATUSES = ["new", "actived", "contacted", "lost", "won"]
WORDS = ["khieu nai", "hoan tien", "giao hang", "bao hanh", "gia re", "khuyen mai"]
NOTES = ["Khách khiếu nại", "Đã thanh toán hàng", "Hỏi bảo hành", "Giao hàng chậm", "Muốn khuyến mãi", "Bình thường"]


def unaccent_fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def generate(count: int, rng: random.Random) -> tuple[list[str], list[tuple[frozenset[str], Any]]]:
    """YAML rule texts, and (event types, hand-written check) pairs for the same rules."""
    yaml_rules: list[str] = []
    handwritten: list[tuple[frozenset[str], Any]] = []
    for index in range(count):
        events = rng.sample(EVENT_TYPES, rng.choice([1, 1, 2, 3]))
        entity = events[0].split(".")[0]
        events = [e for e in events if e.startswith(entity)]
        kinds = rng.sample(["status", "source", "score", "phone", "email", "note", "any"], 3)
        yaml_conditions, checks = [], []
        for kind in kinds:
            if kind == "status":
                status = rng.choice(STATUSES)
                yaml_conditions.append(f"{{field: {entity}.baseFunnelStatus, equals: {status}}}")
                checks.append(lambda e, s=status: e.get("baseFunnelStatus") == s)
            elif kind == "source":
                source = rng.choice(SOURCES)
                yaml_conditions.append(f"{{field: {entity}.baseSourceInput, contains: '{source}'}}")
                checks.append(lambda e, s=source: isinstance(v := e.get("baseSourceInput"), list) and s in v)
            elif kind == "score":
                limit = rng.randint(0, 10)
                yaml_conditions.append(f"{{field: {entity}.cf_number_score, gte: {limit}}}")
                checks.append(lambda e, n=limit: isinstance(v := e.get("cf_number_score"), int | float) and v >= n)
            elif kind == "phone":
                prefix = rng.choice(["09", "03", "+84"])
                yaml_conditions.append(f"{{field: {entity}.basePhonenumber, starts_with: '{prefix}'}}")
                checks.append(lambda e, p=prefix: isinstance(v := e.get("basePhonenumber"), str) and v.startswith(p))
            elif kind == "email":
                domain = rng.choice(["gmail", "yahoo", "example"])
                pattern = f"@{domain}\\\\.com$"
                compiled = re2.compile(f"@{domain}\\.com$")
                yaml_conditions.append(f"{{field: {entity}.baseEmail, matches: '@{domain}\\.com$'}}")
                checks.append(
                    lambda e, r=compiled: isinstance(v := e.get("baseEmail"), str) and r.search(v) is not None
                )
                del pattern
            elif kind == "note":
                word = rng.choice(WORDS)
                yaml_conditions.append(f"{{field: {entity}.cf_string_ghi_chu, contains: '{word}', ignore_case: true, "
                                       "ignore_accents: true}")  # fmt: skip
                checks.append(lambda e, w=word: isinstance(v := e.get("cf_string_ghi_chu"), str)
                              and w in unaccent_fold(v))  # fmt: skip
            else:
                a, b = rng.sample(SOURCES, 2)
                yaml_conditions.append(f"{{any: [{{field: {entity}.baseSourceInput, contains: '{a}'}}, "
                                       f"{{field: {entity}.sourceType, in: [facebook, zalo]}}]}}")  # fmt: skip
                checks.append(lambda e, s=a: (isinstance(v := e.get("baseSourceInput"), list) and s in v)
                              or e.get("sourceType") in ("facebook", "zalo"))  # fmt: skip
        yaml_rules.append(
            f"  - id: rule-{index}\n    on: [{', '.join(events)}]\n    priority: {rng.randint(0, 5)}\n"
            f"    when:\n"
            + "".join(f"      - {c}\n" for c in yaml_conditions)
            + f"    then:\n      - log: 'rule {index} matched {{{{ {entity}.id }}}}'\n"
        )

        def handwritten_check(context: dict[str, Any], checks: list[Any] = checks, entity: str = entity) -> bool:
            attributes = context.get(entity) or {}
            return all(check(attributes) for check in checks)

        handwritten.append((frozenset(events), handwritten_check))
    return yaml_rules, handwritten


def events(count: int, rng: random.Random) -> list[tuple[dict[str, Any], Any]]:
    made = []
    for index in range(count):
        event_type = rng.choice(EVENT_TYPES)
        entity = event_type.split(".")[0]
        attributes = {
            "id": f"E{index}",
            "baseFunnelStatus": rng.choice(STATUSES),
            "baseSourceInput": rng.sample(SOURCES, rng.randint(1, 3)),
            "cf_number_score": rng.randint(0, 10),
            "basePhonenumber": rng.choice(["0978712200", "0312345670", "+84395458994"]),
            "baseEmail": rng.choice(["an@gmail.com", "binh@yahoo.com", "chi@example.com"]),
            "cf_string_ghi_chu": rng.choice(NOTES),
            "sourceType": rng.choice(["facebook", "zalo", "web"]),
        }
        body = {
            "application": {"id": "app"},
            entity: {k: {"nomalizeData": v, "rawData": v} for k, v in attributes.items()},
        }
        context = normalize(
            body, event_id=f"e{index}", event_type=event_type, received_at="2026-01-01T00:00:00Z"
        ).context
        apply_known_state(context, None)
        made.append((context, body))
    return made


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    rng = random.Random(arguments.seed)
    yaml_rules, handwritten = generate(arguments.rules, rng)
    index = {t: [check for events, check in handwritten if t in events] for t in EVENT_TYPES}
    samples = events(arguments.events, rng)

    with tempfile.TemporaryDirectory() as folder:
        rules_dir = Path(folder)
        per_file = 100
        for start in range(0, len(yaml_rules), per_file):
            (rules_dir / f"rules-{start // per_file:02d}.yaml").write_text("rules:\n" + "".join(
                yaml_rules[start:start + per_file]), encoding="utf-8")  # fmt: skip
        compile_template.cache_clear()
        started = time.perf_counter()
        rule_set = load_rule_set(rules_dir, env={})
        cold = time.perf_counter() - started
        started = time.perf_counter()
        load_rule_set(rules_dir, env={})
        warm = time.perf_counter() - started

    ours, theirs, traced = [], [], []
    agree = 0
    for _ in range(2):  # first pass warms caches; the second is measured
        ours.clear(), theirs.clear(), traced.clear()
        for context, body in samples:
            started = time.perf_counter_ns()
            evaluation = rule_set.evaluate(context, body=body)
            ours.append(time.perf_counter_ns() - started)
            started = time.perf_counter_ns()
            hand = [check for check in index[context["event"]["type"]] if check(context)]
            theirs.append(time.perf_counter_ns() - started)
            started = time.perf_counter_ns()
            rule_set.evaluate(context, body=body, trace=True)
            traced.append(time.perf_counter_ns() - started)
            agree += len(evaluation.matched) == len(hand)
    matched = statistics.mean(len(rule_set.evaluate(c, body=b).matched) for c, b in samples[:200])
    listening = statistics.mean(len(rule_set.by_event[c["event"]["type"]]) for c, _ in samples)
    ours_median, theirs_median = statistics.median(ours) / 1000, statistics.median(theirs) / 1000

    print(f"\n{arguments.rules} rules x 3 conditions, {arguments.events} events over the 6 event types; "
          f"{listening:.0f} rules listen per event on average, {matched:.1f} match")  # fmt: skip
    print(f"{'':28} {'median µs':>10} {'p99 µs':>10}")
    print(f"{'hand-written Python':28} {theirs_median:>10.0f} {percentile(theirs, 0.99) / 1000:>10.0f}")
    print(f"{'hana-rules (production)':28} {ours_median:>10.0f} {percentile(ours, 0.99) / 1000:>10.0f}"
          f"   {ours_median / theirs_median:.2f}x hand-written")  # fmt: skip
    print(f"{'hana-rules (traced)':28} {statistics.median(traced) / 1000:>10.0f} "
          f"{percentile(traced, 0.99) / 1000:>10.0f}   (what the worker records; simulate)")  # fmt: skip
    print(f"verdicts agree with hand-written on {agree // 2}/{len(samples)} events")
    print(
        f"reload of {arguments.rules} rules: {cold * 1000:.0f} ms cold (no template cache), {warm * 1000:.0f} ms warm"
    )
    met = ours_median < 1000 and ours_median <= 3 * theirs_median and cold < 1.0
    print(f"targets (< 1 ms median, <= 3x hand-written, reload < 1 s): {'MET' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
