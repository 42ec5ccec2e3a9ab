from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from engine.actions.errors import ActionError
from engine.actions.outbound import OutboundClient
from engine.actions.policy import OutboundPolicy, RefusedHost, Target, connect_target, literal_urls
from engine.actions.retry import backoff_delay, parse_retry_after
from engine.config import Application, Delivery, Outbound, Settings
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


@pytest.mark.parametrize(
    ("url", "fragment"),
    [("http://A\\@hooks.slack.com/", "backslash"),  # urllib.parse: hooks.slack.com; urllib3: A
     ("http://hooks.slack.com\\.evil.example/", "backslash"),
     ("http://user@hooks.slack.com/", "user name or password"),
     ("http://user:pw@hooks.slack.com/", "user name or password"),
     ("http://@hooks.slack.com/", "user name or password"),
     ("http://evil.example:80@hooks.slack.com/", "user name or password"),
     ("http://hooks.slack.com\t.evil.example/", "control character (U+0009)"),
     ("http://hooks.slack.com\n/", "control character (U+000A)"),
     ("http://hooks.slack.com\x00.evil.example/", "control character (U+0000)"),
     ("http://hooks.slack.com /", "space or control character (U+0020)"),
     ("http://hooks.sla\u00adck.com/", "U+00AD"),  # a soft hyphen, dropped by IDNA mapping
     ("http://hooks%2eslack.com/", "percent-encoded"),
     ("http://[fe80::1%25eth0]/", "percent-encoded"),
     (" http://hooks.slack.com/", "must start with http:// or https://")],
)  # fmt: skip
def test_ambiguous_authorities_are_refused_in_words(url: str, fragment: str) -> None:
    policy = OutboundPolicy(frozenset({"hooks.slack.com", "*.slack.com", "a", "evil.example"}))
    with pytest.raises(RefusedHost, match=re.escape(fragment)) as error:
        policy.check_url(url)
    assert not error.value.retryable
    assert "pw" not in str(error.value)  # the URL is never quoted: its userinfo may be a password


def test_the_host_checked_is_the_one_requests_hands_urllib3() -> None:
    assert connect_target("HTTP://Hooks.Slack.COM/x") == Target("http", "hooks.slack.com", 80)
    assert connect_target("https://[2606:4700::1111]:8443/") == Target("https", "2606:4700::1111", 8443)
    assert connect_target("https://bán-hàng.example/x").host == "xn--bn-hng-ltae.example"  # IDNA, as sent
    assert connect_target("http://hooks.slack.com/a\\b@c?d=e f").host == "hooks.slack.com"  # past the authority
    policy = OutboundPolicy(frozenset({"hooks.slack.com"}))
    for url in ("http://hooks.slack.com./", "http://hooks.slack.com:99999/", "http:///x", "http:\\\\hooks.slack.com/"):
        with pytest.raises(RefusedHost):
            policy.check_url(url)


NOT_GLOBAL = [
    ("0.0.0.0", "'this network'"), ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.0.5", "private"),
    ("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"),
    ("100.64.0.1", "carrier-grade NAT, 100.64.0.0/10"),
    ("100.100.100.200", "carrier-grade NAT"),  # a cloud metadata service
    ("192.0.0.8", "IETF protocol assignments, 192.0.0.0/24"), ("192.0.0.192", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"), ("198.18.0.1", "benchmarking, 198.18.0.0/15"), ("198.19.255.255", "benchmarking"),
    ("224.0.0.1", "multicast"), ("240.0.0.1", "reserved, 240.0.0.0/4"), ("255.255.255.255", "reserved"),
    ("::", "unspecified"), ("::1", "loopback"), ("fe80::1", "link-local"), ("fd00::1", "unique local"),
    ("fec0::1", "site-local"), ("ff02::1", "multicast"), ("2001:db8::1", "documentation"), ("3fff::1", "documentation"),
    ("100::1", "reserved"), ("5f00::1", "reserved"), ("::127.0.0.1", "reserved"), ("64:ff9b:1::a", "local-use NAT64"),
    ("::ffff:127.0.0.1", "IPv4-mapped of 127.0.0.1: loopback"),
    ("::ffff:100.64.0.1", "IPv4-mapped of 100.64.0.1: carrier-grade NAT"),
    ("2002:7f00:1::1", "6to4 of 127.0.0.1: loopback"), ("2002:a00:1::1", "6to4 of 10.0.0.1: private"),
    ("2002:c0a8:1::1", "6to4 of 192.168.0.1: private"),
    ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254: link-local"), ("64:ff9b::a00:1", "NAT64 of 10.0.0.1: private"),
    ("2001:0:4136:e378:8000:63bf:3f57:fefe", "Teredo of 192.168.1.1: private"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "Teredo"),
    ("2001:2::1", "IETF protocol assignments"),
]  # fmt: skip


@pytest.mark.parametrize(("address", "why"), NOT_GLOBAL)
def test_addresses_that_are_not_globally_routable_are_refused(address: str, why: str) -> None:
    policy = OutboundPolicy(frozenset({"hana.ai", "93.184.216.0/24"}))
    with pytest.raises(RefusedHost, match="internal address") as error:
        policy.check_peer("hana.ai", address)  # an allowed *name* never reaches an internal address
    assert why in str(error.value) and "list it in outbound.allow_hosts" in str(error.value)
    assert not error.value.retryable


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "192.0.1.1", "198.17.255.255",
     "223.255.255.255", "2606:4700::1111", "2a00:1450:4001::200e",
     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],  # IPv4-mapped, NAT64 and 6to4 of a public address
)  # fmt: skip
def test_globally_routable_addresses_pass(address: str) -> None:
    OutboundPolicy(frozenset({"hana.ai"})).check_peer("hana.ai", address)


