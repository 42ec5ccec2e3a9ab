"""Real HTTP servers on 127.0.0.1 standing in for Hana's update API, Slack and Telegram.

Answers are scripted per request; every request is recorded, and so is whether
its answer reached a client that was still connected (a worker killed while
waiting never receives it).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    hold: float = 0.0  # seconds to wait before answering


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0  # what we answered
    delivered: bool = False  # the answer was written to a client still connected
    hung_up: bool = False  # the client went away while we held the answer

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Stub:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.script: list[Answer] = []
        self.default = Answer()
        self.requests: list[Received] = []
        self.after: Callable[[Received], None] | None = None
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between headers and body

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                received = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                    self.rfile.read(length), time.monotonic())  # fmt: skip
                with stub.lock:
                    stub.requests.append(received)
                    answer = stub.script.pop(0) if stub.script else stub.default
                if answer.hold and _wait_for_hangup(self.connection, answer.hold):
                    received.hung_up = True  # not delivered: nobody was there to read it
                    return
                payload = json.dumps(answer.body, ensure_ascii=False).encode()
                received.status = answer.status
                self.send_response(answer.status)
                if "Content-Type" not in answer.headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
                received.delivered = True
                if stub.after:
                    stub.after(received)

            do_PUT = do_PATCH = do_GET = do_DELETE = do_POST  # noqa: N815

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def answer(self, *answers: Answer | int) -> Stub:
        self.script.extend(a if isinstance(a, Answer) else Answer(status=a) for a in answers)
        return self

    @property
    def successes(self) -> list[Received]:
        """Requests answered 2xx to a client that was still there to read it."""
        return [r for r in self.requests if r.delivered and 200 <= r.status < 300]


def _wait_for_hangup(connection: socket.socket, seconds: float) -> bool:
    """Hold the answer; True when the client closed its side meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([connection], [], [], 0.05)
        if readable:
            try:
                if connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
    return False


@contextmanager
def stub_server(host: str = "127.0.0.1") -> Iterator[Stub]:
    stub = Stub(host)
    stub.thread.start()
    try:
        yield stub
    finally:
        stub.server.shutdown()
        stub.server.server_close()


#: Seconds between two bytes a TrickleServer sends: far below any per-read socket timeout.
PACE = 0.2


class TrickleServer:
    """A TCP server on 127.0.0.1 running `script(connection, server)` for each connection, in a thread."""

    def __init__(self, script: Callable[[socket.socket, TrickleServer], None]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.sent = 0  # bytes trickled before the client hung up
        self.hung_up = threading.Event()  # the client closed its side while we were trickling
        self.finished = threading.Event()  # we trickled everything: nobody cut us short

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # the listener was shut down
            self.connections += 1
            threading.Thread(target=self.run, args=(connection,), daemon=True).start()

    def run(self, connection: socket.socket) -> None:
        with connection:
            try:
                self.script(connection, self)
            except OSError:
                self.hung_up.set()

    def trickle(self, connection: socket.socket, data: bytes) -> None:
        """Send `data` one byte per PACE, watching between bytes whether the client hung up."""
        for byte in data:
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                self.hung_up.set()
                return
            self.sent += 1
            readable, _, _ = select.select([connection], [], [], PACE)
            if readable and connection.recv(4096) == b"":
                self.hung_up.set()
                return
        self.finished.set()


@contextmanager
def trickle_server(script: Callable[[socket.socket, TrickleServer], None]) -> Iterator[TrickleServer]:
    server = TrickleServer(script)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.listener.shutdown(socket.SHUT_RDWR)
        server.listener.close()
        thread.join(5)


def read_request(connection: socket.socket) -> bytes:
    """One HTTP request's head and body (by Content-Length); b"" when the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
        b"content-length:")), 0)  # fmt: skip
    while len(body) < length:
        body += connection.recv(65536)
    return head


class TcpProxy:
    """A TCP relay on 127.0.0.1 to `target`, which a test can cut (every connection reset, new ones
    refused at once) and restore: one machine losing its network to a shared Redis."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # a reset
                client.close()
                continue
            wrapped = self._wrap(client)
            if wrapped is None:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [wrapped, upstream]
            for source, sink in ((wrapped, upstream), (upstream, wrapped)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _wrap(self, client: socket.socket) -> socket.socket | None:
        return client

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for end in self.sockets:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.sockets.clear()

    def restore(self) -> None:
        self.open.set()


@contextmanager
def tcp_proxy(target_port: int) -> Iterator[TcpProxy]:
    with _running(TcpProxy(target_port)) as proxy:
        yield proxy


@contextmanager
def _running(proxy: TcpProxy) -> Iterator[TcpProxy]:
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.cut()
        proxy.listener.close()
        thread.join(5)


class TlsRelay(TcpProxy):
    """A TLS-terminating TCP relay on 127.0.0.1 to a plain server: Redis over TLS (`rediss://`),
    as a managed Redis offers it, with a test certificate authority."""

    def __init__(self, target_port: int, context: Any) -> None:
        super().__init__(target_port)
        self.context = context
        self.url = f"rediss://127.0.0.1:{self.port}/0"

    def _wrap(self, client: socket.socket) -> socket.socket | None:
        try:
            return self.context.wrap_socket(client, server_side=True)
        except OSError:
            client.close()  # a client that does not speak TLS, or does not trust us
            return None


@contextmanager
def tls_relay(target_port: int, context: Any) -> Iterator[TcpProxy]:
    with _running(TlsRelay(target_port, context)) as relay:
        yield relay
