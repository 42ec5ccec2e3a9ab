"""What outbound calls may reach: the URL checks and the address policy.

- Hosts must be in `outbound.allow_hosts` or be an application's update URL host.
- The host checked is the host connected to. A URL is read the way requests
  reads it before handing it to urllib3 (its own preparation, then the host its
  adapter gives urllib3's pool), never with a second parser; and the connection
  checks its own host again when it opens a socket. Authorities that parsers
  read differently are refused outright: a backslash, userinfo (`user@`, even a
  bare `@`), control characters or spaces, percent-encoding. `http://A\\@hooks.slack.com/`
  is `hooks.slack.com` to `urllib.parse` and `A` to urllib3.
- Addresses that are not globally routable (private, loopback, link-local,
  carrier-grade NAT, benchmarking, reserved, multicast, and IPv6 addresses
  wrapping such an IPv4 one: IPv4-mapped, NAT64, 6to4, Teredo) are refused
  unless the address itself (or a CIDR range holding it) is listed: an allowed
  *name* only ever reaches public addresses. The check runs on the peer address
  of the socket actually connected, after DNS, so a name that resolves to an
  internal address on the second lookup (DNS rebinding) gains nothing.
- An application's `hana_update_url` is the admin's own word: its host, at its
  port, may be at any address (a stub Hana on 127.0.0.1 for a trial). That host
  name on another port, or another name resolving to the same address, is
  judged like any other.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from engine.actions.errors import ActionError
from engine.config import Settings

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedHost(ActionError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class Target:
    """Where a URL connects: what requests hands urllib3's pool manager."""

    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int


#: Asked which host requests would hand urllib3 for a prepared URL; never sends anything.
_POOL_KEYS = HTTPAdapter(max_retries=0)


@functools.lru_cache(maxsize=4096)  # a pure function of the text; every rule check and send asks again
def connect_target(url: str) -> Target:
    """The scheme, host and port a call to `url` connects to; RefusedHost for a URL that is not plain.

    The URL goes through requests' own preparation (urllib3's `parse_url`, IDNA,
    requoting) and the host is the one requests' adapter then gives urllib3's pool,
    so the check can only ever see the host that is connected to.
    """
    _refuse_ambiguous(url)
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
        key = getattr(_POOL_KEYS, "build_connection_pool_key_attributes", None)
        if key is not None:  # requests >= 2.32.2
            params = key(prepared, True)[0]
            scheme, host, port = params["scheme"], params["host"], params["port"]
        else:  # older requests: PoolManager.connection_from_url, which parses with urllib3
            parsed = parse_url(prepared.url or "")
            scheme, host, port = parsed.scheme, parsed.host, parsed.port
    except (requests.exceptions.RequestException, LocationParseError, ValueError) as exc:
        raise RefusedHost(f"not a valid URL ({without_url_path(exc)})") from None
    scheme, host = (scheme or "").lower(), (host or "").lower().strip("[]")
    if scheme not in _DEFAULT_PORTS or not host:
        raise RefusedHost("a URL must start with http:// or https:// and name a host")
    return Target(scheme, host, port or _DEFAULT_PORTS[scheme])


_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"(?i)https?://")


def _refuse_ambiguous(url: str) -> None:
    """Refuse an authority that URL parsers read differently.

    The authority is taken at its widest (up to the first `/`, `?` or `#`), so a
    backslash that urllib3 ends the host at, and `urllib.parse` does not, is seen.
    The URL itself is never quoted: its userinfo or path may hold a secret.
    """
    if not _SCHEME.match(url):
        raise RefusedHost(f"a URL must start with http:// or https://, not {url[:10]!r}")
    authority = re.split(r"[/?#]", url[url.index("//") + 2 :], maxsplit=1)[0]
    for char in authority:
        if char == "\\":
            raise RefusedHost("the URL's host part holds a backslash (\\), which URL parsers read differently "
                              "(one takes the text before it as the host, another the text after); "
                              "write the host plainly: https://host/path")  # fmt: skip
        if char == "@":
            raise RefusedHost("the URL holds a user name or password before its host (user@host, or a bare @): "
                              "it is how one host is passed off as another, and it would be sent as a password "
                              "in the clear; send credentials in a header (Authorization) and write the host "
                              "plainly: https://host/path")  # fmt: skip
        if char == "%":
            raise RefusedHost("the URL's host part is percent-encoded (%); write the host plainly: https://host/path")
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            raise RefusedHost(f"the URL's host part holds a space or control character (U+{ord(char):04X}); "
                              "write the host without it")  # fmt: skip


