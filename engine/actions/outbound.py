"""The one HTTP client every outbound call goes through (the policy it enforces is in policy.py).

- No redirects, no proxies or netrc from the environment, at most 1 MiB read.
- `timeout` is a total deadline per attempt: DNS, connect, sending, the status
  line and headers, and the body (`engine/actions/deadline.py` says how it is
  enforced, keep-alive connections included).
- An answered 2xx is a delivery whatever happens to its body: once its status
  line and headers arrived, the call returns it, with what was read of the body
  and a note when the body was cut. Sending it again would repeat the delivery.
- The answer's text is decoded with its charset, or as UTF-8 when that charset
  is unknown (`utf8mb4`): reading an answer never fails an attempt.
- A header value with a line break, or with a character outside Latin-1 (what
  HTTP/1.1 headers carry), is refused before anything is sent.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from engine.actions.deadline import Attempt, bounded, current, open_connection
from engine.actions.errors import ActionError, Response
from engine.actions.policy import OutboundPolicy, RefusedHost, without_url_path
from engine.actions.retry import RETRYABLE_STATUS, parse_retry_after

MAX_RESPONSE_BYTES = 1024 * 1024
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _guarded_pools(policy: OutboundPolicy) -> dict[str, type]:
    def checked(connection_class: type) -> type:
        class Checked(connection_class):  # type: ignore[misc, valid-type]
            """Checks the peer address, and hands every socket it uses to the current attempt's watchdog."""

            def _new_conn(self) -> socket.socket:
                # urllib3's own _new_conn, with DNS and connect bounded by the attempt's deadline.
                timeout = self.timeout if isinstance(self.timeout, int | float) else None
                try:
                    sock = open_connection(
                        self._dns_host,
                        self.port,
                        family=allowed_gai_family(),
                        timeout=timeout,
                        source_address=self.source_address,
                        socket_options=self.socket_options,
                    )
                except socket.gaierror as exc:
                    raise NameResolutionError(self.host, self, exc) from exc
                except TimeoutError as exc:
                    raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
                except OSError as exc:
                    raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
                sys.audit("http.client.connect", self, self.host, self.port)
                try:
                    # The host urllib3 resolved and connected to, whatever parsed the URL before.
                    policy.check_connection(self._dns_host, self.port, sock.getpeername()[0])
                except RefusedHost as exc:
                    sock.close()
                    raise NewConnectionError(self, str(exc)) from exc
                return sock

            def request(self, *args: Any, **kwargs: Any) -> None:
                attempt = current()
                if attempt is not None and self.sock is not None:
                    attempt.watch(self.sock)  # a kept-alive connection, reused by this attempt
                super().request(*args, **kwargs)

        return Checked

    class Pool(HTTPConnectionPool):
        ConnectionCls = checked(HTTPConnection)

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = checked(HTTPSConnection)

    return {"http": Pool, "https": TlsPool}


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: OutboundPolicy) -> None:
        self._pools = _guarded_pools(policy)
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools
        self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)


class OutboundClient:
    def __init__(self, policy: OutboundPolicy, *, timeout: float) -> None:
        self.policy = policy
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, netrc or CA overrides from the environment
        adapter = _GuardedAdapter(policy)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(self, method: str, url: str, *, headers: dict[str, str] | None = None, json: Any = None,
             data: str | bytes | None = None) -> Response:  # fmt: skip
        """Send one request; a 2xx Response, or ActionError saying whether to retry."""
        self.policy.check_url(url)
        headers = {str(k): str(v) for k, v in (headers or {}).items()}
        check_headers(headers)
        started = time.monotonic()
        with bounded(self.timeout) as attempt:
            try:
                answer = self.session.request(
                    method, url, headers=headers, json=json, data=data, stream=True, allow_redirects=False,
                    timeout=self.timeout,  # per socket operation; the attempt's watchdog bounds the whole
                )  # fmt: skip
            except requests.exceptions.ConnectionError as exc:
                refused = _refusal(exc)
                if refused:
                    raise RefusedHost(refused) from None
                if attempt.passed:
                    raise self._too_late() from None
                raise ActionError(f"could not connect: {without_url_path(exc)}", retryable=True) from None
            except requests.exceptions.Timeout:
                raise self._too_late() from None
            except requests.exceptions.InvalidHeader:
                # requests' own message quotes the value, which may be a secret.
                raise ActionError("a header name or value starts with a space or holds a reserved character; "
                                  "refused", retryable=False) from None  # fmt: skip
            except requests.exceptions.RequestException as exc:
                if attempt.passed:
                    raise self._too_late() from None
                raise ActionError(f"request failed: {without_url_path(exc)}", retryable=True) from None
            except UnicodeError as exc:
                raise ActionError(f"the request cannot be encoded for HTTP ({getattr(exc, 'reason', exc)}); refused",
                                  retryable=False) from None  # fmt: skip
            raw, cut = _read_body(answer, attempt)
        status = answer.status_code
        text = decode(raw, answer.encoding)
        response = Response(
            status_code=status, body=f"{text} … (answer cut: {cut})" if cut else text,
            headers={k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "retry-after")},
            duration_ms=(time.monotonic() - started) * 1000,
        )  # fmt: skip
        if 200 <= status < 300:
            return response
        if 300 <= status < 400:
            raise ActionError(f"answered {status} redirect to {answer.headers.get('Location', '?')[:100]}; "
                              "redirects are not followed", retryable=False, response=response)  # fmt: skip
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        shown = text[:200] + (f" (answer cut: {cut})" if cut else "")
        raise ActionError(f"answered {status}: {shown}", retryable=status in RETRYABLE_STATUS,
                          retry_after=retry_after, response=response)  # fmt: skip

    def _too_late(self) -> ActionError:
        return ActionError(f"no complete answer within {self.timeout:g}s", retryable=True)


