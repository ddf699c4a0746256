"""Deadlines, overdue cases escalating up the grid (cell -> community -> district -> town), automatic
dispatch, and the case loop's lock - on SQLite and PostgreSQL, with real Unix times and a real Mosquitto
carrying the notifications."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import SiteConfig
from pipeline.config_casework import CaseworkConfig
from pipeline.contract.casework import NotificationV1
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.deadlines import CaseContext
from pipeline.tickets.escalation import PG_LOCK_KEY, run_pass
from pipeline.tickets.models import Notification, Ticket, TicketEvent
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert, transition

from .casework_support import T0, MqttPublish, Subscriber, add_patrol, context, utc
from .conftest import make_alert, make_site

MIN = 60.0
CASEWORK = {"escalate_every_minutes": 30, "lock_lease_seconds": 120,
            "hazards": {"parking": {"verify_minutes": 10, "dispatch_minutes": 20, "resolve_minutes": 60,
                                    "by_severity": {"5": {"resolve_minutes": 15}}}}}


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> SiteConfig:
    base = make_site(tmp_path, db_url)
    return base.model_copy(update={"casework": CaseworkConfig.model_validate(CASEWORK)})


@pytest.fixture
def sessions(site: SiteConfig) -> Iterator[sessionmaker[Session]]:
    engine = init_db(site.database_url())
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def ctx(site: SiteConfig) -> CaseContext:
    return context(site)


def _open(sessions: sessionmaker[Session], ctx: CaseContext, ts: float, **kw: Any) -> int:
    alert = AlertIn.model_validate(make_alert(ts=ts, **kw).model_dump(mode="json"))
    return apply_alert(sessions, alert, ctx=ctx).ticket_id


def _ticket(sessions: sessionmaker[Session], tid: int) -> Ticket:
    with sessions() as s:
        t = s.get(Ticket, tid)
        assert t is not None
        return t


def _events(sessions: sessionmaker[Session], tid: int, *kinds: str) -> list[TicketEvent]:
    with sessions() as s:
        return list(s.scalars(select(TicketEvent).where(TicketEvent.ticket_id == tid, TicketEvent.kind.in_(kinds))
                              .order_by(TicketEvent.id)))


def test_a_new_ticket_gets_the_verify_deadline_of_its_hazard(sessions: sessionmaker[Session],
                                                             ctx: CaseContext) -> None:
    t = _ticket(sessions, _open(sessions, ctx, T0))
    assert (t.due_stage, t.due_at, t.overdue) == ("verify", utc(T0 + 10 * MIN), False)
    with sessions() as s:
        [n] = s.scalars(select(Notification).where(Notification.ticket_id == t.id)).all()
    assert (n.kind, n.topic, n.published_at) == ("created", "gwtest/notify/T1/D1/C1/G1", None)


def test_each_step_starts_its_own_deadline(sessions: sessionmaker[Session], ctx: CaseContext) -> None:
    add_patrol(sessions, "li", ["T1/D1/C1/G1"])
    tid = _open(sessions, ctx, T0)
    with sessions() as s, s.begin():
        transition(s, tid, "verified", actor="boss", ctx=ctx, now=utc(T0 + 5 * MIN))
    t = _ticket(sessions, tid)
    assert (t.due_stage, t.due_at, t.verified_at) == ("dispatch", utc(T0 + 25 * MIN), utc(T0 + 5 * MIN))
    with sessions() as s, s.begin():
        transition(s, tid, "dispatched", actor="boss", ctx=ctx, now=utc(T0 + 6 * MIN))
        transition(s, tid, "in_progress", actor="li", ctx=ctx, now=utc(T0 + 50 * MIN))
    t = _ticket(sessions, tid)  # starting work keeps the resolve deadline of the dispatch
    assert (t.due_stage, t.due_at, t.assignee) == ("resolve", utc(T0 + 66 * MIN), "li")
    severe = _ticket(sessions, _open(sessions, ctx, T0, severity=5))
    with sessions() as s, s.begin():
        transition(s, severe.id, "dispatched", actor="boss", ctx=ctx, now=utc(T0 + MIN))
    assert _ticket(sessions, severe.id).due_at == utc(T0 + 16 * MIN)  # severity 5: 15 min to resolve


def test_overdue_escalates_up_the_grid_one_level_per_interval(sessions: sessionmaker[Session], ctx: CaseContext,
                                                              broker: Any) -> None:
    tid = _open(sessions, ctx, T0)
    due = T0 + 10 * MIN
    watcher = Subscriber(broker.host, broker.port, "gwtest/notify/#")
    publish = MqttPublish(broker.host, broker.port)
    try:
        assert run_pass(sessions, ctx, publish, due - 1).overdue == 0
        first = run_pass(sessions, ctx, publish, due)
        assert (first.ran, first.overdue, first.escalated) == (True, 1, 0)
        assert run_pass(sessions, ctx, publish, due + 30 * MIN - 1).escalated == 0
        assert run_pass(sessions, ctx, publish, due + 30 * MIN).escalated == 1
        t = _ticket(sessions, tid)
        assert (t.overdue, t.escalation_level, t.escalated_at) == (True, 1, utc(due + 30 * MIN))
        # The service was down for two hours: both missing steps, each at the time it became due.
        late = run_pass(sessions, ctx, publish, due + 150 * MIN)
        assert late.escalated == 2
        assert run_pass(sessions, ctx, publish, due + 500 * MIN).escalated == 0  # the town is the top
        steps = _events(sessions, tid, "overdue", "escalated")
        assert [(e.kind, e.payload["level_name"], e.ts) for e in steps] == [  # type: ignore[index]
            ("overdue", "cell", utc(due)), ("escalated", "community", utc(due + 30 * MIN)),
            ("escalated", "district", utc(due + 60 * MIN)), ("escalated", "town", utc(due + 90 * MIN))]
        want = ["gwtest/notify/T1/D1/C1/G1", "gwtest/notify/T1/D1/C1/G1", "gwtest/notify/T1/D1/C1",
                "gwtest/notify/T1/D1", "gwtest/notify/T1"]
        got = _wait_for_n(watcher, len(want))
        assert [topic for topic, _ in got] == want
        messages = [NotificationV1.model_validate(body) for _, body in got]
        assert [m.kind for m in messages] == ["created", "overdue", "escalated", "escalated", "escalated"]
        assert [m.escalation_level for m in messages[1:]] == [0, 1, 2, 3]
        assert all(m.stage == "verify" and m.deadline == utc(due) for m in messages[1:])
        with sessions() as s:
            assert all(n.published_at is not None for n in s.scalars(select(Notification)))
    finally:
        watcher.close()
        publish.close()


def _wait_for_n(sub: Subscriber, n: int) -> list[tuple[str, dict[str, Any]]]:
    from .conftest import wait_for

    wait_for(lambda: len(sub.received()) >= n)
    return sub.received()


def test_meeting_the_deadline_by_moving_on_starts_afresh(sessions: sessionmaker[Session], ctx: CaseContext) -> None:
    tid = _open(sessions, ctx, T0)
    run_pass(sessions, ctx, None, T0 + 45 * MIN)  # verify deadline passed 35 min ago: overdue + community
    assert _ticket(sessions, tid).escalation_level == 1
    with sessions() as s, s.begin():
        transition(s, tid, "verified", actor="boss", ctx=ctx, now=utc(T0 + 46 * MIN))
    t = _ticket(sessions, tid)
    assert (t.overdue, t.escalation_level, t.due_stage, t.due_at) == (False, 0, "dispatch", utc(T0 + 66 * MIN))
    assert run_pass(sessions, ctx, None, T0 + 66 * MIN).overdue == 1  # the dispatch deadline, at the cell again
    assert [e.payload["stage"] for e in _events(sessions, tid, "overdue")] == ["verify", "dispatch"]  # type: ignore[index]


def test_a_broker_outage_loses_no_notification(sessions: sessionmaker[Session], ctx: CaseContext) -> None:
    _open(sessions, ctx, T0)
    down = run_pass(sessions, ctx, lambda topic, payload: False, T0 + 10 * MIN)
    assert (down.overdue, down.published, down.publish_failed) == (1, 0, 2)
    sent: list[str] = []

    def broker_back(topic: str, payload: bytes) -> bool:
        sent.append(topic)
        return True

    up = run_pass(sessions, ctx, broker_back, T0 + 11 * MIN)
    assert (up.published, up.publish_failed) == (2, 0) and len(sent) == 2
    with sessions() as s:
        assert [n.attempts for n in s.scalars(select(Notification).order_by(Notification.id))] == [2, 2]


def test_fire_is_dispatched_automatically_to_the_cells_patrol(sessions: sessionmaker[Session],
                                                              ctx: CaseContext) -> None:
    nobody = _ticket(sessions, _open(sessions, ctx, T0, hazard="fire", camera="cam3"))
    assert nobody.status == "received"  # G3 has no patrol user: a dispatcher must act
    add_patrol(sessions, "li", ["T1/D1/C1/G1"])
    add_patrol(sessions, "wu", ["T1/D1/C1"])
    first = _ticket(sessions, _open(sessions, ctx, T0 + 1, hazard="fire"))
    second = _ticket(sessions, _open(sessions, ctx, T0 + 2, hazard="fire"))
    parked = _ticket(sessions, _open(sessions, ctx, T0 + 3, hazard="parking"))
    assert (first.status, first.assignee, first.dispatched_at) == ("dispatched", "li", utc(T0 + 1))
    assert second.assignee == "wu"  # the least busy patrol user covering the cell
    assert parked.status == "received"  # parking is verified by a person first
    [move] = _events(sessions, first.id, "transition")
    assert (move.actor, move.from_status, move.to_status) == ("system", "received", "dispatched")
    with sessions() as s:
        kinds = [n.kind for n in s.scalars(select(Notification).where(Notification.ticket_id == first.id)
                                           .order_by(Notification.id))]
    assert kinds == ["created", "dispatched"]


def test_one_replica_at_a_time_holds_the_case_loop(sessions: sessionmaker[Session], ctx: CaseContext,
                                                   db_url: str) -> None:
    tid = _open(sessions, ctx, T0)
    now = T0 + 10 * MIN
    if db_url.startswith("postgresql"):
        with sessions() as other, other.begin():  # another replica is inside its pass
            assert other.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
            assert run_pass(sessions, ctx, None, now, holder="b").ran is False
        assert run_pass(sessions, ctx, None, now, holder="b").ran is True
    else:
        assert run_pass(sessions, ctx, None, now, holder="a").ran is True
        assert run_pass(sessions, ctx, None, now + 1, holder="b").ran is False  # a's lease runs 120 s
        assert run_pass(sessions, ctx, None, now + 2, holder="a").ran is True  # a renews it
        assert run_pass(sessions, ctx, None, now + 122, holder="b").ran is True  # a is gone: b takes over
    assert len(_events(sessions, tid, "overdue")) == 1


def test_racing_passes_record_each_step_once(sessions: sessionmaker[Session], ctx: CaseContext) -> None:
    ids = [_open(sessions, ctx, T0 + i) for i in range(5)]
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def replica(name: str) -> None:
        barrier.wait()
        results.append(run_pass(sessions, ctx, None, T0 + 101 * MIN, holder=name))  # 90+ min late

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert sum(r.overdue for r in results) == 5 and sum(r.escalated for r in results) == 5 * 3
    for tid in ids:
        assert [e.kind for e in _events(sessions, tid, "overdue", "escalated")] == ["overdue"] + ["escalated"] * 3


def test_overdue_cases_are_visible_in_the_api(site: SiteConfig, ctx: CaseContext) -> None:
    from fastapi.testclient import TestClient

    from pipeline.tickets.api import create_app
    from tests.fixtures.auth import login

    with TestClient(create_app(site, start_consumer=False)) as client:
        login(client)
        sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
        late, fresh = _open(sessions, ctx, T0), _open(sessions, ctx, T0 + 40 * MIN)
        run_pass(sessions, ctx, None, T0 + 41 * MIN)  # late: 31 min past its deadline; fresh: not yet due
        [t] = client.get("/tickets?overdue=true").json()["items"]
        assert (t["id"], t["overdue"], t["escalation_level"], t["escalated_to"]) == (late, True, 1, ["T1", "D1", "C1"])
        assert [x["id"] for x in client.get("/tickets?overdue=false").json()["items"]] == [fresh]
        events = client.get(f"/tickets/{late}").json()["events"]
        assert [e["kind"] for e in events if e["kind"] in ("overdue", "escalated")] == ["overdue", "escalated"]


def test_published_notifications_are_kept_30_days(sessions: sessionmaker[Session], ctx: CaseContext) -> None:
    _open(sessions, ctx, T0)
    run_pass(sessions, ctx, lambda topic, payload: True, T0 + 60)  # "created" published at T0+60
    run_pass(sessions, ctx, None, T0 + 60 + 30 * 86400 - 1)
    with sessions() as s:
        assert len(s.scalars(select(Notification)).all()) == 5  # + overdue and 3 escalations, unsent: kept
    run_pass(sessions, ctx, None, T0 + 60 + 30 * 86400 + 1)
    with sessions() as s:
        assert [n.kind for n in s.scalars(select(Notification))] == ["overdue"] + ["escalated"] * 3
