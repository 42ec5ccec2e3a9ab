from __future__ import annotations

import pytest

from engine.rules.yaml_loader import YamlError, load_yaml


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("on", "on"), ("NO", "NO"), ("yes", "yes"), ("off", "off"), ("012", "012"),
        ("0312345670", "0312345670"), ("12:30", "12:30"), ("0x1F", "0x1F"), ("1_000", "1_000"),
        ("true", True), ("false", False), ("null", None), ("~", None), ("", None),
        ("12", 12), ("-3", -3), ("1.5", 1.5), ("1e3", 1000.0), ("0", 0), ("'true'", "true"), ('"12"', "12"),
    ],
)  # fmt: skip
def test_scalars_stay_what_the_user_wrote(written: str, expected: object) -> None:
    value = load_yaml(f"key: {written}\n").value["key"]
    assert value == expected and type(value) is type(expected)


def test_on_is_a_key_not_true() -> None:
    assert load_yaml("on: lead.created\n").value == {"on": "lead.created"}


def test_positions_point_at_keys_one_based() -> None:
    document = load_yaml("rules:\n  - id: a\n    when:\n      field: x\n")
    assert document.position(("rules", 0, "id")) == (2, 5)
    assert document.position(("rules", 0, "when", "field")) == (4, 7)
    assert document.position(("rules", 0, "when", "field", "nowhere")) == (4, 7)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("a: &x 1\n", "anchors (&x) are not allowed"),
        ("a: [1]\nb: *x\n", "aliases (*x) are not allowed"),
        ("a: !!python/name:os.system 1\n", "tags such as"),
        ("a: 1\n---\nb: 2\n", "only one YAML document"),
        ("a: ${UNSET_FOR_TEST}\n", "UNSET_FOR_TEST is not set"),
    ],
)
def test_traps_are_errors_with_positions(text: str, fragment: str) -> None:
    with pytest.raises(YamlError) as error:
        load_yaml(text)
    assert fragment in error.value.message
    assert error.value.line >= 1 and error.value.column >= 1


def test_environment_values_are_substituted_and_remembered_as_secrets() -> None:
    document = load_yaml("url: ${HOOK}\nplain: ${MISSING:-fallback}\n", {"HOOK": "https://hooks.slack.com/T/B/s3cr3t"})
    assert document.value == {"url": "https://hooks.slack.com/T/B/s3cr3t", "plain": "fallback"}
    assert document.secrets == {"https://hooks.slack.com/T/B/s3cr3t"}


def test_an_environment_value_cannot_change_the_structure() -> None:
    document = load_yaml("a: ${EVIL}\n", {"EVIL": "x\nb: injected"})
    assert document.value == {"a": "x\nb: injected"}
