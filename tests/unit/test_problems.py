"""The engine's error texts in the console reader's language (engine/web/console/problems.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask_babel import Babel

from engine.runtime.intake import MAX_DEPTH, _parse
from engine.sentences import TRANSLATIONS
from engine.web.console.problems import _KNOWN, in_words

#: One text of each kind the engine writes, as it writes them (engine/actions, engine/runtime).
ENGINE_TEXTS = [
    "no hana_update_url/access_token configured for shop-a",
    "Hana refused the access token of shop-a (401); its hana_update actions are parked until an admin fixes "
    "the token and retries them",
    "could not connect: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded",
    "request failed: Connection aborted",
    "no complete answer within 10s",
    "answered 302 redirect to https://elsewhere.example/x; redirects are not followed",
    "answered 500: upstream exploded",
    "host 'evil.example' is not in outbound.allow_hosts; add it there to allow calls to it",
    "the job ran out of time before the delivery ended",
    "interrupted: the worker stopped during delivery (its lease expired)",
    "email: no smtp settings configured",
    "email: every recipient was refused",
    "email: the SMTP server answered 550 (mailbox unavailable)",
    "the body names application 'shop-b', but the token belongs to 'shop-a'; a token never lets one application "
    "act as another",
]


def reading_in(language: str) -> Iterator[None]:
    app = Flask(__name__)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    Babel(app, locale_selector=lambda: language)
    with app.test_request_context():
        yield


@pytest.fixture
def vietnamese() -> Iterator[None]:
    yield from reading_in("vi")


@pytest.fixture
def english() -> Iterator[None]:
    yield from reading_in("en")


def quarantine_reasons() -> list[str]:
    bodies = [b"", b"{not json", b"[1, 2]", b'{"a":' * (MAX_DEPTH + 2) + b"1" + b"}" * (MAX_DEPTH + 2)]
    return [reason for reason in (_parse(body)[1] for body in bodies) if reason]


@pytest.mark.usefixtures("vietnamese")
@pytest.mark.parametrize("text", ENGINE_TEXTS + quarantine_reasons())
def test_each_engine_text_a_user_meets_reads_in_vietnamese_with_its_exact_words_kept(text: str) -> None:
    problem = in_words(text)
    assert problem.original == text
    assert problem.shown != text and not problem.untranslated
    assert any(
        word in problem.shown
        for word in ("Không", "không", "Hana", "Đối tác", "Máy", "Nội dung", "Bị", "Việc", "Yêu cầu")
    )


@pytest.mark.usefixtures("vietnamese")
def test_the_details_a_text_carries_stay_in_its_translation() -> None:
    assert in_words("answered 503: try later <b>").shown == "Đối tác trả lời 503: try later <b>"
    assert "shop-a" in in_words(ENGINE_TEXTS[0]).shown


@pytest.mark.usefixtures("vietnamese")
def test_a_text_no_pattern_knows_is_shown_as_it_is_and_marked_as_english() -> None:
    problem = in_words("unexpected KeyError while delivering: 'x'")
    assert problem.shown == "unexpected KeyError while delivering: 'x'"
    assert problem.untranslated and problem.original is None


@pytest.mark.usefixtures("english")
def test_english_readers_see_the_engines_words_unchanged() -> None:
    for text in ENGINE_TEXTS:
        assert in_words(text) == in_words(text).__class__(text, None, False)


def test_every_pattern_is_exercised_by_a_real_text() -> None:
    texts = ENGINE_TEXTS + quarantine_reasons()
    unused = [p.pattern for p, _ in _KNOWN if not any(p.fullmatch(t) for t in texts)]
    assert unused == []


@pytest.mark.usefixtures("vietnamese")
def test_the_engines_own_history_messages_read_in_vietnamese_and_a_persons_stay_as_written() -> None:
    from engine.web.console.problems import history_message

    assert history_message("rules at start") == "các tệp quy tắc lúc máy chủ khởi động"
    assert history_message("disabled vip-note (console)") == "tắt quy tắc vip-note"
    assert history_message("rollback to 0123456789abcdef (console): oops") == "quay lại phiên bản 0123456789ab: oops"
    assert history_message("VIP note on new leads too") == "VIP note on new leads too"
