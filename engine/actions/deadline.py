"""A total deadline per delivery attempt, enforced on the sockets themselves.

Socket timeouts bound each `recv`, not an exchange: a partner that trickles one
byte every half second keeps a "1 s" call alive for as long as it likes, in the
status line, the headers, the body or an SMTP reply. So an attempt runs inside
`bounded(timeout)`, and every socket it uses is *watched*: one daemon thread
(the watchdog) keeps a heap of deadlines and, when an attempt's deadline
passes, shuts its sockets down (`shutdown(SHUT_RDWR)`), which makes any blocked
`recv`/`send` of the worker thread return at once. The code that owns the socket
then sees an end of stream and fails as usual; the caller asks
`attempt.passed` to tell a deadline from a real failure.

- **What is watched is a duplicate descriptor** (`os.dup`) of the socket, held
  until the attempt ends. `shutdown` acts on the connection, not on one
  descriptor, so the duplicate reaches the connection even after TLS wraps (and
  detaches) the original socket object, and since we own it, its number can
  never be reused by another socket while the watchdog might still act on it.
- **Keep-alive connections are reused, and watched too**: the HTTP connection
  class registers its socket at the start of every request, not only when it
  connects (see `outbound._guarded_pools`). Turning reuse off would cost a TCP
  (and TLS) handshake per call to the same partner, for the same guarantee.
- **DNS**: `getaddrinfo` cannot be interrupted, so a name is resolved in a
  helper daemon thread and waited for at most the time left. A lookup that
  hangs leaves that thread behind until the system resolver gives up (its own
  timeout, seconds); the attempt itself ends on time. IP literals skip it.
  Other uninterruptible calls (smtplib's lookup of our own name) go the same way.

The current attempt travels in a context variable, so the urllib3 connection
classes and smtplib find it without threading it through their APIs.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")
_Address = tuple[Any, ...]
_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, _Address]


class DeadlinePassed(TimeoutError):
    """The attempt's total deadline passed before this step could finish."""


class Attempt:
    """One delivery attempt: its deadline and the sockets to cut when it passes."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._cut = False
        self._finished = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def passed(self) -> bool:
        """True once the deadline passed: whatever failed after that failed because of it."""
        return self._cut or self.remaining() <= 0

    @property
    def cut(self) -> bool:
        """True when the watchdog shut this attempt's sockets: what was read after may be partial."""
        return self._cut

    @property
    def finished(self) -> bool:
        return self._finished

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (at once if it already has)."""
        with self._lock:
            if self._finished:
                return
            try:
                duplicate = socket.socket(fileno=os.dup(sock.fileno()))
            except OSError:
                return  # already closed: nothing left to cut
            self._watched.append(duplicate)  # closed by finish(), whatever happens next
            # O_NONBLOCK belongs to the connection, shared by both descriptors: creating the
            # duplicate may have set it (under socket.setdefaulttimeout); keep the owner's mode.
            duplicate.settimeout(sock.gettimeout())
            if self._cut:
                _shut(duplicate)

    def cut_now(self) -> None:
        """Called by the watchdog, or by a step that saw the deadline pass first (DNS)."""
        with self._lock:
            if self._finished or self._cut:
                return
            self._cut = True
            for sock in self._watched:
                _shut(sock)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            for sock in self._watched:
                sock.close()  # only our duplicate: a kept-alive connection stays open
            self._watched.clear()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, or the peer already went away


class _Watchdog:
    """One thread for the whole process, asleep until the earliest deadline."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also run in a forked child: the parent's thread and lock state do not survive a fork.
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, Attempt]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def track(self, attempt: Attempt) -> None:
        with self._condition:
            heapq.heappush(self._heap, (attempt.deadline, next(self._order), attempt))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="hana-rules-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is attempt:
                self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or self._heap[0][2].finished):
                    heapq.heappop(self._heap)[2].cut_now()  # a no-op for a finished attempt
                self._condition.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._reset)
_CURRENT: ContextVar[Attempt | None] = ContextVar("hana_rules_attempt", default=None)


@contextmanager
def bounded(timeout: float) -> Iterator[Attempt]:
    """Run the block as one attempt whose sockets are cut `timeout` seconds from now."""
    attempt = Attempt(timeout)
    _WATCHDOG.track(attempt)
    token = _CURRENT.set(attempt)
    try:
        yield attempt
    finally:
        _CURRENT.reset(token)
        attempt.finish()


def current() -> Attempt | None:
    return _CURRENT.get()


def within_deadline(function: Callable[[], T], what: str) -> T:
    """`function()`, waited for at most the current attempt's remaining time.

    For calls that no socket shutdown can interrupt (the system resolver). When
    the time is up the call is left to finish alone in its daemon thread.
    """
    attempt = current()
    if attempt is None:
        return function()
    if attempt.remaining() <= 0:
        attempt.cut_now()
        raise DeadlinePassed(f"no time left for {what}")
    answer: Future[T] = Future()

    def run() -> None:
        try:
            answer.set_result(function())
        except BaseException as exc:  # handed to the waiting thread, which raises it
            answer.set_exception(exc)

    threading.Thread(target=run, name="hana-rules-blocking-call", daemon=True).start()
    try:
        return answer.result(timeout=max(attempt.remaining(), 0.0))
    except TimeoutError:
        if answer.done():
            raise  # the function's own TimeoutError
        attempt.cut_now()
        raise DeadlinePassed(f"{what} took more than {attempt.timeout:g}s") from None


def resolve(host: str, port: int, *, family: int = socket.AF_UNSPEC) -> list[_AddrInfo]:
    """getaddrinfo, waited for at most the current attempt's remaining time."""
    try:
        return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # a name, not an address literal: ask the resolver, which may hang
    return within_deadline(lambda: socket.getaddrinfo(host, port, family, socket.SOCK_STREAM), f"resolving {host}")


def open_connection(
    host: str,
    port: int,
    *,
    family: int = socket.AF_UNSPEC,
    timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
    socket_options: Sequence[tuple[int, int, int]] | None = None,
) -> socket.socket:
    """A connected TCP socket, watched by the current attempt from before `connect`.

    Like `socket.create_connection`, but DNS and each connect wait at most the
    attempt's remaining time (and at most `timeout`).
    """
    attempt = current()
    error: OSError | None = None
    for af, kind, proto, _, address in resolve(host, port, family=family):
        sock = socket.socket(af, kind, proto)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            wait = timeout
            if attempt is not None:
                attempt.watch(sock)
                wait = attempt.remaining() if wait is None else min(wait, attempt.remaining())
                if wait <= 0:
                    raise DeadlinePassed(f"no time left to connect to {host}")
            sock.settimeout(wait)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            if attempt is not None and attempt.passed:
                raise DeadlinePassed(f"could not connect to {host} within {attempt.timeout:g}s") from exc
            error = exc
    raise error or OSError(f"{host} resolved to no address")
