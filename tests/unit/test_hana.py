from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.hana import (
    canonical_event_type,
    entity_id_of,
    iso_from_microseconds,
    normalize,
    now_iso,
    parse_hana_date,
    same_written_value,
    type_update_value,
    unwrap,
)
from tests.helpers import sample

SHOP_A = "dbd9a5f7-b3c4-45bb-a8eb-2b8e10bff8c2"


def run(body: object, event_type: str = "lead.updated"):
    return normalize(body, event_id="e1", event_type=event_type, received_at="2026-01-01T00:00:00.000Z")


def test_sample_lead_becomes_the_context_rules_see() -> None:
    result = run(sample(), "lead.created")
    assert result.warnings == ()
    context = result.context
    assert context["event"] == {
        "id": "e1", "type": "lead.created", "entity": "lead", "received_at": "2026-01-01T00:00:00.000Z",
    }  # fmt: skip
    assert context["application"]["id"] == SHOP_A
    assert context["lead"]["baseName"] == "Toan Truyen"
    assert context["lead"]["baseBirthday"] == "14-09-2020"  # the normalized value …
    assert context["raw"]["lead"]["baseBirthday"] == "2020-09-13T17:00:00.000Z"  # … and the raw one differ
    assert context["lead"]["baseSourceInput"] == ["Youtube", "Sendo"]
    assert context["lead"]["cf_number_kieu_so"] == 1.09 and isinstance(context["lead"]["cf_number_kieu_so"], float)
    assert context["conversation"]["url"].startswith("https://bot.hana.ai/apps/")
    assert context["changes"] == [] and context["previous"] == {} and context["vars"] == {}
    assert "opportunity" not in context


def test_normalizeData_spelling_is_accepted_like_hanas_nomalizeData() -> None:
    body = {"application": {"id": SHOP_A}, "lead": {"id": {"normalizeData": "L1", "rawData": "L1"}}}
    result = run(body)
    assert result.context["lead"]["id"] == "L1"
    assert result.warnings == ()


def test_attribute_without_envelope_counts_as_both_and_is_warned() -> None:
    body = {"application": {"id": SHOP_A}, "lead": {"id": "L1", "baseName": "Hương"}}
    result = run(body)
    assert result.context["lead"] == {"id": "L1", "baseName": "Hương"}
    assert result.context["raw"]["lead"] == {"id": "L1", "baseName": "Hương"}
    assert any("without nomalizeData/rawData envelope" in w and "baseName" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"lead": {"id": {"nomalizeData": "L1"}}}, "application.id is missing"),
        ({"application": {"id": SHOP_A}}, "neither lead nor opportunity"),
        ({"application": {"id": SHOP_A}, "opportunity": {"id": {"nomalizeData": "O"}}}, "without lead attributes"),
        ({"application": {"id": SHOP_A}, "lead": {"id": {"nomalizeData": "L"}}, "extra": 1}, "unknown top-level"),
        ({"application": {"id": SHOP_A}, "lead": []}, "lead is a JSON list"),
        ({"application": {"id": SHOP_A}, "lead": {"baseName": {"nomalizeData": "x"}}}, "lead.id is missing"),
        (
            {"application": {"id": SHOP_A}, "lead": {"id": {"nomalizeData": "L", "rawData": "L", "junk": 1}}},
            "unknown envelope keys ignored: junk",
        ),
        ({"application": {"id": SHOP_A}, "lead": {"id": {"rawData": "L"}}}, "rawData but no nomalizeData"),
        (
            {"application": {"id": SHOP_A}, "lead": {"id": "L", "cf_number_diem": {"nomalizeData": "abc"}}},
            "cf_number_diem should be a number",
        ),
        (
            {"application": {"id": SHOP_A}, "lead": {"id": "L", "baseSourceInput": {"nomalizeData": "Youtube"}}},
            "baseSourceInput should be an array",
        ),
        (
            {"application": {"id": SHOP_A}, "lead": {"id": "L", "baseBirthday": {"nomalizeData": "soon"}}},
            "baseBirthday is not a date",
        ),
        (
            {"application": {"id": SHOP_A}, "lead": {"id": "L"}, "conversation": {"conversationUrl": 5}},
            "conversationUrl is not a string",
        ),
    ],
)
def test_every_surprise_becomes_a_warning_not_an_error(body: dict, fragment: str) -> None:
    result = run(body)
    assert any(fragment in warning for warning in result.warnings), result.warnings


