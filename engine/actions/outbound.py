"""The one HTTP client every outbound call goes through, and the policy it enforces.

- Hosts must be in `outbound.allow_hosts` or be an application's update URL host.
- Private, loopback and link-local addresses are refused unless the address
  itself (or a CIDR range holding it) is listed: an allowed *name* only ever
  reaches public addresses. The check runs on the peer address of the socket
  actually connected, after DNS, so a name that resolves to an internal
  address on the second lookup (DNS rebinding) gains nothing.
- No redirects, no proxies or netrc from the environment, a total deadline per
  call, at most 1 MiB read, and no header value with a line break.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from engine.actions.errors import ActionError, Response
from engine.actions.retry import RETRYABLE_STATUS, parse_retry_after
from engine.config import Settings

MAX_RESPONSE_BYTES = 1024 * 1024


class RefusedHost(ActionError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class OutboundPolicy:
    allowed_hosts: frozenset[str]  # outbound.allow_hosts: names, IPs, CIDR ranges, *.wildcards
    update_hosts: frozenset[str] = frozenset()  # the applications' update URL hosts: names only

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        hosts = frozenset(h.lower().strip() for h in settings.outbound.allow_hosts)
        update_hosts = {urlsplit(app.hana_update_url).hostname for app in settings.applications if app.hana_update_url}
        return cls(hosts, frozenset(h.lower() for h in update_hosts if h))

    def host_allowed(self, host: str) -> bool:
        host = host.lower().strip("[]")
        try:
            if self.internal_allowed(ipaddress.ip_address(host)):
                return True
        except ValueError:
            pass
        return (
            host in self.allowed_hosts
            or host in self.update_hosts
            or any(pattern.startswith("*.") and host.endswith(pattern[1:]) for pattern in self.allowed_hosts)
        )

    def check_url(self, url: str) -> str:
        """The URL's host when the policy lets it be called; RefusedHost otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RefusedHost(f"not an http(s) URL: {url[:80]!r}")
        if not self.host_allowed(parts.hostname):
            raise RefusedHost(
                f"host {parts.hostname!r} is not in outbound.allow_hosts; add it there to allow calls to it"
            )
        return parts.hostname

    def internal_allowed(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Only an address or range listed in allow_hosts opens an internal address."""
        for entry in self.allowed_hosts:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue  # a host name
        return False

    def check_peer(self, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        internal = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or (
            ip.is_unspecified)  # fmt: skip
        if internal and not self.internal_allowed(ip):
            raise RefusedHost(
                f"{host} resolved to the internal address {ip}; list it in outbound.allow_hosts to allow it"
            )


def _guarded_pools(policy: OutboundPolicy) -> dict[str, type]:
    def checked(connection_class: type) -> type:
        class Checked(connection_class):  # type: ignore[misc, valid-type]
            def _new_conn(self) -> Any:
                sock = super()._new_conn()
                try:
                    policy.check_peer(self.host, sock.getpeername()[0])
                except RefusedHost as exc:
                    sock.close()
                    raise NewConnectionError(self, str(exc)) from exc
                return sock

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
        for name, value in headers.items():
            if any(c in name + value for c in "\r\n\0"):
                raise ActionError(f"header {name!r} contains a line break; refused", retryable=False)
        started = time.monotonic()
        deadline = started + self.timeout
        try:
            answer = self.session.request(
                method, url, headers=headers, json=json, data=data, stream=True, allow_redirects=False,
                timeout=(min(self.timeout, 5.0), self.timeout),
            )  # fmt: skip
            body = _read_limited(answer, deadline)
        except requests.exceptions.ConnectionError as exc:
            refused = _refusal(exc)
            if refused:
                raise RefusedHost(refused) from None
            raise ActionError(f"could not connect: {_short(exc)}", retryable=True) from None
        except requests.exceptions.Timeout:
            raise ActionError(f"no answer within {self.timeout:g}s", retryable=True) from None
        except requests.exceptions.RequestException as exc:
            raise ActionError(f"request failed: {_short(exc)}", retryable=True) from None
        response = Response(
            status_code=answer.status_code, body=body,
            headers={k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "retry-after")},
            duration_ms=(time.monotonic() - started) * 1000,
        )  # fmt: skip
        status = answer.status_code
        if 200 <= status < 300:
            return response
        if 300 <= status < 400:
            raise ActionError(f"answered {status} redirect to {answer.headers.get('Location', '?')[:100]}; "
                              "redirects are not followed", retryable=False, response=response)  # fmt: skip
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        raise ActionError(f"answered {status}: {body[:200]}", retryable=status in RETRYABLE_STATUS,
                          retry_after=retry_after, response=response)  # fmt: skip


class _DeadlinePassed(requests.exceptions.Timeout):
    pass


def _read_limited(answer: requests.Response, deadline: float) -> str:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in answer.iter_content(65536):
            if time.monotonic() > deadline:
                raise _DeadlinePassed("total deadline passed while reading the answer")
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_RESPONSE_BYTES:
                break
    finally:
        answer.close()
    return b"".join(chunks)[:MAX_RESPONSE_BYTES].decode(answer.encoding or "utf-8", errors="replace")


def _refusal(exc: BaseException) -> str | None:
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, RefusedHost):
            return str(current)
        text = str(current)
        if "list it in outbound.allow_hosts" in text:
            return text[text.find(" ", text.find(":")) + 1 :] if ": " in text else text
        stack.extend([getattr(current, "__cause__", None), getattr(current, "__context__", None),
                      getattr(current, "reason", None), *getattr(current, "args", ())])  # fmt: skip
    return None


_URL_PATH = re.compile(r"(url: )\S+|(https?://[^/\s'\"]+)/[^\s'\"]*")


def _short(exc: BaseException) -> str:
    """The error without any URL path: a Telegram path holds the bot token."""
    text = _URL_PATH.sub(lambda m: f"{m.group(1)}<path hidden>" if m.group(1) else f"{m.group(2)}/…", str(exc))
    return text if len(text) < 300 else text[:297] + "…"


def literal_urls(spec: Any, kind: str) -> Iterable[str]:
    """URLs written without templates in an action: checked against the policy at load."""
    keys = {"webhook": "url", "slack": "webhook_url"}
    url = spec.get(keys[kind]) if isinstance(spec, dict) and kind in keys else None
    if isinstance(url, str) and "{{" not in url and "{%" not in url:
        yield url
