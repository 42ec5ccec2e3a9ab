from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from engine.actions.errors import ActionError
from engine.actions.outbound import OutboundClient, OutboundPolicy
from engine.actions.retry import backoff_delay, parse_retry_after
from engine.config import Delivery
from engine.hana import UpdateValueError, type_update_value, update_body
from engine.redaction import MASK, redact


def test_redaction_masks_known_secrets_and_credential_keys_everywhere() -> None:
    value = {
        "headers": {"Authorization": "Bearer abc", "X-Other": "fine"},
        "slack": {"webhook_url": "https://hooks.slack.com/services/T/B/x", "text": "token abcdef-123 inside"},
        "list": ["abcdef-123", {"password": "p"}],
    }
    shown = redact(value, {"abcdef-123"})
    assert shown["headers"] == {"Authorization": MASK, "X-Other": "fine"}
    assert shown["slack"] == {"webhook_url": MASK, "text": f"token {MASK} inside"}
    assert shown["list"] == [MASK, {"password": MASK}]
    assert value["list"][0] == "abcdef-123"  # a copy: the original is untouched


def test_connection_errors_never_show_a_url_path() -> None:
    client = OutboundClient(OutboundPolicy(frozenset({"127.0.0.1"})), timeout=2)
    with pytest.raises(ActionError) as error:
        client.send("POST", "http://127.0.0.1:1/bot123456:SECRET-TOKEN/sendMessage", json={})
    assert error.value.retryable
    assert "SECRET-TOKEN" not in str(error.value)


@pytest.mark.parametrize("header", ["a\\r\\nInjected: yes", "line\\nbreak"])
def test_header_values_with_line_breaks_are_refused(header: str) -> None:
    client = OutboundClient(OutboundPolicy(frozenset({"127.0.0.1"})), timeout=2)
    with pytest.raises(ActionError) as error:
        client.send("POST", "http://127.0.0.1:1/", headers={"X-Test": header.encode().decode("unicode_escape")})
    assert "line break" in str(error.value) and not error.value.retryable


def test_policy_allows_names_wildcards_and_listed_addresses_only() -> None:
    policy = OutboundPolicy(frozenset({"hooks.slack.com", "*.example.com", "10.0.0.0/8"}), frozenset({"hana.ai"}))
    for url in ("https://hooks.slack.com/x", "https://api.example.com/y", "http://10.1.2.3/", "https://hana.ai/u"):
        policy.check_url(url)
    for url in ("https://evil.com/", "ftp://hooks.slack.com/", "http://192.168.1.1/", "https://example.com.evil/"):
        with pytest.raises(ActionError):
            policy.check_url(url)
    policy.check_peer("api.example.com", "93.184.216.34")
    policy.check_peer("anything", "10.9.9.9")  # listed range
    for internal in ("127.0.0.1", "192.168.0.5", "169.254.169.254", "::1", "0.0.0.0"):
        with pytest.raises(ActionError, match="internal address"):
            policy.check_peer("hana.ai", internal)  # an allowed *name* never reaches an internal address


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    delivery = Delivery(max_attempts=8, backoff=10, max_backoff=3600)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (9, 2560), (12, 3600)]:
        delays = [backoff_delay(attempt, delivery, rng=rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len({round(d, 3) for d in delays}) > 40  # jittered, not all alike


def test_retry_after_is_read_as_seconds_or_an_http_date_and_capped_at_an_hour() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    assert parse_retry_after("999999") == 3600
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("attribute", "value", "expected"),
    [("cf_number_diem", "4", 4), ("cf_number_diem", "1.5", 1.5), ("cf_number_diem", 3, 3),
     ("cf_enum_tags", "a, b", ["a", "b"]), ("baseSourceInput", ["Youtube"], ["Youtube"]),
     ("cf_date_hen", "14-09-2020", "2020-09-14T00:00:00.000Z"),
     ("cf_date_hen", "2020-09-14T07:00:00+07:00", "2020-09-14T00:00:00.000Z"),
     ("baseName", 123, 123), ("cf_string_x", None, None)],
)  # fmt: skip
def test_update_values_are_typed_per_attribute(attribute: str, value: object, expected: object) -> None:
    assert type_update_value(attribute, value) == expected


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [({"lead": {"id": "L", "cf_number_x": "many"}}, "needs a number"),
     ({"lead": {"id": "L", "cf_date_x": "someday"}}, "not a date"),
     ({"lead": {"id": ""}}, "lead.id is required"),
     ({}, "nothing to update")],
)  # fmt: skip
def test_untypeable_update_values_are_clear_errors(payload: dict, fragment: str) -> None:
    with pytest.raises(UpdateValueError, match=fragment):
        update_body(payload)
