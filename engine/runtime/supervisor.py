"""`hana-rules serve`: embedded Redis, the web server and the workers as one unit.

Children run in their own process groups and are told by the kernel to stop
when this process dies, so neither Ctrl-C nor a kill -9 of `serve` leaves an
orphan. SIGTERM/SIGINT stop the web server first (no new events), then the
workers (each finishes its job), then Redis (which fsyncs its append-only file).
A child that dies is started again, the embedded Redis too (on its data and
port): the receiver keeps answering Hana from its journal meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from engine.config import Settings
from engine.errors import HanaRulesError
from engine.hana import EVENT_TYPES
from engine.rules.errors import RuleSetError
from engine.rules.loader import rule_files
from engine.runtime.connection import describe, worker_client
from engine.runtime.embedded import EmbeddedRedis, _die_with_parent
from engine.runtime.file_lock import RulesBusy
from engine.runtime.history import Source
from engine.runtime.loading import RuleRegistry
from engine.runtime.ports import ensure_port_free

log = logging.getLogger(__name__)
RUNTIME_FILE = "runtime.json"


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self, env: dict[str, str]) -> None:
        # Children log to our stderr: our stdout carries only what the user must read (URLs, token).
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.command, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, preexec_fn=_die_with_parent
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Supervisor:
    def __init__(self, settings: Settings, *, host: str, port: int, workers: int, out: Callable[[str], None],
                 watch: bool = False):  # fmt: skip
        self.settings = settings
        self.watch = watch
        self.rules: RuleRegistry | None = None  # set once Redis is up
        self.reload_requested = threading.Event()  # set by SIGHUP, served by the watch loop
        self.host = host
        self.port = port
        self.workers = workers
        self.out = out
        self.redis: EmbeddedRedis | None = None
        self._redis_restarts = 0
        self._redis_wait = 0.5  # seconds before another try, after a start that failed
        self._redis_retry_at = 0.0
        self.children: list[Child] = []
        self.stopping = threading.Event()

    def _command(self, *arguments: str) -> list[str]:
        command = [sys.executable, "-m", "engine.cli", *arguments]
        if self.settings.config_file:
            command += ["--config", str(self.settings.config_file)]
        return command

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())
        # Before anything starts: another instance's /healthz must not pass for ours.
        ensure_port_free(self.host, self.port)
        try:
            target = self.settings.redis_target
            env = {**os.environ, "HANA_RULES_SUPERVISED": "1"}
            if not target:
                self.redis = EmbeddedRedis(self.settings.data_dir / "redis", fsync=self.settings.redis_fsync).start()
                target = env["REDIS_URL"] = self.redis.url
            redis_url = describe(target)
            self.rules = RuleRegistry.boot(worker_client(target), self.settings)
            self.reload("rules at start", Source.BOOT)  # the files on disk when valid; else the running set stays
            if self.settings.config_file:
                env["HANA_RULES_CONFIG"] = str(self.settings.config_file)
            web = Child("web", self._command("web", "--host", self.host, "--port", str(self.port)))
            web.start(env)
            self.children.append(web)
            for index in range(self.workers):
                worker = Child(f"worker-{index + 1}", self._command("worker"))
                worker.start(env)
                self.children.append(worker)
            url = f"http://{self.host}:{self.port}"
            self._wait_until_up(url, web)
            self._write_runtime(url, redis_url)
            self._announce(url)
            return self._watch(env)
        finally:
            self._shutdown()

    def _wait_until_up(self, url: str, web: Child, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if not web.running:
                raise HanaRulesError(f"the web server exited at start; is port {self.port} free?")
            try:
                if requests.get(f"{url}/healthz", timeout=0.5).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        if not self.stopping.is_set():
            raise HanaRulesError(f"the web server did not answer on {url} within {timeout:.0f}s")

    def _write_runtime(self, url: str, redis_url: str) -> None:
        pids = {child.name: child.process.pid for child in self.children if child.process}
        if self.redis and self.redis.process:
            pids["redis"] = self.redis.process.pid
        write_runtime(self.settings.data_dir, url=url, redis_url=redis_url, children=pids)

    def _announce(self, url: str) -> None:
        lines = ["", "hana-rules is running.", "", "Paste these URLs into Hana, one per event setting:"]
        for app in self.settings.applications:
            scope = "accepts any application id" if app.id is None else f"application {app.id}"
            lines.append(f"  {app.name} ({scope})")
            for event_type in EVENT_TYPES:
                lines.append(f"    {event_type:<20} {url}/hooks/{event_type}?token={app.webhook_token}")
        lines += [
            "",
            f"Console: {url}/console/  (log in with the admin token)",
            f"Admin token: {self.settings.admin_token}",
            f"Workers: {self.workers}; Redis: {self._redis_description()}",
            "Press Ctrl-C to stop.",
            "",
        ]
        self.out("\n".join(lines))

    def _redis_description(self) -> str:
        return f"embedded, data in {self.redis.directory}" if self.redis else "external"

    def reload(self, why: str, source: Source) -> None:
        """Publish the files on disk (a version from `source`, `why` as its message); a set with any error
        leaves the running one in place."""
        assert self.rules is not None
        try:
            rule_set = self.rules.publish_from_disk(source=source, message=why)
            self.out(f"{why}: rules version {rule_set.version} is live ({len(rule_set.rules)} rules)")
        except RuleSetError as exc:
            running = self.rules.rule_set
            stays = (f"version {running.version} ({len(running.rules)} rules) keeps running" if running.rules
                     else "NO rules run (events are received and kept) until the files are fixed")  # fmt: skip
            self.out(f"{why}: the files in {self.settings.rules_dir} were NOT published; {stays}:\n{exc}")
        except RulesBusy as exc:  # a save or rollback held the rules too long: the next change tries again
            self.out(f"{why}: the files were NOT published: {exc}")

    def _watch(self, env: dict[str, str]) -> int:
        watched = _snapshot(self.settings.rules_dir) if self.watch else None
        changed_at: float | None = None
        while not self.stopping.wait(0.5):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload("SIGHUP", Source.SIGNAL)
            if watched is not None:
                now = _snapshot(self.settings.rules_dir)
                if now != watched:
                    watched, changed_at = now, time.monotonic()
                elif (
                    changed_at is not None and time.monotonic() - changed_at >= 1.0
                ):  # debounced: editors save in bursts
                    changed_at = None
                    self.reload("rules changed on disk", Source.FILE_WATCH)
            for child in self.children:
                if child.running:
                    continue
                code = child.process.returncode if child.process else None
                if child.name == "web":
                    log.error("the web server exited (code %s); stopping", code)
                    return 1
                child.restarts += 1
                log.warning("%s exited (code %s); restarting it (restart %d)", child.name, code, child.restarts)
                time.sleep(min(child.restarts, 5))
                child.start(env)
            self._keep_redis_up()
        return 0

    def _keep_redis_up(self) -> None:
        """Restart the embedded Redis on its data and port, with a growing pause, like any child.

        Meanwhile the receiver answers Hana from its journal, and workers restart their loop;
        the journal is fed once Redis is back.
        """
        redis_server = self.redis
        if redis_server is None or redis_server.running or time.monotonic() < self._redis_retry_at:
            return
        self._redis_restarts += 1
        log.error("the embedded Redis exited (code %s); restarting it on the same data (restart %d)",
                  redis_server.exit_code, self._redis_restarts)  # fmt: skip
        try:
            redis_server.start()
        except HanaRulesError as exc:
            self._redis_wait = min(self._redis_wait * 2, 30.0)
            self._redis_retry_at = time.monotonic() + self._redis_wait
            log.error("the embedded Redis did not start (%s); next try in %.0fs", exc, self._redis_wait)
            return
        self._redis_wait = 0.5
        log.warning("the embedded Redis is back on %s (restart %d); events journaled meanwhile are fed in",
                    redis_server.url, self._redis_restarts)  # fmt: skip
        self._write_runtime(f"http://{self.host}:{self.port}", redis_server.url)

    def _shutdown(self) -> None:
        web = [c for c in self.children if c.name == "web"]
        workers = [c for c in self.children if c.name != "web"]
        for group in (web, workers):
            for child in group:
                child.terminate()
            for child in group:
                child.wait(15.0)
        if self.redis:
            self.redis.stop()
        remove_runtime(self.settings.data_dir)


def _snapshot(rules_dir: Path) -> dict[str, tuple[float, int]]:
    snapshot = {}
    for path in rule_files(rules_dir):
        try:
            stat = path.stat()
        except OSError:
            continue
        snapshot[str(path)] = (stat.st_mtime, stat.st_size)
    return snapshot


def write_runtime(data_dir: Path, *, url: str, redis_url: str | None, children: dict[str, int] | None = None) -> None:
    """Where CLI commands and tests find the running server; holds no token."""
    path = data_dir / RUNTIME_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "redis_url": redis_url, "pid": os.getpid(), "children": children or {}}))


def remove_runtime(data_dir: Path) -> None:
    """On a clean stop: CLI commands then say nothing runs instead of calling a dead address."""
    (data_dir / RUNTIME_FILE).unlink(missing_ok=True)


def read_runtime(data_dir: Path) -> dict[str, object] | None:
    try:
        return json.loads((data_dir / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None