@dataclass(frozen=True)
class OutboundPolicy:
    allowed_hosts: frozenset[str]  # outbound.allow_hosts: names, IPs, CIDR ranges, *.wildcards
    update_hosts: frozenset[str] = frozenset()  # the applications' update URL hosts, allowed like listed names
    #: (host, port) of each application's update URL: connected to at whatever address the host resolves to.
    update_origins: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        hosts = frozenset(h.lower().strip() for h in settings.outbound.allow_hosts)
        origins = set()
        for app in settings.applications:
            try:
                target = connect_target(app.hana_update_url) if app.hana_update_url else None
            except RefusedHost:
                continue  # a call to it is refused, saying why
            if target is not None:
                origins.add((target.host, target.port))
        return cls(hosts, frozenset(host for host, _ in origins), frozenset(origins))

    @functools.cached_property
    def _listed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        networks = []
        for entry in self.allowed_hosts:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                continue  # a host name
        return tuple(networks)

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
        """The host a call to `url` connects to, when the policy lets it be called; RefusedHost otherwise."""
        host = connect_target(url).host
        if not self.host_allowed(host):
            raise RefusedHost(f"host {host!r} is not in outbound.allow_hosts; add it there to allow calls to it")
        return host

    def internal_allowed(self, ip: _Address) -> bool:
        """Only an address or range listed in allow_hosts opens an internal address."""
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(ip in network or (mapped is not None and mapped in network) for network in self._listed_networks)

    def check_connection(self, host: str, port: int, address: str) -> None:
        """The last word, on the socket connected and before anything is sent on it."""
        host = host.lower().strip("[]")
        if not self.host_allowed(host):
            raise RefusedHost(f"host {host!r} is not in outbound.allow_hosts; add it there to allow calls to it")
        if (host, port) not in self.update_origins:
            self.check_peer(host, address)

    def check_peer(self, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        why = not_global(ip)
        if why and not self.internal_allowed(ip):
            raise RefusedHost(f"{host} resolved to the internal address {ip} ({why}), which is not globally "
                              "routable; list it in outbound.allow_hosts to allow it")  # fmt: skip


#: Ranges no partner on the Internet is at (IANA's special-purpose registries), and what they are.
_NOT_GLOBAL = tuple((ipaddress.ip_network(network), what) for network, what in (
    ("0.0.0.0/8", "'this network'"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"), ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"), ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"), ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"), ("::/128", "unspecified"), ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"), ("2001::/32", "Teredo"), ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"), ("3fff::/20", "documentation"), ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"), ("fec0::/10", "site-local"), ("ff00::/8", "multicast"),
))  # fmt: skip
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def not_global(ip: _Address) -> str | None:
    """Why no partner can be at `ip` (its range, named), or None for a globally routable address.

    An IPv6 address that carries an IPv4 one reaches it (IPv4-mapped, NAT64) or
    tunnels to it (6to4, Teredo), and is refused when that one is not global.
    The table does not lean on `ipaddress.is_global` alone, which calls multicast,
    and 6to4 or NAT64 of loopback, global (older Pythons, 192.0.0.0/24 too).
    """
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if embedded is not None:
        how, inner = embedded
        why = not_global(inner)
        if why:
            return f"{how} of {inner}: {why}"
        if how in ("IPv4-mapped", "NAT64"):
            return None  # the IPv4 address itself, reached directly or through the provider's translator
    for network, what in _NOT_GLOBAL:
        if ip in network:
            return f"{what}, {network}"
    if ip.version == 6 and ip not in _GLOBAL_UNICAST:
        return f"reserved, outside the global unicast range {_GLOBAL_UNICAST}"
    return None if ip.is_global else "special-purpose"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]  # the client's address; the tunnel's far end
    return None


def literal_urls(spec: Any, kind: str) -> Iterable[str]:
    """What of an action's URL is written without templates: checked against the policy at load.

    The whole URL, or, when templates come only after its host part
    (`https://hooks.slack.com/services/{{ … }}`), that much of it: no rendering
    can change the host then, so a wrong one is a load error, not a failed delivery.
    """
    keys = {"webhook": "url", "slack": "webhook_url"}
    url = spec.get(keys[kind]) if isinstance(spec, dict) and kind in keys else None
    if not isinstance(url, str):
        return
    starts = [index for index in (url.find(mark) for mark in ("{{", "{%", "{#")) if index >= 0]
    if not starts:
        yield url
    elif head := _LITERAL_HOST.match(url[: min(starts)]):
        yield head.group(0)


_LITERAL_HOST = re.compile(r"(?i)https?://[^/?#]*[/?#]")


_URL_PATH = re.compile(r"(url: )\S+|(https?://[^/\s'\"]+)/[^\s'\"]*")


def without_url_path(exc: BaseException) -> str:
    """The error without any URL path: a Telegram path holds the bot token."""
    text = _URL_PATH.sub(lambda m: f"{m.group(1)}<path hidden>" if m.group(1) else f"{m.group(2)}/…", str(exc))
    return text if len(text) < 300 else text[:297] + "…"
