"""Alert -> ticket application: idempotent, out-of-order safe, and race-free across consumers."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.alerts.schema import AlertV1
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.models import Ticket, TicketEvent
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import ApplyResult, apply_alert

from .conftest import make_alert


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = init_db(db_url)
    yield e
    e.dispose()


def _in(a: AlertV1) -> AlertIn:
    return AlertIn.model_validate(a.model_dump(mode="json"))


def _counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as s:
        return (s.scalar(select(func.count()).select_from(Ticket)) or 0,
                s.scalar(select(func.count()).select_from(TicketEvent)) or 0)


def test_event_sequence(engine: Engine) -> None:
    sessions = session_factory(engine)
    inc = "cam1-z1-parking-seq"
    opened = make_alert("opened", inc, ts=1000.0, severity=2, confidence=0.5)
    updated = make_alert("updated", inc, ts=1060.0, severity=4, confidence=0.9,
                         evidence={"snapshot_url": "http://x/s.jpg", "clip_url": "http://x/c.mp4"})
    reopened = make_alert("opened", inc, ts=1100.0)  # a looped clip re-detects the same incident
    cleared = make_alert("cleared", inc, ts=1200.0)
    outcomes = [apply_alert(sessions, _in(a)).outcome for a in (opened, opened, updated, updated, reopened,
                                                                  cleared, cleared)]
    assert outcomes == ["created", "duplicate", "updated", "duplicate", "ignored", "cleared", "duplicate"]
    assert _counts(sessions) == (1, 3)
    with sessions() as s:
        t = s.scalars(select(Ticket)).one()
        assert t.status == "received"  # cleared does not close: a person verifies
        assert t.cleared_at is not None and t.cleared_at.timestamp() == 1200.0
        assert t.opened_at.timestamp() == 1000.0
        assert (t.severity, t.confidence, t.clip_url) == (4, 0.9, "http://x/c.mp4")
        assert [e.kind for e in t.events] == ["alert_opened", "alert_updated", "alert_cleared"]
        assert t.grid_path == "T1/D1/C1/G1" and t.grid_l4 == "G1"


def test_late_updated_does_not_roll_back(engine: Engine) -> None:
    sessions = session_factory(engine)
    inc = "cam1-z1-parking-late"
    apply_alert(sessions, _in(make_alert("opened", inc, ts=1000.0)))
    apply_alert(sessions, _in(make_alert("cleared", inc, ts=1300.0)))
    late = make_alert("updated", inc, ts=1100.0, evidence={"snapshot_url": None, "clip_url": "http://x/c.mp4"})
    assert apply_alert(sessions, _in(late)).outcome == "updated"
    with sessions() as s:
        t = s.scalars(select(Ticket)).one()
        assert t.last_event == "cleared" and t.updated_at.timestamp() == 1300.0
        assert t.clip_url == "http://x/c.mp4"  # evidence still filled in


def test_updated_without_opened_creates_the_ticket(engine: Engine) -> None:
    sessions = session_factory(engine)
    r = apply_alert(sessions, _in(make_alert("updated", "cam2-z1-parking-orphan", camera="cam2")))
    assert r.outcome == "created"
    assert _counts(sessions) == (1, 1)


@pytest.mark.parametrize("threads", [8])
def test_concurrent_consumers_create_one_ticket(engine: Engine, threads: int) -> None:
    """Several consumers (own engines, like API replicas) apply the same messages at once."""
    url = engine.url.render_as_string(hide_password=False)
    engines = [init_db(url) for _ in range(threads)]
    inc = "cam3-z1-clutter-race"
    msgs = [make_alert("opened", inc, camera="cam3", hazard="clutter", ts=1000.0),
            make_alert("updated", inc, camera="cam3", hazard="clutter", ts=1050.0)]
    results: list[ApplyResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def run(e: Engine) -> None:
        sessions = session_factory(e)
        try:
            barrier.wait()
            for m in msgs:
                results.append(apply_alert(sessions, _in(m)))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(e,)) for e in engines]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    for e in engines:
        e.dispose()
    assert not errors, errors
    outcomes = Counter(r.outcome for r in results)
    assert outcomes["created"] == 1 and outcomes["updated"] == 1
    assert outcomes["duplicate"] + outcomes["ignored"] == 2 * threads - 2
    assert len({r.ticket_id for r in results}) == 1
    assert _counts(session_factory(engine)) == (1, 2)
