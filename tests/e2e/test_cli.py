"""The offline commands as a user runs them: real processes, exit codes, no tracebacks, no Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INVALID = ROOT / "tests" / "data" / "rules" / "invalid"
SAMPLE = ROOT / "tests" / "data" / "events" / "lead.created.json"


def hana_rules(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})  # fmt: skip


def test_check_accepts_the_example_rules_without_redis_or_config(tmp_path: Path) -> None:
    result = hana_rules("check", str(ROOT / "rules"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK: 6 rules in 2 files" in result.stdout
    assert not (tmp_path / "var").exists()  # an offline command writes nothing


def test_check_prints_one_line_per_error_and_exits_1(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("unknown-operator.yaml", "re2-syntax.yaml", "duplicate-key.yaml"):
        shutil.copy(INVALID / name, rules / name)
    result = hana_rules("check", "rules", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("rules/")]
    assert len(lines) == 3
    assert "rules/unknown-operator.yaml:7:9 [typo-in-operator] when/0/equal: unknown operator" in lines[2]
    assert "3 error(s)" in result.stderr


def test_test_runs_the_rule_tests_and_reports_each(tmp_path: Path) -> None:
    result = hana_rules("test", str(ROOT / "rules"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("PASS ") == 13
    assert result.stdout.strip().endswith("13 passed, 0 failed")


def test_test_exits_1_and_shows_the_difference_when_a_test_fails(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - {id: vip, on: lead.created, when: {field: lead.score, gte: 3}}\n"
        "tests:\n  - name: low score is vip\n    event: lead.created\n"
        "    payload: {lead: {id: L, score: 1}}\n    expect: {matched: [vip]}\n"
    )
    result = hana_rules("test", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "FAIL r.yaml:4 low score is vip" in result.stdout
    assert "it did not: when was false (saw 1, expected 3)" in result.stdout
    assert "0 passed, 1 failed" in result.stdout


def test_simulate_json_has_the_shape_of_the_admin_api(tmp_path: Path) -> None:
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps({"lead": {"basePhonenumber": "+84978712200"}}))
    result = hana_rules("simulate", "lead.updated", str(SAMPLE), "--previous", str(previous), "--rules",
                        str(ROOT / "rules"), "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"version", "matched", "rules"}
    assert answer["matched"] == ["normalize-phone-to-e164"]
    rule = next(r for r in answer["rules"] if r["id"] == "normalize-phone-to-e164")
    assert rule["conditions"] == [{"path": "when/0", "result": True, "value": "0978712200",
                                   "expected": "^0[0-9]{9}$", "op": "matches",
                                   "field": "lead.basePhonenumber"}]  # fmt: skip
    assert rule["actions"][0]["payload"] == {"lead": {"id": "e734c76a-52ca-44f0-a21e8e1fe627c308",
                                                      "basePhonenumber": "+84978712200"}}  # fmt: skip


def test_simulate_explains_in_words_and_hides_secrets_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: tell\n    on: lead.created\n    then:\n"
        "      - slack: {webhook_url: '${HOOK}', text: 'hi {{ lead.baseName }}'}\n"
        "      - log: 'sent to ${HOOK}'\n"
    )
    environment = {"PATH": "/usr/bin:/bin", "HOOK": "https://hooks.slack.com/services/T/B/s3cr3t"}
    command = [sys.executable, "-m", "engine.cli", "simulate", "lead.created", str(SAMPLE), "--rules", str(tmp_path)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=environment)
    assert result.returncode == 0, result.stderr
    assert "✓ tell" in result.stdout and "Nothing was sent" in result.stdout
    assert "hi Toan Truyen" in result.stdout
    assert "s3cr3t" not in result.stdout


def test_simulate_refuses_unknown_event_types_and_bad_json_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{nope")
    unknown = hana_rules("simulate", "lead.exploded", str(SAMPLE), cwd=tmp_path)
    bad = hana_rules("simulate", "lead.created", str(tmp_path / "bad.json"), cwd=tmp_path)
    for result in (unknown, bad):
        assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "unknown event type 'lead.exploded'" in unknown.stderr
    assert "not valid JSON" in bad.stderr


def test_schema_is_printed_and_the_committed_copy_is_current(tmp_path: Path) -> None:
    result = hana_rules("schema", cwd=tmp_path)
    assert result.returncode == 0
    printed = json.loads(result.stdout)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    committed = json.loads((ROOT / "schema" / "rules.schema.json").read_text())
    assert committed == printed, "run `hana-rules schema > schema/rules.schema.json`"


def test_check_answers_any_file_in_one_line_per_mistake_never_a_traceback(tmp_path: Path) -> None:
    """A rule file nested a thousand deep (a RecursionError before) and one starting with `- id:`
    instead of `rules:` (an AttributeError before)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "deep.yaml").write_text("rules:\n  - id: deep\n    on: lead.created\n    when: " + "[" * 1000 + "]" * 1000)
    (rules / "list.yaml").write_text("- id: forgot-rules\n  on: lead.created\n")
    result = hana_rules("check", "rules", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("rules/")]
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("rules/deep.yaml:4:") and "nested more than 50 levels deep" in lines[0]
    assert lines[1].startswith("rules/list.yaml:1:1") and "write `rules:` above your list" in lines[1]


def test_simulate_prints_each_condition_as_a_sentence_and_each_payload_whole(tmp_path: Path) -> None:
    long_text = "Xin chào " * 40  # far past the 90 characters simulate used to cut payloads at
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: greet\n    on: lead.created\n"
        "    when: [{field: lead.baseName, contains: toan, ignore_case: true}]\n"
        f"    then: [{{log: '{long_text}{{{{ lead.baseName }}}}'}}]\n"
    )
    sentences = {"en": "✓ lead.baseName contains “toan” (ignoring case): saw “Toan Truyen”",
                 "vi": "✓ lead.baseName có chứa “toan” (không phân biệt hoa thường): thấy “Toan Truyen”"}
    for language, sentence in sentences.items():
        result = hana_rules("simulate", "lead.created", str(SAMPLE), "--rules", str(tmp_path), "--lang", language,
                            cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert sentence in result.stdout
        assert f"{long_text}Toan Truyen" in result.stdout and "…" not in result.stdout
