"""The editor's check as you type: POST /admin/validate with a 50-rule file, beside the same work without HTTP.

    python bench/validate.py [--rules 50] [--samples 300]

The file being edited: --rules generated rules (bench/rules.py: three conditions
each, among them regexes, accent-folding and any:), each with vars and three
actions with templates (log, hana_update, slack). The rest of the set is on disk:
the example rules (rules/*.yaml) and the file itself, as the editor opened it.
Each sample sends the file with one character changed (a rule's log text), the way
a pause in typing sends it; half the samples also carry a typo (`on: lead.creatd`),
so the error path is measured too.

Measured in this process with the Flask test client (routing, JSON, read the disk
set, YAML, schema, compile, outbound checks; no socket), each request timed alone:
  warm   the template cache holds the templates the edit did not touch (typing)
  cold   the template cache emptied before each request (a file opened afresh)
Baselines in the same run: compile_rules on the same texts called directly (the
work without HTTP and without reading the disk), and GET /admin/rules.
Issue 14 target: < 30 ms median for a 50-rule file.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.console import p99, timed  # noqa: E402
from bench.rules import generate  # noqa: E402
from engine.config import load_settings, with_generated_tokens  # noqa: E402
from engine.rules.errors import RuleSetError  # noqa: E402
from engine.rules.loader import read_texts  # noqa: E402
from engine.rules.templates import compile_template  # noqa: E402
from engine.runtime.connection import receiver_client  # noqa: E402
from engine.runtime.embedded import EmbeddedRedis  # noqa: E402
from engine.runtime.loading import compile_rules  # noqa: E402
from engine.web.app import create_app  # noqa: E402

TARGET_MS = 30.0


def rule_file(count: int, seed: int = 7) -> str:
    """`count` realistic rules: bench/rules.py's conditions, with vars and three templated actions each."""
    rules, _ = generate(count, random.Random(seed))
    texts = []
    for index, text in enumerate(rules):
        entity = "opportunity" if "[opportunity." in text else "lead"
        head, _, _ = text.partition("    then:\n")
        who = f"    vars:\n      who: \"{{{{ {entity}.baseName | default('someone') }}}}\"\n"
        head = head.replace("    when:\n", who + "    when:\n", 1)
        texts.append(
            f"{head}    then:\n"
            f"      - log: 'rule {index} matched {{{{ {entity}.id }}}} for {{{{ vars.who }}}}'\n"
            f"      - hana_update:\n          {entity}:\n            id: \"{{{{ {entity}.id }}}}\"\n"
            f"            cf_string_ghi_chu: \"rule {index} at {{{{ event.received_at }}}}\"\n"
            f"      - slack:\n          webhook_url: https://hooks.slack.com/services/T000/B000/RULE{index}\n"
            f"          text: \"{{{{ vars.who }}}}: {{{{ {entity}.baseFunnelStatus | default('?') }}}} "
            f"({{{{ {entity}.baseSourceInput | join(', ') }}}})\"\n"
        )  # fmt: skip
    return "rules:\n" + "\n".join(texts)


def full_catalogue(connection: redis.Redis) -> None:
    """A full attribute catalogue (fields.py's layout): 500 names per entity, some the rules read, most not."""
    from engine.runtime.fields import CATALOGUES, SEEN_PREFIX

    for entity in ("lead", "opportunity"):
        names = {f"cf_string_thuoc_tinh_{n}": n for n in range(490)}
        names.update({name: 1 for name in ("baseName", "baseSourceInput", "baseFunnelStatus", "id", "basePhonenumber",
                                           "cf_number_gia_tri", "cf_string_hang", "baseEmail", "cf_enum_nganh")})
        connection.zadd(f"{SEEN_PREFIX}-:{entity}", names)
        connection.sadd(CATALOGUES, f"-:{entity}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=50, help="rules in the edited file (default 50)")
    parser.add_argument("--samples", type=int, default=300)
    arguments = parser.parse_args()
    text = rule_file(arguments.rules)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        rules_dir = work / "rules"
        rules_dir.mkdir()
        for example in (ROOT / "rules").glob("*.yaml"):
            shutil.copy(example, rules_dir / example.name)
        (rules_dir / "edited.yaml").write_text(text)
        with EmbeddedRedis(work / "redis") as server:
            settings = with_generated_tokens(replace(load_settings(env={}), rules_dir=rules_dir,
                                                     data_dir=work / "var", redis_url=server.url))  # fmt: skip
            app = create_app(settings, connection=receiver_client(server.url), drain_journal=False)
            client = app.test_client()
            client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {settings.admin_token}"
            texts, _ = read_texts(rules_dir)
            edited = next(name for name in texts if name.endswith("edited.yaml"))

            def draft(n: int) -> str:
                """The file with one character typed, and every other sample a typo in it."""
                changed = text.replace("rule 0 matched", f"rule 0 matched{n % 10}", 1)
                return changed.replace("on: [lead.created", "on: [lead.creatd", 1) if n % 2 else changed

            def validate(cold: bool) -> Callable[[int], Any]:
                def call(n: int) -> None:
                    if cold:
                        compile_template.cache_clear()
                    answer = client.post("/admin/validate", json={"path": "edited.yaml", "text": draft(n)})
                    assert answer.status_code == 200 and bool(answer.json["errors"]) == bool(n % 2), answer.text

                return call

            def direct(n: int) -> None:
                try:
                    compile_rules({**texts, edited: draft(n)}, settings)
                except RuleSetError:  # the typo samples, as validate gets them
                    pass

            results = [
                ("baseline: compile_rules, same texts, no HTTP", timed(arguments.samples, direct)),
                ("baseline: GET /admin/rules", timed(arguments.samples, lambda n: client.get("/admin/rules"))),
                ("POST /admin/validate, warm", timed(arguments.samples, validate(cold=False))),
                ("POST /admin/validate, cold template cache", timed(arguments.samples, validate(cold=True))),
            ]
            full_catalogue(redis.Redis.from_url(server.url))  # the warnings about unseen attributes, computed
            results.append(("  …with 500 attribute names per entity seen", timed(arguments.samples,
                                                                              validate(cold=False))))  # fmt: skip
    lines = text.count("\n")
    print(f"\nPOST /admin/validate, an edited file of {arguments.rules} rules ({lines} lines, {len(text):,} characters)"
          f" beside the 2 example files on disk; {arguments.samples} samples, half with a typo (ms)")  # fmt: skip
    print(f"{'':46} {'median':>8} {'p99':>8}")
    for name, durations in results:
        print(f"{name:46} {statistics.median(durations):>8.2f} {p99(durations):>8.2f}")
    typing = statistics.median(dict(results)["POST /admin/validate, warm"])
    print(f"target (median < {TARGET_MS:.0f} ms as you type, warm): {'MET' if typing < TARGET_MS else 'NOT MET'}")


if __name__ == "__main__":
    main()
