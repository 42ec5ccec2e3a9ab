"""The local spill file that keeps Hana's events while Redis is unreachable.

SQLite in WAL mode with `synchronous=FULL`: a commit is fsynced before the
receiver answers 200. Entries keep the event id given at receipt; feeding one
into Redis runs the same atomic accept script, which does nothing when that
event is already stored, so an entry fed twice (two drainers, or a crash
between Redis and the delete) is stored exactly once.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from engine.runtime.events import ReceivedEvent

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL, type TEXT NOT NULL, received_at TEXT NOT NULL, received_us INTEGER NOT NULL,
    body BLOB NOT NULL, application_id TEXT, entity_id TEXT, fingerprint TEXT, reason TEXT
)
"""


class Journal:
    """Append-only, fsynced, shared by every web process on one machine."""

    #: How long this process trusts what it last saw of the marker that other processes' entries
    #: leave. Looking on every request cost a system call (~12 µs, and a hand-off of the GIL) on
    #: the receiver's hot path; this process's own appends and drains are seen at once.
    RECHECK_SECONDS = 0.05

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "journal.sqlite3"
        self.marker = Path(directory) / "journal.pending"
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._appended = False  # entries of this process wait (set and cleared under the lock)
        self._marker_seen = False  # what the marker said at the last look
        self._recheck_at = 0.0  # monotonic time after which the marker is looked at again

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute(_SCHEMA)
            self._connection = connection
        return self._connection

    def has_pending(self) -> bool:
        """Whether entries wait, so that new events queue behind them instead of overtaking them.

        Another process's first entry is seen within RECHECK_SECONDS. Around the edge of an
        outage, arrival order across processes was best effort anyway: a request already past
        this check lands in Redis whatever another process writes meanwhile.
        """
        now = time.monotonic()
        if now >= self._recheck_at:
            self._marker_seen = self.marker.exists()
            self._recheck_at = now + self.RECHECK_SECONDS
        return self._appended or self._marker_seen

    def append(self, event: ReceivedEvent) -> None:
        with self._lock:
            connection = self._connect()
            connection.execute(
                "INSERT INTO entries (id, type, received_at, received_us, body, application_id, entity_id,"
                " fingerprint, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.id, event.type, event.received_at, event.received_us, event.body,
                    event.application_id, event.entity_id, event.fingerprint, event.quarantine_reason,
                ),
            )  # fmt: skip
            self.marker.touch()
            self._appended = True

    def depth(self) -> int:
        if not self.path.exists():
            return 0
        with self._lock:
            return int(self._connect().execute("SELECT count(*) FROM entries").fetchone()[0])

    def drain(self, feed: Callable[[ReceivedEvent], object], *, batch: int = 200) -> int:
        """Feed entries in arrival order; stops at the first failure (Redis still away)."""
        if not self.path.exists():
            return 0
        fed = 0
        with self._lock:
            connection = self._connect()
            while True:
                rows = connection.execute(
                    "SELECT seq, id, type, received_at, received_us, body, application_id, entity_id,"
                    " fingerprint, reason FROM entries ORDER BY seq LIMIT ?",
                    (batch,),
                ).fetchall()
                if not rows:
                    break
                for seq, *fields in rows:
                    event = ReceivedEvent(
                        id=fields[0], type=fields[1], received_at=fields[2], received_us=fields[3],
                        body=bytes(fields[4]), application_id=fields[5], entity_id=fields[6],
                        fingerprint=fields[7], quarantine_reason=fields[8],
                    )  # fmt: skip
                    feed(event)
                    connection.execute("DELETE FROM entries WHERE seq = ?", (seq,))
                    fed += 1
            self.marker.unlink(missing_ok=True)
            # An append from another process may have landed between the last SELECT and the unlink.
            remaining = connection.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is not None
            if remaining:
                self.marker.touch()
            self._appended = self._marker_seen = remaining
        return fed

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class JournalDrainer(threading.Thread):
    """Feeds the journal into Redis whenever entries wait; one per web process."""

    def __init__(self, journal: Journal, feed: Callable[[ReceivedEvent], object], *, interval: float = 0.5):
        super().__init__(name="journal-drainer", daemon=True)
        self.journal = journal
        self.feed = feed
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            if not self.journal.has_pending():
                continue
            try:
                fed = self.journal.drain(self.feed)
                if fed:
                    log.info("journal: fed %d event(s) into Redis", fed)
            except Exception as exc:  # noqa: BLE001 - Redis still away: try again next tick
                log.debug("journal: Redis not back yet (%s)", exc)

    def stop(self) -> None:
        self.stopping.set()