def test_a_body_that_is_not_an_object_normalizes_to_an_empty_context() -> None:
    result = run([1, 2, 3])
    assert "lead" not in result.context
    assert any("not an object" in w for w in result.warnings)


def test_numbers_stay_numbers_and_arrays_stay_lists() -> None:
    body = sample("hana-update.request.json")  # plain values, as in Hana's update API
    result = run({"application": {"id": SHOP_A}, **body})
    assert result.context["opportunity"]["dealValue"] == 1000000
    assert result.context["lead"]["cf_enum_chau_luc"] == ["Châu Âu", "Châu Á"]


def test_event_types_and_ticket_aliases() -> None:
    assert canonical_event_type("ticket.updated") == "opportunity.updated"
    assert canonical_event_type("lead.deleted") == "lead.deleted"
    assert canonical_event_type("lead.exploded") is None
    assert canonical_event_type("") is None


def test_entity_id_read_from_envelope_or_plain() -> None:
    assert entity_id_of(sample(), "lead") == "e734c76a-52ca-44f0-a21e8e1fe627c308"
    assert entity_id_of({"opportunity": {"id": 42}}, "opportunity") == "42"
    assert entity_id_of({"lead": {"id": {"nomalizeData": None}}}, "lead") is None
    assert entity_id_of({"lead": "x"}, "lead") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14-09-2020", datetime(2020, 9, 14, tzinfo=UTC)),
        ("2020-09-13T17:00:00.000Z", datetime(2020, 9, 13, 17, 0, tzinfo=UTC)),
        ("2020-09-14T00:00:00+07:00", datetime(2020, 9, 13, 17, 0, tzinfo=UTC)),
        ("2020-09-13", datetime(2020, 9, 13, tzinfo=UTC)),
        ("31-02-2020", None),
        ("yesterday", None),
        (20200913, None),
    ],
)
def test_dates_are_recognised_in_both_forms_hana_sends(text: object, expected: datetime | None) -> None:
    assert parse_hana_date(text) == expected


