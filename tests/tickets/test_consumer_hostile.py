"""One message must never stop the consumer: hostile payloads over a real Mosquitto, each followed by a
normal alert that must still become a ticket; bounded dead letters; bounded retries of unforeseen
failures; oversized health truncated."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import MqttConfig
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.handler import MessageHandler
from pipeline.tickets.limits import DEFAULT_LIMITS
from pipeline.tickets.metrics import TicketMetrics
from pipeline.tickets.models import CameraHealthRow, DeadLetter, Ticket
from pipeline.tickets.service import apply_alert as service_apply_alert

from .conftest import Publisher, make_alert, topic_of, wait_for

MakeConsumer = Callable[..., AlertConsumer]


@pytest.fixture
def make_consumer(broker: Any, sessions: sessionmaker[Session]) -> Iterator[MakeConsumer]:
    made: list[AlertConsumer] = []

    def make(**kw: Any) -> AlertConsumer:
        cfg = MqttConfig(url=broker.url, topic_prefix="gwtest")
        c = AlertConsumer(cfg, sessions, client_id=f"t-{uuid.uuid4().hex[:8]}", retry_seconds=0.2, **kw)
        made.append(c)
        c.start()
        assert c.wait_subscribed(10), "consumer did not subscribe"
        return c

    yield make
    for c in made:
        c.stop()


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"d": value}
    return value


def _alert_json(**update: Any) -> dict[str, Any]:
    data: dict[str, Any] = make_alert().model_dump(mode="json")
    data.update(update)
    return data


def _raw(data: dict[str, Any]) -> tuple[str, bytes]:
    topic = f"gwtest/alerts/{'/'.join(data['grid']['path'])}/{data['camera']['id']}/{data['hazard']}"
    return topic, json.dumps(data).encode()


def _deep_raw(depth: int) -> tuple[str, bytes]:
    """A valid alert whose details nest ``depth`` levels, built as text (json.dumps would recurse)."""
    data = _alert_json(details={"x": "PLACEHOLDER"})
    topic, text = _raw(data)
    nested = b'{"d":' * depth + b"1" + b"}" * depth
    return topic, text.replace(b'"PLACEHOLDER"', nested)


# (label, payload builder, expected dead-letter kind or None when the alert itself must become a ticket)
HOSTILE: list[tuple[str, Callable[[], tuple[str, bytes]], str | None]] = [
    ("depth 300 (serializer limit)", lambda: _deep_raw(300), "too_deep"),
    ("depth 2000 (RecursionError)", lambda: _deep_raw(2000), "too_deep"),
    ("60,000 brackets", lambda: ("gwtest/alerts/T1/D1/C1/G1/cam1/parking", b"[" * 60_000), "too_deep"),
    ("10 MB valid alert", lambda: _raw(_alert_json(details={"blob": "x" * 10_000_000})), "too_large"),
    ("details over their limit", lambda: _raw(_alert_json(details={"blob": "x" * 20_000})), "too_large"),
    ("NaN confidence", lambda: (_raw(_alert_json())[0], _raw(_alert_json())[1].replace(
        b'"confidence":', b'"confidence": NaN, "c2":', 1)), "invalid_json"),
    ("5000-digit integer", lambda: (_raw(_alert_json())[0], _raw(_alert_json())[1].replace(
        b'"severity": 2', b'"severity": ' + b"9" * 5000, 1)), "invalid_json"),
    ("zone id longer than its column", lambda: _raw(_alert_json(
        zone={"id": "z" * 500, "kind": "fire_lane", "name": None})), "schema"),
    ("lone surrogate in camera.name", lambda: _raw(_alert_json(camera={"id": "cam1", "name": "gate\ud800"})),
     None),
    ("NUL in camera.name and a detail key", lambda: _raw(_alert_json(
        camera={"id": "cam1", "name": "gate\x00"}, details={"k\x00": "v\udfff"})), None),
    ("camera name of 5000 characters", lambda: _raw(_alert_json(camera={"id": "cam1", "name": "n" * 5000})),
     None),
]


def _tickets(sessions: sessionmaker[Session]) -> list[Ticket]:
    with sessions() as s:
        return list(s.scalars(select(Ticket).order_by(Ticket.id)))


def _dead(sessions: sessionmaker[Session]) -> list[DeadLetter]:
    with sessions() as s:
        return list(s.scalars(select(DeadLetter).order_by(DeadLetter.id)))


@pytest.mark.parametrize(("label", "build", "dead_kind"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_payload_then_normal_alert(make_consumer: MakeConsumer, publisher: Publisher,
                                           sessions: sessionmaker[Session], label: str,
                                           build: Callable[[], tuple[str, bytes]], dead_kind: str | None) -> None:
    c = make_consumer()
    topic, payload = build()
    publisher.publish(topic, payload)
    good = make_alert(camera="cam2")
    publisher.publish(topic_of(good), good.to_bytes())
    wait_for(lambda: any(t.incident_id == good.incident_id for t in _tickets(sessions)), timeout=20)
    assert c.alive and c.ready and c.metrics.restarts._value.get() == 0
    dead = _dead(sessions)
    if dead_kind is None:
        assert dead == []
        [hostile, _] = _tickets(sessions)
        assert hostile.camera_name is not None and len(hostile.camera_name) <= 200
        assert "\x00" not in hostile.camera_name and "\ud800" not in hostile.camera_name
        assert all("\x00" not in k for k in hostile.details)
    else:
        [row] = dead
        assert row.reason.startswith(dead_kind), row.reason
        assert len(row.payload) <= DEFAULT_LIMITS.dead_letter_payload_bytes
        assert row.payload == payload[:DEFAULT_LIMITS.dead_letter_payload_bytes]
        if len(payload) > len(row.payload):
            assert f"payload {len(payload)} bytes" in row.reason
        assert c.metrics.dead_letters.labels(dead_kind)._value.get() == 1
        assert [t.incident_id for t in _tickets(sessions)] == [good.incident_id]


def test_surrogate_name_is_counted_as_sanitized(make_consumer: MakeConsumer, publisher: Publisher,
                                                sessions: sessionmaker[Session]) -> None:
    c = make_consumer()
    publisher.publish(*_raw(_alert_json(camera={"id": "cam1", "name": "gate\ud800"})))
    [t] = wait_for(lambda: _tickets(sessions))
    assert t.camera_name == "gate\ufffd"
    assert c.metrics.sanitized.labels("alert")._value.get() == 1


def test_two_megabyte_last_error_is_truncated(make_consumer: MakeConsumer, publisher: Publisher,
                                              sessions: sessionmaker[Session]) -> None:
    make_consumer()
    health = {"camera_id": "cam1", "state": "error", "last_error": "E" * 2_000_000}
    publisher.publish("gwtest/health/cam1", json.dumps(health), retain=True)
    row = wait_for(lambda: _health(sessions, "cam1"))
    assert row.state == "error" and row.last_error is not None
    assert row.last_error.startswith("E" * DEFAULT_LIMITS.max_last_error_chars)
    assert len(row.last_error) < DEFAULT_LIMITS.max_last_error_chars + 100
    assert "chars cut" in row.last_error


def _health(sessions: sessionmaker[Session], camera_id: str) -> CameraHealthRow | None:
    with sessions() as s:
        return s.get(CameraHealthRow, camera_id)


def test_unforeseen_failure_is_retried_then_dead_lettered(make_consumer: MakeConsumer, publisher: Publisher,
                                                          sessions: sessionmaker[Session],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure nobody classified (here a bug in the store code) is retried max_attempts times."""
    real = service_apply_alert
    poison = make_alert(camera="cam3")
    calls = {"poison": 0}

    def buggy(sessions_: Any, alert: Any, *args: Any, **kwargs: Any) -> Any:
        if alert.incident_id == poison.incident_id:
            calls["poison"] += 1
            raise TypeError("unforeseen bug")
        return real(sessions_, alert, *args, **kwargs)

    monkeypatch.setattr("pipeline.tickets.handler.apply_alert", buggy)
    c = make_consumer(max_attempts=3)
    publisher.publish(topic_of(poison), poison.to_bytes())
    good = make_alert(camera="cam2")
    publisher.publish(topic_of(good), good.to_bytes())
    wait_for(lambda: _tickets(sessions), timeout=30)
    [row] = wait_for(lambda: _dead(sessions))
    assert calls["poison"] == 3
    assert row.reason.startswith("unprocessable after 3 attempts: TypeError: unforeseen bug")
    assert row.payload == poison.to_bytes()
    assert [t.incident_id for t in _tickets(sessions)] == [good.incident_id]
    assert c.metrics.dead_letters.labels("unprocessable")._value.get() == 1
    assert c.metrics.db_errors._value.get() == 2  # two deliveries left unacknowledged, the third stored


@pytest.mark.parametrize(("label", "build", "dead_kind"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_payloads_on_sqlite_and_postgresql(db_url: str, label: str,
                                                   build: Callable[[], tuple[str, bytes]],
                                                   dead_kind: str | None) -> None:
    """The handler alone on both stores: PostgreSQL enforces column lengths and rejects NUL, SQLite not."""
    engine = init_db(db_url)
    try:
        store = session_factory(engine)
        handler = MessageHandler(store, "gwtest", TicketMetrics(), max_attempts=1)
        topic, payload = build()
        assert handler.handle(topic, payload)
        good = make_alert(camera="cam2")
        assert handler.handle(topic_of(good), good.to_bytes())
        assert not handler.store_failing
        dead = _dead(store)
        assert [r.reason.split(":")[0] for r in dead] == ([] if dead_kind is None else [dead_kind])
        assert len(_tickets(store)) == (2 if dead_kind is None else 1)
    finally:
        engine.dispose()
