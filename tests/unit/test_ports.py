"""The check before listening, against real sockets."""

from __future__ import annotations

import socket

import pytest

from engine.errors import HanaRulesError
from engine.runtime.embedded import free_port
from engine.runtime.ports import ensure_port_free


def listener(port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_free_port_passes_and_stays_free() -> None:
    port = free_port()
    ensure_port_free("127.0.0.1", port)
    with listener(port, reuse_port=False):
        pass  # the probe did not keep the port


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain listener", "SO_REUSEPORT listener"])
def test_a_port_someone_listens_on_is_refused_in_one_sentence(reuse_port: bool) -> None:
    """The SO_REUSEPORT case is another hana-rules: without the check, both would share the port."""
    port = free_port()
    with listener(port, reuse_port=reuse_port), pytest.raises(HanaRulesError) as refused:
        ensure_port_free("127.0.0.1", port)
    assert str(refused.value) == (
        f"cannot listen on 127.0.0.1:{port}: another hana-rules or another program is using it; "
        "stop it or choose another --port"
    )


def test_an_address_this_machine_does_not_have_is_named() -> None:
    with pytest.raises(HanaRulesError, match=r"cannot listen on 192\.0\.2\.1:\d+: Cannot assign requested address"):
        ensure_port_free("192.0.2.1", free_port())  # TEST-NET-1: never a local address