def test_a_listed_address_or_range_opens_what_it_covers_and_nothing_else() -> None:
    policy = OutboundPolicy(frozenset({"100.64.0.0/10", "10.0.0.0/8", "fd00::1"}))
    for address in ("100.100.100.200", "10.9.9.9", "::ffff:10.9.9.9", "fd00::1"):
        policy.check_peer("anything", address)
    for address in ("127.0.0.1", "192.168.0.1", "fd00::2", "2002:a09:909::1"):
        with pytest.raises(RefusedHost):
            policy.check_peer("anything", address)


def test_only_an_update_urls_own_host_and_port_may_be_at_an_internal_address() -> None:
    default = Application(id=None, name="default", webhook_token="t" * 16, hana_update_url="http://127.0.0.1:8080/u")
    stub = Application(id="b", name="B", webhook_token="u" * 16, hana_update_url="https://Hana.Internal/api/update")
    settings = Settings(config_file=None, rules_dir=Path("rules"), data_dir=Path("var"), applications=(default, stub),
                        outbound=Outbound(allow_hosts=("localhost",)))  # fmt: skip
    policy = OutboundPolicy.from_settings(settings)
    assert policy.check_url("http://127.0.0.1:8080/u") == "127.0.0.1"
    policy.check_connection("127.0.0.1", 8080, "127.0.0.1")  # the admin's own word
    policy.check_connection("hana.internal", 443, "10.0.0.7")
    for host, port, address in [("127.0.0.1", 6379, "127.0.0.1"),  # the same host, another port
                                ("localhost", 8080, "127.0.0.1"),  # another allowed name, the same address
                                ("hana.internal", 80, "10.0.0.7")]:  # fmt: skip
        with pytest.raises(RefusedHost, match="internal address"):
            policy.check_connection(host, port, address)
    with pytest.raises(RefusedHost, match="not in outbound.allow_hosts"):
        policy.check_connection("evil.example", 8080, "93.184.216.34")


@pytest.mark.parametrize(
    ("url", "checked_at_load"),
    [("http://x\\@hooks.slack.com/", ["http://x\\@hooks.slack.com/"]),
     ("https://evil.example/hook/{{ lead.id }}", ["https://evil.example/"]),  # the host cannot change
     ("http://A\\@hooks.slack.com/{{ lead.id }}", ["http://A\\@hooks.slack.com/"]),
     ("https://evil.example?id={% if lead %}1{% endif %}", ["https://evil.example?"]),
     ("http://{{ lead.host }}/hook", []), ("http://localhost:{{ lead.port }}/hook", []),
     ("https://hooks.slack.com{{ lead.path }}", [])],  # the template may still end the host part
)  # fmt: skip
def test_the_host_part_of_a_rules_url_is_checked_at_load_when_no_template_comes_before_it(
    url: str, checked_at_load: list[str]
) -> None:
    assert list(literal_urls({"url": url}, "webhook")) == checked_at_load
    assert list(literal_urls({"webhook_url": url}, "slack")) == checked_at_load


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
