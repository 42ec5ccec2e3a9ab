"""The local spill file that keeps Hana's events while Redis is unreachable.

SQLite in WAL mode with `synchronous=FULL`: a commit is fsynced before the
receiver answers 200. Entries keep the event id given at receipt; feeding one
into Redis runs the same atomic accept script, which does nothing when that
event is already stored, so an entry fed twice (a crash before the drainer
recorded its progress) is stored exactly once.

Two markers say what new events must do, in every web process of the machine:
- `journal.outage`: Redis failed a request and nothing has been fed since:
  every new event goes to the journal, behind the others.
- `journal.draining`: Redis is back and the drainer feeds the backlog: only an
  event of a lead/opportunity that still has entries waiting goes to the
  journal (order is kept per entity); the others go to Redis at once.
Each process looks at them at most every RECHECK_SECONDS (a system call per
request cost ~12 µs on the hot path).

Appending never waits for a drain. They use separate SQLite connections (WAL
lets a reader and a writer work at once); a drain writes nothing to the
journal while it feeds: it reads a batch, feeds it to Redis in one round trip,
and records how far it got in a small file of its own (`journal.fed`). The fed
entries are deleted in one transaction once the backlog is fed. (Deleting each
batch as it went made appends wait on SQLite's write lock, whose busy handler
sleeps 1, 2, 5, 10… ms: 180 ms at p99 while 10,000 entries drained.) Writers of
every process queue on a file lock instead, which the kernel hands over at
once; appends never checkpoint the WAL, the drainer does, passively. One
drainer per machine feeds at a time; the others skip their turn.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
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
);
CREATE INDEX IF NOT EXISTS entries_by_entity ON entries (entity_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "id, type, received_at, received_us, body, application_id, entity_id, fingerprint, reason"


class Journal:
    """Append-only, fsynced, shared by every web process on one machine."""

    RECHECK_SECONDS = 0.05

    def __init__(self, directory: Path) -> None:
        directory = Path(directory)
        self.path = directory / "journal.sqlite3"
        self.outage_marker = directory / "journal.outage"
        self.draining_marker = directory / "journal.draining"
        self.fed_path = directory / "journal.fed"
        self._drain_lock_path = directory / "journal.drain.lock"
        self._write_lock_path = directory / "journal.write.lock"
        self._append_lock = threading.Lock()  # the appending connection: one request thread at a time
        self._drain_lock = threading.Lock()  # the draining connection: one drainer thread at a time
        self._read_lock = threading.Lock()  # the reading connection: counts, per-entity looks
        self._appender: sqlite3.Connection | None = None
        self._drainer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._outage = self._draining = False  # what the markers said at the last look
        self._id: str | None = None  # this journal's identity (its meta table), read once
        self._recheck_at = 0.0  # monotonic time after which the markers are looked at again

    # where new events go ------------------------------------------------------------------------
    def _look(self) -> None:
        now = time.monotonic()
        if now >= self._recheck_at:
            self._outage, self._draining = self.outage_marker.exists(), self.draining_marker.exists()
            self._recheck_at = now + self.RECHECK_SECONDS

    def has_pending(self) -> bool:
        """Whether entries an outage left may still wait to be fed."""
        self._look()
        return self._outage or self._draining

    def queues_behind(self, event: ReceivedEvent) -> bool:
        """Whether `event` must go to the journal, behind entries that would otherwise come after it."""
        self._look()
        if self._outage:
            return True
        return self._draining and self._holds_entity_of(event)

    def _holds_entity_of(self, event: ReceivedEvent) -> bool:
        kind = event.type.split(".", 1)[0]
        with self._read_lock:
            return self._reading().execute(
                "SELECT 1 FROM entries WHERE seq > ? AND entity_id IS ? AND application_id IS ?"
                " AND type >= ? AND type < ? LIMIT 1",
                (self._fed(self._reading()), event.entity_id, event.application_id, f"{kind}.", f"{kind}/"),
            ).fetchone() is not None  # fmt: skip

    # writing ---------------------------------------------------------------------------------------
    def append(self, event: ReceivedEvent, *, outage: bool = True) -> None:
        """Keep `event`, fsynced. `outage`: Redis failed it (rather than: it queues behind entries of
        its entity), so every new event queues behind it until the drainer has fed it."""
        with self._append_lock, _exclusive(self._write_lock_path, wait=True):
            if self._appender is None:
                self._appender = self._connect(checkpoints=False)
            self._appender.execute(
                f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constants
                (
                    event.id, event.type, event.received_at, event.received_us, event.body,
                    event.application_id, event.entity_id, event.fingerprint, event.quarantine_reason,
                ),
            )  # fmt: skip
        if outage:
            self.outage_marker.touch()
            self._outage = True
        elif not self.draining_marker.exists():
            self.draining_marker.touch()  # it queued behind a drain that has just ended: still feed it

    def depth(self) -> int:
        """Entries waiting: for /readyz and /metrics."""
        if not self.path.exists():
            return 0
        with self._read_lock:
            reader = self._reading()
            return int(reader.execute("SELECT count(*) FROM entries WHERE seq > ?", (self._fed(reader),)).fetchone()[0])

    # draining ----------------------------------------------------------------------------------------
    #: Entries per round trip, and the pause after each batch: the drainer shares its process's
    #: GIL with the request threads, and a long stretch of packing commands made Hana's answers
    #: wait (p99 ×2.7 at 16 connections while 10,000 entries drained in batches of 200).
    BATCH = 50
    PAUSE_SECONDS = 0.002

    def drain(self, feed: Callable[[list[ReceivedEvent]], object], *, batch: int = BATCH) -> int:
        """Feed entries in arrival order, a batch per call of `feed`; stops at the first failure (Redis away).

        The first batch fed proves Redis is back: the outage marker gives way to the draining
        one, so events of other entities go to Redis again. Once caught up, the draining
        marker goes too; what processes appended before they saw it go is fed after that;
        then the fed entries are deleted. Another process draining right now: this one skips.
        """
        if not self.path.exists():
            return 0
        with self._drain_lock, _exclusive(self._drain_lock_path) as ours:
            if not ours:
                return 0
            connection = self._draining_connection()
            fed = self._feed_all(connection, feed, batch)
            if self.draining_marker.exists():
                fed += self._feed_all(connection, feed, batch)  # what queued meanwhile
                self.draining_marker.unlink(missing_ok=True)
                self._outage = self._draining = False
                time.sleep(2 * self.RECHECK_SECONDS)  # every process has looked again by now
                fed += self._feed_all(connection, feed, batch)
            last = self._fed(connection)
            if last and connection.execute("SELECT 1 FROM entries WHERE seq <= ? LIMIT 1", (last,)).fetchone():
                with _exclusive(self._write_lock_path, wait=True):  # one short write, between two appends
                    connection.execute("DELETE FROM entries WHERE seq <= ?", (last,))
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return fed

    def _feed_all(self, connection: sqlite3.Connection, feed: Callable[[list[ReceivedEvent]], object],
                  batch: int) -> int:  # fmt: skip
        fed, last = 0, self._fed(connection)
        while rows := connection.execute(
            f"SELECT seq, {_COLUMNS} FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 - constants
            (last, batch),
        ).fetchall():
            feed([_entry(fields) for _, *fields in rows])  # raises when Redis is away: fed again next time
            last, fed = rows[-1][0], fed + len(rows)
            self._set_fed(last, connection)
            time.sleep(self.PAUSE_SECONDS)  # let the request threads of this process have the GIL
            if self.outage_marker.exists():  # Redis is back: only the entities still waiting queue behind
                self.draining_marker.touch()
                self.outage_marker.unlink(missing_ok=True)
        return fed

    # plumbing -------------------------------------------------------------------------------------
    def _connect(self, *, checkpoints: bool = True) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        if not checkpoints:
            connection.execute("PRAGMA wal_autocheckpoint=0")  # a request never pays for a checkpoint
        connection.executescript(_SCHEMA)
        # Who this journal is, for the progress file: a new file (even one the file system gives the
        # old one's inode) is never taken for one already fed.
        connection.execute("INSERT OR IGNORE INTO meta VALUES ('id', ?)", (secrets.token_hex(8),))
        return connection

    def _reading(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._connect()
        return self._reader

    def _draining_connection(self) -> sqlite3.Connection:
        if self._drainer is None:
            self._drainer = self._connect()
        return self._drainer

    def _fed(self, connection: sqlite3.Connection) -> int:
        """The last `seq` fed into Redis; 0 when unknown, or when it belongs to another journal."""
        try:
            seq, journal = self.fed_path.read_text().split()
            return int(seq) if journal == self._identity(connection) else 0
        except (OSError, ValueError):
            return 0  # fed again from the start: the accept script ignores what Redis has already

    def _set_fed(self, seq: int, connection: sqlite3.Connection) -> None:
        temporary = self.fed_path.with_suffix(".tmp")
        temporary.write_text(f"{seq} {self._identity(connection)}")
        os.replace(temporary, self.fed_path)  # no fsync: lost after a crash, it only means feeding again

    def _identity(self, connection: sqlite3.Connection) -> str:
        if self._id is None:
            self._id = str(connection.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()[0])
        return self._id

    def close(self) -> None:
        with self._append_lock, self._drain_lock, self._read_lock:
            for connection in (self._appender, self._drainer, self._reader):
                if connection is not None:
                    connection.close()
            self._appender = self._drainer = self._reader = None


def _entry(fields: list[object]) -> ReceivedEvent:
    event_id, event_type, received_at, received_us, body, application_id, entity_id, fingerprint, reason = fields
    return ReceivedEvent(
        id=str(event_id), type=str(event_type), received_at=str(received_at), received_us=int(received_us),  # type: ignore[call-overload]
        body=bytes(body), application_id=application_id, entity_id=entity_id,  # type: ignore[arg-type]
        fingerprint=fingerprint, quarantine_reason=reason,  # type: ignore[arg-type]
    )  # fmt: skip


class _exclusive:  # noqa: N801 - used as a context manager, like open()
    """An advisory lock on a file: `with _exclusive(path) as ours` (False: someone else holds it),
    or `wait=True` to queue for it."""

    def __init__(self, path: Path, *, wait: bool = False) -> None:
        self.path = path
        self.wait = wait
        self.descriptor: int | None = None

    def __enter__(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.descriptor)
            self.descriptor = None
            return False
        return True

    def __exit__(self, *exc_info: object) -> None:
        if self.descriptor is not None:
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None


class JournalDrainer(threading.Thread):
    """Feeds the journal into Redis whenever entries wait; one per web process."""

    #: Even with no marker, look this often: an entry appended in a handover's last moment (its
    #: process had not seen the marker go yet) must not wait for the next outage.
    IDLE_LOOK_SECONDS = 10.0

    def __init__(self, journal: Journal, feed: Callable[[list[ReceivedEvent]], object], *, interval: float = 0.5):
        super().__init__(name="journal-drainer", daemon=True)
        self.journal = journal
        self.feed = feed
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        looked = -self.IDLE_LOOK_SECONDS  # at once: a process starting after an outage has a backlog to feed
        while not self.stopping.is_set():
            if not self.journal.has_pending() and time.monotonic() - looked < self.IDLE_LOOK_SECONDS:
                self.stopping.wait(self.interval)
                continue
            looked = time.monotonic()
            try:
                fed = self.journal.drain(self.feed)
                if fed:
                    log.info("journal: fed %d event(s) into Redis", fed)
            except Exception as exc:  # noqa: BLE001 - Redis still away: try again next tick
                log.debug("journal: Redis not back yet (%s)", exc)
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
