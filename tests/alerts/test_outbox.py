"""SQLite outbox: FIFO order, ack, persistence across reopen, thread safety."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.alerts.outbox import Outbox


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "outbox.db"


def test_fifo_and_ack(db: Path) -> None:
    with Outbox(db) as ob:
        ids = [ob.put(f"t/{i}", f"p{i}".encode(), qos=i % 2, retain=i == 2) for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert len(ob) == 5
        items = ob.peek(3)
        assert [i.topic for i in items] == ["t/0", "t/1", "t/2"]
        assert [i.payload for i in items] == [b"p0", b"p1", b"p2"]
        assert [i.qos for i in items] == [0, 1, 0]
        assert [i.retain for i in items] == [False, False, True]
        assert ob.peek(1) == items[:1], "peek must not remove"
        assert ob.ack(ids[0]) is True
        assert ob.ack(ids[0]) is False
        assert [i.topic for i in ob.peek(10)] == ["t/1", "t/2", "t/3", "t/4"]
        # acking out of order keeps the rest in order
        ob.ack(ids[2])
        assert [i.topic for i in ob.peek(10)] == ["t/1", "t/3", "t/4"]
        assert len(ob) == 3


def test_attempts_and_age(db: Path) -> None:
    with Outbox(db) as ob:
        assert ob.oldest_age() is None
        i = ob.put("t", b"x")
        ob.mark_attempt(i)
        ob.mark_attempt(i)
        assert ob.peek(1)[0].attempts == 2
        age = ob.oldest_age()
        assert age is not None and 0 <= age < 60


def test_survives_reopen(db: Path) -> None:
    ob = Outbox(db)
    for i in range(4):
        ob.put(f"t/{i}", bytes([i]) * 1000)
    ob.ack(ob.peek(1)[0].id)
    ob.close()
    ob2 = Outbox(db)
    try:
        assert len(ob2) == 3
        assert [i.topic for i in ob2.peek(10)] == ["t/1", "t/2", "t/3"]
        assert ob2.peek(1)[0].payload == bytes([1]) * 1000
        new = ob2.put("t/4", b"")
        assert new > ob2.peek(3)[-1].id
    finally:
        ob2.close()


def test_uses_wal_and_full_sync(db: Path) -> None:
    with Outbox(db) as ob:
        assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_rejects_bad_qos(db: Path) -> None:
    with Outbox(db) as ob, pytest.raises(ValueError):
        ob.put("t", b"x", qos=3)


def test_thread_safe(db: Path) -> None:
    with Outbox(db) as ob:
        def work(k: int) -> None:
            for i in range(25):
                ob.put(f"t/{k}/{i}", b"x")
                len(ob)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        items = ob.peek(1000)
        assert len(items) == 100
        for k in range(4):  # each producer's messages stay in its own order
            mine = [int(i.topic.split("/")[2]) for i in items if i.topic.startswith(f"t/{k}/")]
            assert mine == list(range(25))
