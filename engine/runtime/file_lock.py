"""One machine's lock around changing the rule files and publishing them.

A save, a rollback and a reload each read the files, check them, write and
publish; two of them interleaved on one machine could publish a set that is not
what the disk holds (a reload reading the old file, publishing after a save of the
new one). `flock` serialises them across the web server's threads and processes
and the CLI; it is released by the kernel if the holder dies, so a crash never
leaves the rules locked.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import HanaRulesError

log = logging.getLogger(__name__)
RULES_LOCK = "rules.lock"


class RulesBusy(HanaRulesError):
    """Another save, rollback or reload held the rules for longer than a request may wait."""


@contextmanager
def rules_lock(data_dir: Path, *, timeout: float = 30.0) -> Iterator[None]:
    """Hold `data_dir/rules.lock`; RulesBusy after `timeout`. Without a writable data_dir, no lock (said once)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = open(data_dir / RULES_LOCK, "a")  # noqa: SIM115 - closed below, after the lock is released
    except OSError as exc:
        log.warning("rules: cannot open the lock in %s (%s); saves and reloads on this machine are not serialised",
                    data_dir, exc)  # fmt: skip
        yield
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RulesBusy(f"another save, rollback or reload has held the rules for {timeout:.0f}s; "
                                    "try again in a moment") from None  # fmt: skip
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
