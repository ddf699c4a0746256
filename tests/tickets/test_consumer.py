"""The MQTT consumer against a real (private) Mosquitto: alerts -> tickets, dead letters, health,
persistent sessions and no ack-and-lose on database errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import MqttConfig
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.models import CameraHealthRow, DeadLetter, Ticket, TicketEvent
from pipeline.tickets.service import apply_alert as service_apply_alert

from .conftest import Publisher, make_alert, topic_of, wait_for

MakeConsumer = Callable[..., AlertConsumer]


@pytest.fixture
def make_consumer(broker: Any, sessions: sessionmaker[Session]) -> Iterator[MakeConsumer]:
    """Start consumers on the private broker; all are stopped at teardown."""
    made: list[AlertConsumer] = []

    def make(client_id: str | None = None, shared_group: str | None = "gridwatch-api",
             **kw: Any) -> AlertConsumer:
        cfg = MqttConfig(url=broker.url, topic_prefix="gwtest", shared_group=shared_group)
        c = AlertConsumer(cfg, sessions, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                          retry_seconds=0.2, **kw)
        made.append(c)
        c.start()
        assert c.wait_subscribed(10), "consumer did not subscribe"
        return c

    yield make
    for c in made:
        c.stop()


def _tickets(sessions: sessionmaker[Session]) -> list[Ticket]:
    with sessions() as s:
        return list(s.scalars(select(Ticket).order_by(Ticket.id)))


def _count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


@pytest.mark.parametrize("shared_group", ["gridwatch-api", None])
def test_alert_becomes_ticket(make_consumer: MakeConsumer, publisher: Publisher,
                              sessions: sessionmaker[Session], shared_group: str | None) -> None:
    c = make_consumer(shared_group=shared_group)
    assert c.alert_topic == ("$share/gridwatch-api/gwtest/alerts/#" if shared_group else "gwtest/alerts/#")
    alert = make_alert("opened", camera="cam2", hazard="fire", zone=None)
    publisher.publish(topic_of(alert), alert.to_bytes())
    [t] = wait_for(lambda: _tickets(sessions))
    assert (t.incident_id, t.hazard, t.camera_id, t.status) == (alert.incident_id, "fire", "cam2", "received")
    assert t.grid_path == "T1/D1/C1/G2" and t.zone_id is None
    assert c.metrics.alerts_consumed.labels("opened", "created")._value.get() == 1


def test_redelivery_update_and_clear_keep_one_ticket(make_consumer: MakeConsumer, publisher: Publisher,
                                                     sessions: sessionmaker[Session]) -> None:
    c = make_consumer()
    inc = "cam1-z1-parking-dup"
    opened = make_alert("opened", inc, ts=1000.0)
    for _ in range(3):
        publisher.publish(topic_of(opened), opened.to_bytes())
    publisher.publish(topic_of(opened), make_alert("updated", inc, ts=1060.0, severity=5).to_bytes())
    publisher.publish(topic_of(opened), make_alert("cleared", inc, ts=1120.0).to_bytes())
    wait_for(lambda: _tickets(sessions) and _tickets(sessions)[0].cleared_at is not None)
    [t] = _tickets(sessions)
    assert t.status == "received" and t.severity == 5 and t.cleared_at.timestamp() == 1120.0  # type: ignore[union-attr]
    with sessions() as s:
        kinds = list(s.scalars(select(TicketEvent.kind).order_by(TicketEvent.id)))
    assert kinds == ["alert_opened", "alert_updated", "alert_cleared"]
    assert c.metrics.alerts_consumed.labels("opened", "duplicate")._value.get() == 2


GARBAGE: list[tuple[str, Callable[[str], tuple[str, bytes]]]] = [
    ("invalid_json", lambda good_topic: (good_topic, b"\xff\xfe not json {")),
    ("schema", lambda good_topic: (good_topic, b"[1, 2, 3]")),
    ("schema", lambda good_topic: (good_topic, json.dumps({"hello": "world"}).encode())),
    ("schema", lambda good_topic: (good_topic, json.dumps(
        {**make_alert().model_dump(mode="json"), "unexpected": 1}).encode())),
    ("schema", lambda good_topic: (good_topic, json.dumps(
        {**make_alert().model_dump(mode="json"), "schema_version": 2}).encode())),
    ("topic_mismatch", lambda good_topic: ("gwtest/alerts/T1/D1/C1/G2/cam2/parking",
                                           make_alert(camera="cam1").to_bytes())),
]


def test_garbage_goes_to_dead_letters_and_consumer_keeps_going(
        make_consumer: MakeConsumer, publisher: Publisher, sessions: sessionmaker[Session]) -> None:
    c = make_consumer()
    good = make_alert()
    for _, make in GARBAGE:
        publisher.publish(*make(topic_of(good)))
    publisher.publish(topic_of(good), good.to_bytes())
    wait_for(lambda: _tickets(sessions))
    wait_for(lambda: _count(sessions, DeadLetter) == len(GARBAGE))
    with sessions() as s:
        rows = list(s.scalars(select(DeadLetter).order_by(DeadLetter.id)))
    assert [r.reason.split(":")[0] for r in rows] == [kind for kind, _ in GARBAGE]
    assert rows[0].payload == b"\xff\xfe not json {"
    assert [t.incident_id for t in _tickets(sessions)] == [good.incident_id]
    assert c.metrics.dead_letters.labels("schema")._value.get() == 4


def test_retained_health_goes_to_camera_health(make_consumer: MakeConsumer, publisher: Publisher,
                                               sessions: sessionmaker[Session]) -> None:
    health = {"camera_id": "cam1", "state": "streaming", "last_frame_ts": 1714550400.5,
              "frames_decoded": 120, "frames_dropped": 3, "reconnects": 1, "last_error": None}
    publisher.publish("gwtest/health/cam1", json.dumps(health), retain=True)  # before the consumer exists
    publisher.publish("gwtest/health/cam2", json.dumps({**health, "camera_id": "cam3"}), retain=True)
    make_consumer()
    row = wait_for(lambda: _get_health(sessions, "cam1"))
    assert (row.state, row.frames_decoded, row.frames_dropped, row.reconnects) == ("streaming", 120, 3, 1)
    publisher.publish("gwtest/health/cam1", json.dumps({**health, "state": "reconnecting",
                                                        "last_error": "timeout"}), retain=True)
    wait_for(lambda: (r := _get_health(sessions, "cam1")) is not None and r.state == "reconnecting")
    wait_for(lambda: _count(sessions, DeadLetter) == 1)  # cam2 topic carried cam3's payload
    assert _get_health(sessions, "cam2") is None


def _get_health(sessions: sessionmaker[Session], camera_id: str) -> CameraHealthRow | None:
    with sessions() as s:
        return s.get(CameraHealthRow, camera_id)


def test_alerts_published_while_down_arrive_later(make_consumer: MakeConsumer, publisher: Publisher,
                                                  sessions: sessionmaker[Session]) -> None:
    """Persistent session: the broker queues QoS 1 alerts for the stopped consumer."""
    cid = f"api-{uuid.uuid4().hex[:6]}"
    first = make_consumer(client_id=cid)
    first.stop()
    alerts = [make_alert() for _ in range(3)]
    for a in alerts:
        publisher.publish(topic_of(a), a.to_bytes())
    make_consumer(client_id=cid)
    wait_for(lambda: len(_tickets(sessions)) == 3)
    assert {t.incident_id for t in _tickets(sessions)} == {a.incident_id for a in alerts}


def test_database_error_is_not_acked_and_lost(make_consumer: MakeConsumer, publisher: Publisher,
                                              sessions: sessionmaker[Session],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = service_apply_alert
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OperationalError("INSERT ...", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr("pipeline.tickets.handler.apply_alert", flaky)
    c = make_consumer()
    alert = make_alert()
    publisher.publish(topic_of(alert), alert.to_bytes())
    [t] = wait_for(lambda: _tickets(sessions), timeout=20)
    assert t.incident_id == alert.incident_id
    assert calls["n"] == 3  # redelivered by the broker after each failure, applied once
    assert c.metrics.db_errors._value.get() == 2
    assert _count(sessions, DeadLetter) == 0


def test_consumer_reconnects_after_broker_restart(make_consumer: MakeConsumer, broker: Any,
                                                  sessions: sessionmaker[Session]) -> None:
    c = make_consumer()
    broker.stop()
    wait_for(lambda: not c.connected)
    assert c.metrics.connected._value.get() == 0
    broker.start()
    wait_for(lambda: c.connected and c.wait_subscribed(0), timeout=20)
    p = Publisher(broker.host, broker.port)
    try:
        alert = make_alert()
        p.publish(topic_of(alert), alert.to_bytes())
        wait_for(lambda: _tickets(sessions))
    finally:
        p.close()


@pytest.mark.parametrize(("url", "expected"), [
    (None, ("127.0.0.1", 1883, False)),
    ("mqtt://broker:1999", ("broker", 1999, False)),
    ("mqtts://broker", ("broker", 8883, True)),
])
def test_broker_address(url: str | None, expected: tuple[str, int, bool],
                        sessions: sessionmaker[Session]) -> None:
    addr = AlertConsumer(MqttConfig(url=url), sessions).address
    assert (addr.host, addr.port, addr.tls) == expected
