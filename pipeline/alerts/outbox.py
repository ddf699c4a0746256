"""Durable FIFO of MQTT messages waiting to be delivered (SQLite).

Every alert is written here *before* any attempt to send it, and deleted only after the broker has
acknowledged it. A worker that crashes, is restarted or cannot reach the broker therefore loses
nothing; delivery resumes in the original order.

Durability settings: the database runs in WAL mode with ``synchronous=FULL``. In WAL mode
``NORMAL`` is safe against application crashes but may lose the last committed transactions on a
power cut or OS crash, because the WAL is only fsynced at checkpoints. Alerts are rare (a few per
minute at most) and losing an ``opened`` fire alert is the one thing the outbox exists to prevent,
so the extra fsync per commit is worth it.

The outbox also holds each worker's alert sequence counter (table ``sequences``): :meth:`Outbox.put_sequenced`
takes the next number and queues the message in one transaction, so numbers survive restarts, are never
reused and never skipped by a crash (the ticket service counts a jump as lost alerts).

It keeps a bounded archive of the sequenced messages too (table ``archive``: the last ``archive_max`` per
worker, none older than ``archive_seconds``), written in the same transaction: when the ticket service
misses numbers (a broker that dropped them) it asks for them by ``seq``, and :meth:`Outbox.requeue_archived`
queues the very same bytes again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""
_ARCHIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS archive (
    worker_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (worker_id, seq)
) WITHOUT ROWID
"""
DEFAULT_ARCHIVE_MAX = 10_000
"""Sequenced messages kept per worker for resend requests."""
DEFAULT_ARCHIVE_SECONDS = 24 * 3600.0
"""Oldest archived message kept, seconds."""
_SEQUENCES_SCHEMA = """
CREATE TABLE IF NOT EXISTS sequences (
    worker_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One queued message.

    Attributes:
        id: increasing row id (FIFO order).
        topic: MQTT topic.
        payload: message bytes.
        qos: 0, 1 or 2.
        retain: retain flag.
        created_at: Unix seconds when queued.
        attempts: how many times a publisher has handed it to a client.
    """

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class Requeued:
    """What :meth:`Outbox.requeue_archived` did.

    Attributes:
        seqs: the numbers queued again, ascending.
        missing: numbers asked for that the archive no longer (or never) had.
    """

    seqs: tuple[int, ...]
    missing: int


