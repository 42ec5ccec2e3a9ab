"""What bounds one delivery attempt and the wait before the next: deadlines, headers, charsets, Retry-After."""

from __future__ import annotations

import random
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from engine.actions.deadline import DeadlinePassed, bounded, current, resolve
from engine.actions.errors import ActionError
from engine.actions.outbound import check_headers, decode
from engine.actions.retry import MAX_RETRY_AFTER, backoff_delay, next_delay, parse_retry_after
from engine.config import Delivery

DELIVERY = Delivery(max_attempts=8, backoff=10, max_backoff=3600)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# --- Retry-After lengthens the backoff, never shortens it -----------------------------------------


@pytest.mark.parametrize(
    "header",
    ["0", format_datetime(NOW - timedelta(hours=1), usegmt=True), "nan", "NaN", "inf", "-Infinity", "1e400", "-5",
     "soon", "Mon, 99 Foo 2026 25:61:00 GMT", ""],
)  # fmt: skip
def test_retry_after_never_makes_a_wait_shorter_than_the_backoff(header: str) -> None:
    retry_after = parse_retry_after(header, now=NOW)
    for attempt in (1, 2, 3):
        ceiling = DELIVERY.backoff * 2 ** (attempt - 1)
        delays = [next_delay(attempt, DELIVERY, retry_after) for _ in range(20)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (header, delays)


def test_garbage_and_non_finite_retry_after_are_ignored_and_a_past_date_counts_as_zero() -> None:
    for garbage in ("nan", "inf", "-inf", "1e400", "-5", "soon", "   ", None):
        assert parse_retry_after(garbage, now=NOW) is None, garbage
    assert parse_retry_after(format_datetime(NOW - timedelta(days=1), usegmt=True), now=NOW) == 0
    assert parse_retry_after("0") == 0


def test_retry_after_lengthens_the_wait_up_to_an_hour() -> None:
    assert next_delay(1, DELIVERY, 120) == 120
    assert next_delay(1, DELIVERY, parse_retry_after("999999")) == MAX_RETRY_AFTER == 3600
    assert next_delay(1, DELIVERY, 10**9) == MAX_RETRY_AFTER  # even a value that skipped parsing
    assert next_delay(1, DELIVERY, float("nan")) <= DELIVERY.backoff
    in_ten_minutes = format_datetime(NOW + timedelta(minutes=10), usegmt=True)
    assert next_delay(1, DELIVERY, parse_retry_after(in_ten_minutes, now=NOW)) == 600


def test_backoff_alone_is_unchanged_without_retry_after() -> None:
    rng = random.Random(3)
    assert 2560 / 2 <= backoff_delay(9, DELIVERY, rng=rng) <= 2560
    assert 5 <= next_delay(1, DELIVERY, None) <= 10


# --- headers and charsets -------------------------------------------------------------------------


def test_a_header_value_outside_latin1_is_refused_in_words_without_showing_the_value() -> None:
    with pytest.raises(ActionError) as error:
        check_headers({"X-Customer": "Nguyễn Văn 😀"})
    assert str(error.value) == (
        "header 'X-Customer' holds characters outside Latin-1 (ễ, U+1EC5), which HTTP headers cannot carry; send it "
        "in the body, or encode it with the urlencode filter: {{ lead.baseName | urlencode }}"
    )
    assert not error.value.retryable
    with pytest.raises(ActionError) as error:
        check_headers({"Authorization": "Bearer sk-SECRET-VALUE😀"})
    assert "SECRET" not in str(error.value) and "(😀, U+1F600)" in str(error.value)


def test_latin1_header_values_pass_and_other_bad_headers_are_refused() -> None:
    check_headers({"X-Name": "café", "X-Plain": "abc"})  # Latin-1 is what HTTP/1.1 headers carry
    with pytest.raises(ActionError, match="header name 'X-Tên' holds a character outside ASCII"):
        check_headers({"X-Tên": "a"})
    with pytest.raises(ActionError, match="line break"):
        check_headers({"X-Test": "a\r\nInjected: yes"})


@pytest.mark.parametrize("charset", ["utf8mb4", "no-such-codec", "idna", "zlib", None, "utf-8"])
def test_an_answer_decodes_whatever_charset_it_claims(charset: str | None) -> None:
    assert decode("Nguyễn Văn 😀".encode(), charset) == "Nguyễn Văn 😀"


def test_an_answer_in_its_own_known_charset_keeps_it() -> None:
    assert decode("café".encode("latin-1"), "ISO-8859-1") == "café"
    assert decode(b"\xff\xfe ok", "utf-8") == "\ufffd\ufffd ok"  # bad bytes are replaced, never raised on


# --- the watchdog ---------------------------------------------------------------------------------


def test_the_watchdog_cuts_a_blocked_read_at_the_deadline_and_only_that_attempt() -> None:
    ours, partner = socket.socketpair()
    with ours, partner, bounded(30) as outer:
        with bounded(0.1) as attempt:
            assert current() is attempt
            attempt.watch(ours)
            ours.settimeout(10)  # were the watchdog not there, recv would wait 10 s and raise
            assert ours.recv(1) == b""
            assert attempt.cut and attempt.passed
        assert current() is outer and not outer.cut


def test_a_finished_attempt_leaves_its_connection_open_for_the_next_one() -> None:
    ours, partner = socket.socketpair()
    with ours, partner:
        with bounded(5) as attempt:
            attempt.watch(ours)
        assert attempt.finished and not attempt.cut
        ours.sendall(b"x")
        assert partner.recv(1) == b"x"  # a kept-alive connection outlives the attempt that used it


def test_a_socket_watched_after_the_deadline_is_cut_at_once() -> None:
    ours, partner = socket.socketpair()
    with ours, partner, bounded(5) as attempt:
        attempt.cut_now()
        attempt.watch(ours)
        ours.settimeout(10)
        assert ours.recv(1) == b""


def test_name_resolution_waits_no_longer_than_the_time_left() -> None:
    assert resolve("127.0.0.1", 80)[0][4][:2] == ("127.0.0.1", 80)  # an address needs no resolver
    with bounded(5):
        assert resolve("localhost", 80)  # through the helper thread
    with bounded(0) as attempt, pytest.raises(DeadlinePassed):
        resolve("localhost", 80)
    assert attempt.cut
