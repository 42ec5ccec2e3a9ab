"""`outbound.timeout` is a total deadline per attempt, against real partners on 127.0.0.1 that trickle.

Each server here sends its answer one byte at a time, each byte well within the
per-read socket timeout, so only a deadline on the whole attempt can end it. It
records how many bytes it got out before the client hung up: the client cutting
at the deadline shows as a few bytes of an answer that would take many seconds.
"""

from __future__ import annotations

import socket
from email.message import EmailMessage
from pathlib import Path

import pytest

from engine.actions.errors import ActionError
from engine.actions.kinds import ActionEnvironment, execute
from engine.actions.outbound import OutboundClient
from engine.actions.policy import OutboundPolicy
from engine.config import Outbound, Settings, Smtp
from tests.stubs import TrickleServer, read_request, trickle_server

TIMEOUT = 0.5  # the attempt's total deadline in these tests
#: A status line and headers that take 0.2 s × 90 bytes = 18 s to trickle.
SLOW_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Padding: " + b"." * 50 + b"\r\n\r\nok"
SLOW_BODY = b"a" * 60  # 12 s to trickle
#: At TIMEOUT / PACE bytes per attempt, a client that keeps its deadline hangs up after 3 or 4 bytes.
FEW_BYTES = 10


def client() -> OutboundClient:
    return OutboundClient(OutboundPolicy(frozenset({"127.0.0.1"})), timeout=TIMEOUT)


def assert_cut_early(server: TrickleServer, total: int) -> None:
    assert server.hung_up.wait(5), "the client never hung up"
    assert not server.finished.is_set()
    assert server.sent < FEW_BYTES, f"the client stayed for {server.sent} of {total} bytes"


def test_a_partner_trickling_its_status_line_and_headers_is_cut_at_the_deadline() -> None:
    def script(connection: socket.socket, server: TrickleServer) -> None:
        read_request(connection)
        server.trickle(connection, SLOW_HEAD)

    with trickle_server(script) as server:
        with pytest.raises(ActionError) as error:
            client().send("POST", f"{server.url}/bot123:SECRET/sendMessage", json={"text": "hi"})
        assert str(error.value) == "no complete answer within 0.5s"
        assert error.value.retryable and error.value.response is None
        assert_cut_early(server, len(SLOW_HEAD))


@pytest.mark.parametrize("status", [200, 503])
def test_a_partner_trickling_its_body_is_cut_at_the_deadline_keeping_what_arrived(status: int) -> None:
    def script(connection: socket.socket, server: TrickleServer) -> None:
        read_request(connection)
        connection.sendall(f"HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain; charset=utf-8\r\n"
                           f"Content-Length: {len(SLOW_BODY)}\r\n\r\n".encode())  # fmt: skip
        server.trickle(connection, SLOW_BODY)

    note = "… (answer cut: no complete body within 0.5s)"
    with trickle_server(script) as server:
        if status == 200:
            # A 2xx is a delivery once its head arrived: sending it again would deliver twice.
            response = client().send("POST", server.url, json={})
            assert response.status_code == 200
            assert response.body.startswith("a") and response.body.endswith(note)
        else:
            with pytest.raises(ActionError) as error:
                client().send("POST", server.url, json={})
            assert error.value.retryable
            assert str(error.value).startswith("answered 503: a")
            assert str(error.value).endswith("(answer cut: no complete body within 0.5s)")
            assert error.value.response is not None and error.value.response.status_code == 503
            assert error.value.response.body.startswith("a") and error.value.response.body.endswith(note)
        assert_cut_early(server, len(SLOW_BODY))


def test_a_reused_keep_alive_connection_is_bounded_too() -> None:
    def script(connection: socket.socket, server: TrickleServer) -> None:
        read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if read_request(connection):  # the second call, on the same connection
            server.trickle(connection, SLOW_HEAD)

    outbound = client()
    with trickle_server(script) as server:
        assert outbound.send("POST", server.url, json={}).body == "ok"
        with pytest.raises(ActionError, match=r"^no complete answer within 0\.5s$"):
            outbound.send("POST", server.url, json={})
        assert server.connections == 1  # the second call did reuse the first one's connection
        assert_cut_early(server, len(SLOW_HEAD))


def test_an_answer_in_an_unknown_charset_is_read_as_utf8() -> None:
    text = '{"name": "Nguyễn Văn 😀"}'

    def script(connection: socket.socket, server: TrickleServer) -> None:
        read_request(connection)
        body = text.encode()
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf8mb4\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip

    with trickle_server(script) as server:
        response = client().send("POST", server.url, json={})
    assert response.status_code == 200 and response.body == text


def test_a_header_value_outside_latin1_is_refused_before_anything_is_sent() -> None:
    def script(connection: socket.socket, server: TrickleServer) -> None:
        read_request(connection)

    with trickle_server(script) as server:
        with pytest.raises(ActionError) as error:
            client().send("POST", server.url, headers={"X-Customer": "Nguyễn Văn 😀"}, json={})
        assert not error.value.retryable
        assert "header 'X-Customer' holds characters outside Latin-1 (ễ, U+1EC5)" in str(error.value)
        assert "urlencode" in str(error.value) and "Nguy" not in str(error.value)
        assert server.connections == 0


# --- SMTP ---------------------------------------------------------------------------------------


def smtp_settings(tmp_path: Path, port: int) -> Settings:
    return Settings(config_file=None, rules_dir=tmp_path / "rules", data_dir=tmp_path / "var",
                    outbound=Outbound(allow_hosts=("127.0.0.1",), timeout=TIMEOUT),
                    smtp=Smtp(host="127.0.0.1", port=port, sender="bot@example.com", starttls=False))  # fmt: skip


def send_email(settings: Settings) -> object:
    environment = ActionEnvironment(settings=settings, client=client(), application=None)
    return execute("email", {"to": "sales@example.com", "subject": "Lead", "body": "Call 0978712200"}, environment)


def read_line(connection: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        byte = connection.recv(1)
        if not byte:
            break
        line += byte
    return line


@pytest.mark.parametrize("slow", ["greeting", "ehlo reply"])
def test_an_smtp_server_trickling_its_replies_is_cut_at_the_deadline(tmp_path: Path, slow: str) -> None:
    greeting = b"220 smtp.example.com ESMTP ready" + b"." * 50 + b"\r\n"

    def script(connection: socket.socket, server: TrickleServer) -> None:
        if slow == "greeting":
            server.trickle(connection, greeting)
            return
        connection.sendall(greeting)
        read_line(connection)  # EHLO
        server.trickle(connection, b"250-smtp.example.com" + b"." * 50 + b"\r\n250 8BITMIME\r\n")

    with trickle_server(script) as server:
        with pytest.raises(ActionError) as error:
            send_email(smtp_settings(tmp_path, server.port))
        assert str(error.value) == "email: no complete exchange with the SMTP server within 0.5s"
        assert error.value.retryable
        assert_cut_early(server, len(greeting))


def test_email_within_the_deadline_is_delivered(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list[EmailMessage] = []

    class Collect(Message):
        def handle_message(self, message: EmailMessage) -> None:  # type: ignore[override]
            received.append(message)

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        response = send_email(smtp_settings(tmp_path, port))
    finally:
        controller.stop()
    assert getattr(response, "body", None) == "sent to 1 recipient(s)"
    [message] = received
    assert message["To"] == "sales@example.com" and message.get_payload().strip() == "Call 0978712200"
