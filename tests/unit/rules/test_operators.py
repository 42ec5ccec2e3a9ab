"""Every operator and modifier of SPEC §6, with the values a user would try."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.rules.operators import OPERATORS, Modifiers, OperandError, build_test
from engine.rules.values import MISSING

PLAIN = Modifiers()
CASE = Modifiers(ignore_case=True)
ACCENTS = Modifiers(ignore_accents=True)
BOTH = Modifiers(ignore_case=True, ignore_accents=True)
RECENT = (datetime.now(UTC) - timedelta(days=2)).isoformat()


@pytest.mark.parametrize(
    ("operator", "operand", "modifiers", "value", "expected"),
    [
        ("equals", "Hương", PLAIN, "Hương", True),
        ("equals", "Hương", PLAIN, "Hu\u031bo\u031bng", True),  # NFD input equals NFC
        ("equals", "huong", PLAIN, "Hương", False),
        ("equals", "Huong", ACCENTS, "Hương", True),
        ("equals", "huong", ACCENTS, "Hương", False),  # accents ignored, case still counts
        ("equals", "HUONG", BOTH, "Hương", True),
        ("equals", "da nang", BOTH, "Đà Nẵng", True),
        ("equals", 1, PLAIN, "1.0", True),
        ("equals", "1.0", PLAIN, 1, True),
        ("equals", 1, PLAIN, "one", False),
        ("equals", None, PLAIN, MISSING, True),
        ("equals", True, PLAIN, "true", True),
        ("equals", "123", PLAIN, "123", True),
        ("not_equals", "a", PLAIN, MISSING, True),
        ("not_equals", "a", CASE, "A", False),
        ("in", ["Youtube", "Sendo"], PLAIN, "Sendo", True),
        ("in", ["Youtube", "Sendo"], PLAIN, ["Tiki", "Sendo"], True),
        ("in", ["youtube"], CASE, "YouTube", True),
        ("in", [1, 2], PLAIN, "2", True),
        ("not_in", ["a"], PLAIN, MISSING, True),
        ("not_in", ["a"], PLAIN, "a", False),
        ("contains", "Youtube", PLAIN, ["Youtube", "Sendo"], True),
        ("contains", "tube", PLAIN, ["Youtube"], False),  # membership, not substring, for lists
        ("contains", "tube", PLAIN, "Youtube", True),
        ("contains", "khieu nai", BOTH, "Khách KHIẾU NẠI", True),
        ("contains", 84, PLAIN, "0984000000", True),
        ("contains", "x", PLAIN, MISSING, False),
        ("not_contains", "test", CASE, "TEST lead", False),
        ("not_contains", "test", PLAIN, MISSING, True),
        ("contains_any", ["a", "z"], PLAIN, "xyz", True),
        ("contains_any", ["Tiki", "Sendo"], PLAIN, ["Sendo"], True),
        ("contains_all", ["Youtube", "Sendo"], PLAIN, ["Youtube", "Sendo", "Tiki"], True),
        ("contains_all", ["Youtube", "Sendo"], PLAIN, ["Youtube"], False),
        ("contains_all", ["a"], PLAIN, MISSING, False),
        ("starts_with", "+84", PLAIN, "+84978712200", True),
        ("starts_with", ["09", "03"], PLAIN, "0312345670", True),
        ("starts_with", "THU", CASE, "Thu Hương", True),
        ("ends_with", "@gmail.com", CASE, "AN@GMAIL.COM", True),
        ("ends_with", "@gmail.com", PLAIN, MISSING, False),
        ("matches", r"^(\+?84|0)9", PLAIN, "0978712200", True),
        ("matches", r"^\p{L}+$", PLAIN, "Hương", True),
        ("matches", r"^\p{L}+$", PLAIN, "Hương2", False),
        ("matches", "HUONG", BOTH, "hương", True),
        ("matches", "sendo", CASE, ["Youtube", "SENDO"], True),
        ("matches", "x", PLAIN, MISSING, False),
        ("not_matches", "x", PLAIN, MISSING, True),
        ("not_matches", "^0", PLAIN, "0978", False),
        ("gt", 3, PLAIN, 3.5, True),
        ("gt", 3, PLAIN, "4", True),
        ("gt", 3, PLAIN, "abc", False),
        ("gt", 3, PLAIN, MISSING, False),
        ("gte", 3, PLAIN, 3, True),
        ("lt", 0, PLAIN, -1, True),
        ("lte", "1.5", PLAIN, 1.5, True),
        ("lte", 1, PLAIN, True, False),  # true is not the number 1 here
        ("between", [1, 10], PLAIN, 10, True),
        ("between", [1, 10], PLAIN, 10.5, False),
        ("between", [1, 10], PLAIN, MISSING, False),
        ("exists", True, PLAIN, "", True),
        ("exists", True, PLAIN, None, False),
        ("exists", False, PLAIN, MISSING, True),
        ("empty", True, PLAIN, "  ", True),
        ("empty", True, PLAIN, [], True),
        ("empty", True, PLAIN, MISSING, True),
        ("empty", False, PLAIN, 0, True),
        ("before", "2021-01-01", PLAIN, "14-09-2020", True),
        ("before", "2021-01-01", PLAIN, "2020-09-13T17:00:00.000Z", True),
        ("before", "now", PLAIN, "14-09-2020", True),
        ("before", "-7d", PLAIN, RECENT, False),
        ("before", "2021-01-01", PLAIN, "not a date", False),
        ("after", "-7d", PLAIN, RECENT, True),
        ("after", "+1h", PLAIN, RECENT, False),
        ("after", "2020-09-14T00:00:00+07:00", PLAIN, "2020-09-13T17:00:01Z", True),
        ("within", "7d", PLAIN, RECENT, True),
        ("within", "1d", PLAIN, RECENT, False),
        ("within", "7d", PLAIN, MISSING, False),
    ],
)
def test_operator(operator: str, operand: object, modifiers: Modifiers, value: object, expected: bool) -> None:
    assert build_test(operator, operand, modifiers)(value) is expected


def test_every_operator_of_the_spec_is_registered() -> None:
    spec = ("equals not_equals in not_in contains not_contains contains_any contains_all starts_with ends_with "
            "matches not_matches gt gte lt lte between exists empty before after within").split()  # fmt: skip
    assert sorted(OPERATORS) == sorted(spec)


@pytest.mark.parametrize("operator", sorted(OPERATORS))
def test_no_operator_raises_on_odd_values(operator: str) -> None:
    operands = {"in": ["a"], "not_in": ["a"], "contains_any": ["a"], "contains_all": ["a"], "between": [1, 2],
                "exists": True, "empty": True, "before": "now", "after": "now", "within": "1d", "matches": "a",
                "not_matches": "a", "gt": 1, "gte": 1, "lt": 1, "lte": 1}  # fmt: skip
    test = build_test(operator, operands.get(operator, "a"), PLAIN)
    for odd in (MISSING, None, {"nested": [1]}, [None, {}], 10**400, float("nan"), b"bytes", object()):
        assert test(odd) in (True, False)


@pytest.mark.parametrize(
    ("operator", "operand", "modifiers", "fragment"),
    [
        ("gt", "abc", PLAIN, "expects a number"),
        ("gt", "2024-01-01", PLAIN, "expects a number"),
        ("between", [5, 1], PLAIN, "above the high end"),
        ("between", 5, PLAIN, "two numbers"),
        ("in", "a", PLAIN, "list"),
        ("exists", "yes", PLAIN, "true or false"),
        ("matches", "(a", PLAIN, "not a valid RE2"),
        ("matches", r"(a)\1", PLAIN, "not a valid RE2"),
        ("before", "someday", PLAIN, "expected a date"),
        ("within", "a while", PLAIN, "duration"),
        ("gt", 3, CASE, "do not apply to gt"),
        ("contains", ["a"], PLAIN, "contains_any"),
    ],
)
def test_bad_operands_are_load_errors(operator: str, operand: object, modifiers: Modifiers, fragment: str) -> None:
    with pytest.raises(OperandError) as error:
        build_test(operator, operand, modifiers)
    assert fragment in str(error.value) + str(error.value.hint)


def test_regex_is_linear_time_on_a_catastrophic_pattern() -> None:
    # (a+)+$ takes exponential time in backtracking engines; RE2 answers at once.
    assert build_test("matches", "(a+)+!", PLAIN)("a" * 50_000 + "!") is True
    assert build_test("matches", "^(a+)+$", PLAIN)("a" * 50_000 + "!") is False
