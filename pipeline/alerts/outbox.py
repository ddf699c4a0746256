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


class Outbox:
    """SQLite-backed FIFO, safe to share between threads, durable across restarts.

    Args:
        path: database file (parent folders are created); ``":memory:"`` for tests.

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

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._db.execute(_SEQUENCES_SCHEMA)

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
                cur = self._db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?)",
                    (topic, sqlite3.Binary(bytes(payload_for(seq))), qos, int(retain), time.time()))
                item_id = int(cur.lastrowid or 0)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return item_id, seq

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
