"""Restarts must not duplicate cases: a new incident at a camera, zone and hazard whose ticket is still
active attaches to that ticket (event + alias, its later events follow) instead of opening another."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.alerts.schema import AlertV1
from pipeline.config import MqttConfig
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.models import Ticket, TicketEvent
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert, transition

from .conftest import Publisher, make_alert, topic_of, wait_for

ZONE = {"id": "z1", "kind": "no_parking", "name": "Gate"}


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    e: Engine = init_db(db_url)
    yield session_factory(e)
    e.dispose()


def _in(a: AlertV1) -> AlertIn:
    return AlertIn.model_validate(a.model_dump(mode="json"))


def _at_gate(event: str, incident: str, ts: float, **kw: Any) -> AlertIn:
    return _in(make_alert(event, incident, camera="cam1", hazard="parking", ts=ts, zone=ZONE, **kw))


def _tickets(sessions: sessionmaker[Session]) -> list[Ticket]:
    with sessions() as s:
        return list(s.scalars(select(Ticket).order_by(Ticket.id)))


def _events(sessions: sessionmaker[Session], ticket_id: int) -> list[tuple[str, str]]:
    with sessions() as s:
        return [(e.kind, e.message_key) for e in s.scalars(
            select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id))]


def test_restart_incident_attaches_and_its_events_follow(sessions: sessionmaker[Session]) -> None:
    t0 = 1_800_000_000.0
    first = apply_alert(sessions, _at_gate("opened", "cam1-z1-parking-before-restart", t0))
    assert first.outcome == "created"
    # the worker restarted and lost the incident; it re-detects the same parked car under a new id
    again = apply_alert(sessions, _at_gate("opened", "cam1-z1-parking-after-restart", t0 + 600))
    assert (again.ticket_id, again.outcome) == (first.ticket_id, "attached")
    assert apply_alert(sessions, _at_gate("opened", "cam1-z1-parking-after-restart", t0 + 600)).outcome \
        == "duplicate"  # redelivery of the attached opened
    upd = apply_alert(sessions, _at_gate("updated", "cam1-z1-parking-after-restart", t0 + 660, severity=5))
    assert (upd.ticket_id, upd.outcome) == (first.ticket_id, "updated")
    clr = apply_alert(sessions, _at_gate("cleared", "cam1-z1-parking-after-restart", t0 + 720))
    assert (clr.ticket_id, clr.outcome) == (first.ticket_id, "cleared")
    [t] = _tickets(sessions)
    assert t.incident_id == "cam1-z1-parking-before-restart" and t.severity == 5
    assert t.cleared_at is not None and t.cleared_at.timestamp() == t0 + 720
    kinds = [k for k, _ in _events(sessions, t.id)]
    assert kinds == ["alert_opened", "incident_attached", "alert_updated", "alert_cleared"]
    # cleared: the next car in the zone is a new case
    nxt = apply_alert(sessions, _at_gate("opened", "cam1-z1-parking-next-car", t0 + 900))
    assert nxt.outcome == "created" and nxt.ticket_id != first.ticket_id


def test_only_active_uncleared_tickets_at_the_same_place_absorb(sessions: sessionmaker[Session]) -> None:
    t0 = 1_800_000_000.0
    base = apply_alert(sessions, _at_gate("opened", "inc-a", t0))
    other_zone = apply_alert(sessions, _in(make_alert("opened", "inc-b", camera="cam1", hazard="parking",
                                                      ts=t0 + 1, zone={**ZONE, "id": "z2"})))
    other_hazard = apply_alert(sessions, _in(make_alert("opened", "inc-c", camera="cam1", hazard="clutter",
                                                        ts=t0 + 2, zone=ZONE)))
    other_camera = apply_alert(sessions, _in(make_alert("opened", "inc-d", camera="cam2", hazard="parking",
                                                        ts=t0 + 3, zone=ZONE)))
    assert [r.outcome for r in (base, other_zone, other_hazard, other_camera)] == ["created"] * 4
    with sessions() as s, s.begin():
        transition(s, base.ticket_id, "false_alarm", actor="op")
    after_false_alarm = apply_alert(sessions, _at_gate("opened", "inc-e", t0 + 10))
    assert after_false_alarm.outcome == "created"
    with sessions() as s, s.begin():  # verified, then judged a false alarm: a new detection is a new case
        for to in ("verified", "false_alarm"):
            transition(s, after_false_alarm.ticket_id, to, actor="op")
    assert apply_alert(sessions, _at_gate("opened", "inc-f", t0 + 20)).outcome == "created"


def test_whole_frame_hazard_without_zone(sessions: sessionmaker[Session]) -> None:
    t0 = 1_800_000_000.0
    fire = [_in(make_alert("opened", f"cam3-fire-{i}", camera="cam3", hazard="fire", ts=t0 + i, zone=None))
            for i in range(2)]
    r = [apply_alert(sessions, a) for a in fire]
    assert [x.outcome for x in r] == ["created", "attached"] and r[0].ticket_id == r[1].ticket_id


def test_first_event_of_a_new_incident_may_be_updated(sessions: sessionmaker[Session]) -> None:
    """The guard also holds when the new incident's ``opened`` was lost and an ``updated`` comes first."""
    t0 = 1_800_000_000.0
    first = apply_alert(sessions, _at_gate("opened", "inc-1", t0))
    r = apply_alert(sessions, _at_gate("updated", "inc-2", t0 + 60))
    assert (r.ticket_id, r.outcome) == (first.ticket_id, "attached")
    assert [k for k, _ in _events(sessions, first.ticket_id)] == ["alert_opened", "incident_attached",
                                                                   "alert_updated"]


def test_guard_over_mqtt_counts_attached(broker: Any, publisher: Publisher, tmp_path: Path) -> None:
    engine = init_db(f"sqlite:///{tmp_path}/tickets.db")
    sessions = session_factory(engine)
    c = AlertConsumer(MqttConfig(url=broker.url, topic_prefix="gwtest"), sessions,
                      client_id=f"t-{uuid.uuid4().hex[:8]}", retry_seconds=0.2)
    c.start()
    try:
        assert c.wait_subscribed(10)
        t0 = 1_800_000_000.0
        for i in range(3):  # three worker restarts, each re-detecting the same car
            a = make_alert("opened", f"cam1-z1-parking-run{i}", camera="cam1", ts=t0 + 600 * i, zone=ZONE)
            publisher.publish(topic_of(a), a.to_bytes())
        wait_for(lambda: c.metrics.incidents_attached.labels("parking")._value.get() == 2)
        assert len(_tickets(sessions)) == 1
        assert c.metrics.alerts_consumed.labels("opened", "attached")._value.get() == 2
    finally:
        c.stop()
        engine.dispose()