def check_headers(headers: dict[str, str]) -> None:
    """Refuse, before sending, headers that http.client would choke on or that would split the request.

    A value outside Latin-1 (Vietnamese names, emoji) used to raise UnicodeEncodeError deep
    inside http.client; it is a rule to fix, not a delivery to retry. The value itself is
    never shown beyond the offending character: it may be a secret.
    """
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0"):
            raise ActionError(f"header {name!r} contains a line break; refused", retryable=False)
        odd = next((c for c in name if not c.isascii()), None)
        if odd:
            raise ActionError(f"header name {name!r} holds a character outside ASCII ({odd}, U+{ord(odd):04X}); "
                              "header names are plain words such as X-Customer-Name", retryable=False)  # fmt: skip
        odd = next((c for c in value if ord(c) > 0xFF), None)
        if odd:
            raise ActionError(
                f"header {name!r} holds characters outside Latin-1 ({odd}, U+{ord(odd):04X}), which HTTP headers "
                "cannot carry; send it in the body, or encode it with the urlencode filter: "
                "{{ lead.baseName | urlencode }}", retryable=False,
            )  # fmt: skip


def _read_body(answer: requests.Response, attempt: Attempt) -> tuple[bytes, str | None]:
    """The body read (up to 1 MiB), and why it is incomplete, if it is.

    The status line and headers already arrived, so nothing here raises: a 2xx is a
    delivery whether or not its body makes it, and a non-2xx is judged by its status.
    """
    chunks: list[bytes] = []
    size = 0
    problem: Exception | None = None
    try:
        for chunk in _body_chunks(answer):
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_RESPONSE_BYTES:
                break
    except Exception as exc:  # a boundary: the answer is judged by its status, whatever broke in its body
        problem = exc
    finally:
        answer.close()
    raw = b"".join(chunks)[:MAX_RESPONSE_BYTES]
    if attempt.cut or (problem is not None and attempt.passed):
        return raw, f"no complete body within {attempt.timeout:g}s"
    if problem is not None:
        return raw, f"body unreadable: {without_url_path(problem)}"
    return raw, None


def _body_chunks(answer: requests.Response) -> Iterator[bytes]:
    """The body as it arrives.

    `read1` hands over each piece as soon as it is received. `iter_content` reads
    64 KiB at a time, and when the socket is cut mid-way urllib3 drops what it had
    buffered (it raises IncompleteRead before handing it over); it is only the
    fallback for urllib3 older than 2.3, which has no `read1`.
    """
    read1 = getattr(answer.raw, "read1", None)
    if read1 is None:
        yield from answer.iter_content(65536)
        return
    while chunk := read1(65536, decode_content=True):
        yield chunk


def decode(raw: bytes, charset: str | None) -> str:
    """The answer's text; never raises, so an odd charset never turns a delivery into a retry.

    An unknown codec (`utf8mb4`, a MySQL name) or one that refuses errors="replace"
    (`idna`) falls back to UTF-8, which is what such answers are in practice.
    """
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except (LookupError, ValueError, TypeError):
        return raw.decode("utf-8", errors="replace")


def _refusal(exc: BaseException) -> str | None:
    """The policy's own refusal, from under the layers urllib3 and requests wrap it in."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, RefusedHost):
            return str(current)
        if isinstance(current, BaseException):
            stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None), *current.args])
    return None
