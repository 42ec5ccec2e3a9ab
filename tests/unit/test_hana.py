from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.hana import canonical_event_type, entity_id_of, iso_from_microseconds, normalize, now_iso, parse_hana_date
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
