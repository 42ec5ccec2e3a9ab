"""Small helpers shared by the tests: polling with a deadline, a threaded live server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from werkzeug.serving import make_server

DATA = Path(__file__).parent / "data"
T = TypeVar("T")


def sample_bytes(name: str = "lead.created.json") -> bytes:
    return (DATA / "events" / name).read_bytes()


def sample(name: str = "lead.created.json") -> dict[str, Any]:
    return json.loads(sample_bytes(name))


def wait_for(check: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.02, what: str = "") -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve a WSGI app on a free 127.0.0.1 port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@contextmanager
def worker_processes(config: Path, redis_url: str, count: int) -> Iterator[list[Any]]:
    """`count` real `hana-rules worker` processes; stopped with SIGTERM (warm shutdown) at the end."""
    import os
    import subprocess
    import sys

    environment = {**os.environ, "REDIS_URL": redis_url}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "--config", str(config)],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(count)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def let_redis_time_pass(client: Any, seconds: float) -> None:
    """Poll until `seconds` have passed on Redis's clock (the one retention and leases use)."""

    def now() -> float:
        whole, micro = client.time()
        return whole + micro / 1e6

    start = now()
    wait_for(lambda: now() >= start + seconds, timeout=seconds + 20, what=f"{seconds}s to pass on Redis's clock")


def processes_with(text: str) -> list[int]:
    """Pids of the living processes whose command line contains `text` (a test's config path, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in command and state != "Z":
                found.append(int(entry.name))
    return found