class Outbox:
    """SQLite-backed FIFO, safe to share between threads, durable across restarts.

    Args:
        path: database file (parent folders are created); ``":memory:"`` for tests.
        archive_max: sequenced messages archived per worker (0: no archive).
        archive_seconds: archived messages older than this are pruned.

    Example:
        >>> ob = Outbox(":memory:")
        >>> ob.put("gw/alerts/x", b"{}")
        1
        >>> [(i.id, i.topic) for i in ob.peek(10)], len(ob)
        ([(1, 'gw/alerts/x')], 1)
        >>> ob.ack(1), len(ob)
        (True, 0)
        >>> ob.close()
    """

    def __init__(self, path: str | Path, archive_max: int = DEFAULT_ARCHIVE_MAX,
                 archive_seconds: float = DEFAULT_ARCHIVE_SECONDS) -> None:
        if archive_max < 0 or archive_seconds <= 0:
            raise ValueError("archive_max must be >= 0 and archive_seconds > 0")
        self.path = str(path)
        self.archive_max = archive_max
        self.archive_seconds = archive_seconds
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._db.execute(_SEQUENCES_SCHEMA)
        self._db.execute(_ARCHIVE_SCHEMA)

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Append a message; returns its id once it is committed to disk."""
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?)",
                (topic, sqlite3.Binary(bytes(payload)), qos, int(retain), time.time()))
            return int(cur.lastrowid or 0)

    def put_sequenced(self, worker_id: str, topic: str, payload_for: Callable[[int], bytes], qos: int = 1,
                      retain: bool = False) -> tuple[int, int]:
        """Take ``worker_id``'s next sequence number and queue ``payload_for(seq)``, atomically.

        Args:
            worker_id: scope of the sequence.
            topic: MQTT topic.
            payload_for: builds the payload carrying the number.
            qos: 0, 1 or 2.
            retain: retain flag.

        Returns:
            ``(outbox id, seq)``; seq is 1 for a worker's first message.
        """
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "INSERT INTO sequences (worker_id, last_seq) VALUES (?, 1) ON CONFLICT(worker_id)"
                    " DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq", (worker_id,)).fetchone()
                seq = int(row[0])
                payload = bytes(payload_for(seq))
                now = time.time()
                cur = self._db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?)",
                    (topic, sqlite3.Binary(payload), qos, int(retain), now))
                item_id = int(cur.lastrowid or 0)
                if self.archive_max:
                    self._archive(worker_id, seq, topic, payload, qos, now)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return item_id, seq

    def _archive(self, worker_id: str, seq: int, topic: str, payload: bytes, qos: int, now: float) -> None:
        """Keep the message for resend requests and prune the archive (inside put_sequenced's transaction)."""
        self._db.execute("INSERT OR REPLACE INTO archive (worker_id, seq, topic, payload, qos, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (worker_id, seq, topic, sqlite3.Binary(payload), qos, now))
        # By the primary key: a range delete of what just fell out of the window (cheap per message).
        self._db.execute("DELETE FROM archive WHERE worker_id = ? AND seq <= ?", (worker_id, seq - self.archive_max))
        self._db.execute("DELETE FROM archive WHERE worker_id = ? AND created_at < ?",
                         (worker_id, now - self.archive_seconds))

    def archive_bounds(self, worker_id: str) -> tuple[int, int] | None:
        """Lowest and highest archived ``seq`` of ``worker_id`` (None when nothing is archived)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(seq), MAX(seq) FROM archive WHERE worker_id = ?",
                                   (worker_id,)).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def requeue_archived(self, worker_id: str, ranges: list[tuple[int, int]], limit: int) -> Requeued:
        """Queue the archived messages of ``ranges`` (``(first, last)``, both included) again, in ``seq``
        order, in one transaction: the same topic, payload and QoS as the first time.

        Args:
            worker_id: whose archive.
            ranges: sequence ranges; overlapping numbers are queued once.
            limit: most messages queued (the rest counts as neither queued nor missing).

        Returns:
            The numbers queued and how many asked for were not in the archive.
        """
        wanted: set[int] = set()
        for first, last in ranges:
            if first > last:
                continue
            wanted.update(range(first, min(last, first + limit - 1) + 1))
            if len(wanted) >= limit:
                break
        asked = sorted(wanted)[:limit]
        if not asked:
            return Requeued((), 0)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT seq, topic, payload, qos FROM archive WHERE worker_id = ? AND seq BETWEEN ? AND ?"
                    " ORDER BY seq", (worker_id, asked[0], asked[-1])).fetchall()
                keep = set(asked)
                found = [r for r in rows if int(r[0]) in keep]
                now = time.time()
                self._db.executemany(
                    "INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES (?, ?, ?, 0, ?)",
                    [(str(r[1]), r[2], int(r[3]), now) for r in found])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return Requeued(tuple(int(r[0]) for r in found), len(asked) - len(found))

    def last_seq(self, worker_id: str) -> int:
        """The last sequence number taken for ``worker_id`` (0 when none yet)."""
        with self._lock:
            row = self._db.execute("SELECT last_seq FROM sequences WHERE worker_id = ?", (worker_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def peek(self, n: int = 1) -> list[OutboxItem]:
        """The ``n`` oldest messages, oldest first, without removing them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created_at, attempts FROM outbox"
                " ORDER BY id LIMIT ?",
                (max(0, n),)).fetchall()
        return [OutboxItem(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), bool(r[4]), float(r[5]), int(r[6]))
                for r in rows]

    def ack(self, item_id: int) -> bool:
        """Delete a delivered message; False if it was not there."""
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))
            return cur.rowcount > 0

    def mark_attempt(self, item_id: int) -> None:
        """Count one more delivery attempt of a message."""
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (item_id,))

    def oldest_age(self) -> float | None:
        """Seconds since the oldest pending message was queued, or None when empty."""
        with self._lock:
            row = self._db.execute("SELECT MIN(created_at) FROM outbox").fetchone()
        return None if row is None or row[0] is None else max(0.0, time.time() - float(row[0]))

    def __len__(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock, contextlib.suppress(sqlite3.ProgrammingError):
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