@pytest.mark.parametrize(
    ("epoch_us", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_999_999, "1970-01-01T00:00:01.999Z"),  # milliseconds are cut, as now_iso cuts them
        (1_780_000_000_123_456, "2026-05-28T20:26:40.123Z"),
        (253_402_300_799_999_999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_a_stamp_from_the_clock_reads_like_hanas_dates(epoch_us: int, expected: str) -> None:
    assert iso_from_microseconds(epoch_us) == expected
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_hana_date(expected) == epoch + timedelta(milliseconds=epoch_us // 1000)


def test_a_stamp_from_the_clock_has_now_isos_shape() -> None:
    assert len(iso_from_microseconds(1_780_000_000_000_000)) == len(now_iso())


# Echoes (SPEC §6 Loops): what Hana sends back after our update, compared as Hana types it.


def test_the_samples_birthday_is_the_same_day_in_both_forms() -> None:
    normalized, raw = unwrap(sample()["lead"]["baseBirthday"])
    assert (normalized, raw) == ("14-09-2020", "2020-09-13T17:00:00.000Z")
    assert same_written_value("baseBirthday", "2020-09-13T17:00:00.000Z", normalized, raw)
    assert same_written_value("baseBirthday", "2020-09-14T00:00:00+07:00", normalized, raw)  # the same instant
    assert same_written_value("baseBirthday", "14-09-2020", normalized, raw)  # we wrote the day itself
    assert not same_written_value("baseBirthday", "2020-09-14T17:00:00.000Z", normalized, raw)
    assert not same_written_value("baseBirthday", "15-09-2020", normalized, raw)


@pytest.mark.parametrize(
    ("written", "normalized", "raw", "same"),
    [
        ("2026-03-09T17:00:00.000Z", "10-03-2026", "2026-03-09T17:00:00.000Z", True),
        ("2026-03-09T17:00:00Z", "10-03-2026", "2026-03-09T17:00:00.000Z", True),
        ("2026-03-09T17:00:00.000Z", "10-03-2026", None, True),  # only the day in Vietnam came back
        ("2026-03-09T16:59:59.000Z", "09-03-2026", None, True),  # 23:59:59 in Vietnam, still the 9th
        ("2026-03-09T16:59:59.000Z", "10-03-2026", None, False),
        ("2026-03-09T17:00:00.000Z", "11-03-2026", None, False),  # a different day
        ("2026-03-09T17:00:00.000Z", "10-03-2026", "2026-03-09T18:00:00.000Z", False),  # same day, not the instant
        ("2026-03-09T17:00:00.000Z", None, None, False),
        ("soon", "10-03-2026", "2026-03-09T17:00:00.000Z", False),
        ("soon", "soon", "soon", True),  # not a date, but what we wrote
        (None, None, None, True),  # a cleared date stays cleared
    ],
)
def test_a_date_echo_is_compared_as_an_instant_or_as_the_day_in_vietnam(
    written: object, normalized: object, raw: object, same: bool
) -> None:
    assert same_written_value("cf_date_hen_goi", written, normalized, raw) is same


def test_a_date_we_typed_for_the_update_api_is_recognised_when_it_comes_back() -> None:
    written = type_update_value("cf_date_hen_goi", "2026-03-10T00:00:00+07:00")
    assert written == "2026-03-09T17:00:00.000Z"
    assert same_written_value("cf_date_hen_goi", written, "10-03-2026", "2026-03-09T17:00:00.000Z")


@pytest.mark.parametrize(
    ("written", "seen", "same"),
    [
        ("4", 4, True),
        (4, 4.0, True),
        (4.0, "4", True),
        (" 4 ", 4, True),
        (1.09, "1.09", True),
        (4, 5, False),
        ("4", "5", False),
        (True, 1, False),  # a bool is never a number
        (1, True, False),
        ("four", 4, False),
        (4, None, False),
        (None, None, True),
    ],
)
def test_a_number_echo_is_compared_as_a_number(written: object, seen: object, same: bool) -> None:
    assert same_written_value("cf_number_diem_viral", written, seen, seen) is same


@pytest.mark.parametrize(
    ("written", "seen", "same"),
    [
        (["Youtube", "Sendo"], ["Sendo", "Youtube"], True),
        (["Youtube", "Sendo", "Youtube"], ["Sendo", "Youtube"], True),
        ("Youtube, Sendo", ["Sendo", "Youtube"], True),
        (["Youtube", "Sendo"], "Sendo,Youtube", True),
        (["Châu Âu"], ["Cha\u0302u A\u0302u"], True),  # the same text, decomposed
        ([], None, True),
        (["a", "b"], ["a"], False),
        (["a"], ["a", "b"], False),
        (["4"], [4], False),
        ([{"id": 1}], [{"id": 1}], True),
        (["a"], 5, False),
        (5, ["a"], False),
    ],
)
def test_an_array_echo_is_compared_as_a_set(written: object, seen: object, same: bool) -> None:
    assert same_written_value("cf_enum_nguon", written, seen, seen) is same
    assert same_written_value("baseSourceInput", written, seen, seen) is same


@pytest.mark.parametrize(
    ("written", "seen", "same"),
    [
        ("Hương", "Hu\u031bo\u031bng", True),  # NFC and NFD spellings of the same name
        ("VIP from Youtube", "VIP from Youtube", True),
        ("VIP", "vip", False),
        ("4", 4, False),  # only cf_number_* attributes are numbers
        ({"a": [1, "Hương"]}, {"a": [1.0, "Hu\u031bo\u031bng"]}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        (True, 1, False),
        (None, "", False),
    ],
)
def test_any_other_echo_is_compared_as_equal_values(written: object, seen: object, same: bool) -> None:
    assert same_written_value("cf_string_ghi_chu", written, seen, seen) is same


def test_the_normalized_or_the_raw_value_may_match() -> None:
    assert same_written_value("cf_string_ghi_chu", "x", "something else", "x")
    assert same_written_value("cf_number_diem", 4, "4", None)


def nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = {"a": [value]}
    return value


GARBAGE = [None, "", "garbage", "99-99-9999", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59+00:00",
           "1" * 10_000, float("nan"), float("inf"), -0.0, True, [], {}, [[[]]], {"nomalizeData": 1}, nested(500),
           [{"a": {1, 2}}], object(), b"bytes", 10**400]  # fmt: skip


@pytest.mark.parametrize("attribute", ["cf_date_x", "baseBirthday", "cf_number_x", "cf_enum_x", "baseSourceInput",
                                       "cf_string_x", "", 5])  # fmt: skip
def test_garbage_never_raises_and_matches_only_itself(attribute: object) -> None:
    for written in GARBAGE:
        for seen in GARBAGE:
            answer = same_written_value(attribute, written, seen, None)  # type: ignore[arg-type]
            assert isinstance(answer, bool)
    assert not same_written_value("cf_date_x", "99-99-9999", "10-03-2026", "2026-03-09T17:00:00.000Z")
    assert not same_written_value("cf_number_x", float("nan"), float("nan"), None)
    assert same_written_value("cf_string_x", nested(10), nested(10), None)
