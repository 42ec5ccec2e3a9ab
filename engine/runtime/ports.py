"""The one check before listening: nobody else is on our port."""

from __future__ import annotations

import errno
import socket

from engine.errors import HanaRulesError


def ensure_port_free(host: str, port: int) -> None:
    """Fail with one clear sentence when something already listens on host:port.

    SO_REUSEPORT would also let a second hana-rules bind the same port and silently take
    half of Hana's events. A bind without that flag fails whenever anyone listens there.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT are no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise HanaRulesError(
                    f"cannot listen on {host}:{port}: another hana-rules or another program is using it; "
                    "stop it or choose another --port"
                ) from exc
            raise HanaRulesError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
