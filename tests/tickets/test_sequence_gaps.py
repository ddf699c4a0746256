"""Lost alerts show: per-worker ``seq`` gaps are counted in the store and in
``gridwatch_alert_sequence_gaps_total{worker}``; redeliveries are not gaps; a burst over a real Mosquitto
with unlimited queues arrives whole, and one with a finite queue shows exactly what it dropped."""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.alerts.publisher import MqttPublisher
from pipeline.alerts.schema import AlertV1
from pipeline.config import MqttConfig
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.models import Ticket, WorkerSequence
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert

from .conftest import make_alert, topic_of, wait_for


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = init_db(db_url)
    yield e
    e.dispose()


def _seq(alert: AlertV1, worker: str, seq: int) -> AlertIn:
    data = alert.model_dump(mode="json")
    return AlertIn.model_validate(AlertV1.model_validate({**data, "worker_id": worker, "seq": seq})
                                  .model_dump(mode="json"))


def _row(sessions: sessionmaker[Session], worker: str) -> WorkerSequence | None:
    with sessions() as s:
        return s.get(WorkerSequence, worker)


def test_gaps_duplicates_and_late_arrivals(engine: Engine) -> None:
    sessions = session_factory(engine)
    a = [make_alert() for _ in range(6)]
    checks = [apply_alert(sessions, _seq(a[i], "w1", n)).sequence
              for i, n in [(0, 1), (1, 2), (4, 5), (1, 2), (2, 3), (5, 6)]]
    assert [(c.missing, c.late) for c in checks] == [(0, False), (0, False), (2, False),
                                                     (0, False),  # redelivery of 2: not a gap
                                                     (0, True),   # 3 arrived late: counted missing before
                                                     (0, False)]
    row = _row(sessions, "w1")
    assert row is not None and (row.last_seq, row.missing_total, row.late_total) == (6, 2, 1)
    # another worker has its own series; its first alert at 4 means 1..3 never arrived
    assert apply_alert(sessions, _seq(make_alert(), "w2", 4)).sequence.missing == 3
    # an alert without seq (old producer) touches nothing
    assert apply_alert(sessions, AlertIn.model_validate(make_alert().model_dump(mode="json"))).sequence.worker_id \
        is None
    # a worker that lost its outbox starts again at 1: a restart, not a late alert
    restart = apply_alert(sessions, _seq(make_alert(), "w1", 1)).sequence
    assert restart.restarted and not restart.late
    assert apply_alert(sessions, _seq(make_alert(), "w1", 2)).sequence.missing == 0


def _consumer(broker: Any, sessions: sessionmaker[Session], client_id: str | None = None) -> AlertConsumer:
    c = AlertConsumer(MqttConfig(url=broker.url, topic_prefix="gwtest"), sessions,
                      client_id=client_id or f"t-{uuid.uuid4().hex[:8]}", retry_seconds=0.2)
    c.start()
    assert c.wait_subscribed(10)
    return c


def _ticket_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Ticket)) or 0


def test_alert_lost_in_the_worker_shows_as_gap(broker: Any, sessions: sessionmaker[Session], tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """The publisher's real path; the second outbox row is removed, as when an undeliverable row is dropped."""
    c = _consumer(broker, sessions)
    outbox = tmp_path / "outbox.db"
    pub = MqttPublisher(MqttConfig(url=broker.url, topic_prefix="gwtest"), outbox, "worker-7")
    alerts = [make_alert() for _ in range(3)]
    for a in alerts:
        pub.publish_alert(a)
    with sqlite3.connect(outbox) as db:
        db.execute("DELETE FROM outbox WHERE id = 2")
    caplog.set_level(logging.WARNING, "pipeline.tickets.handler")
    try:
        pub.start()
        wait_for(lambda: _ticket_count(sessions) == 2)
        wait_for(lambda: c.metrics.sequence_gaps.labels("worker-7")._value.get() == 1)
    finally:
        pub.stop()
        c.stop()
    assert "worker worker-7: 1 alert(s) missing before seq 3" in caplog.text
    row = _row(sessions, "worker-7")
    assert row is not None and (row.last_seq, row.missing_total) == (3, 1)


def _burst(broker: Any, alerts: list[AlertV1]) -> None:
    """Publish every alert QoS 1 without waiting in between (a burst), then wait for all PUBACKs."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"burst-{uuid.uuid4().hex[:8]}")
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(len(alerts))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic_of(a), a.to_bytes(), qos=1) for a in alerts]
        for info in infos:
            info.wait_for_publish(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()


def _stamped(n: int, worker: str) -> list[AlertV1]:
    return [make_alert(worker_id=worker, seq=i) for i in range(1, n + 1)]


def test_burst_of_500_all_become_tickets(broker: Any, sessions: sessionmaker[Session]) -> None:
    """The test broker, like docker-compose, has ``max_queued_messages 0`` (unlimited)."""
    c = _consumer(broker, sessions)
    try:
        _burst(broker, _stamped(500, "burst-w"))
        wait_for(lambda: _ticket_count(sessions) == 500, timeout=180, interval=0.5)
        assert c.metrics.sequence_gaps.labels("burst-w")._value.get() == 0
        assert c.metrics.alerts_consumed.labels("opened", "created")._value.get() == 500
    finally:
        c.stop()


def test_finite_broker_queue_loss_is_counted(mosquitto: Any, sessions: sessionmaker[Session]) -> None:
    """Stock-like finite queue: what the broker drops for an offline consumer shows as a sequence gap."""
    broker = mosquitto(extra_config="max_queued_messages 40\n")
    cid = f"finite-{uuid.uuid4().hex[:6]}"
    _consumer(broker, sessions, cid).stop()  # persistent session exists, consumer offline
    alerts = _stamped(201, "finite-w")
    _burst(broker, alerts[:200])
    c = _consumer(broker, sessions, cid)
    try:
        wait_for(lambda: _ticket_count(sessions) >= 20)
        _burst(broker, alerts[200:])  # the next alert after the loss reveals it
        wait_for(lambda: alerts[-1].incident_id in _incident_ids(sessions), timeout=60)
        tickets = _ticket_count(sessions)
        gaps = c.metrics.sequence_gaps.labels("finite-w")._value.get()
        assert tickets < 200  # the broker really dropped alerts
        assert tickets + gaps == 201  # and every one of them is counted
    finally:
        c.stop()


def _incident_ids(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as s:
        return set(s.scalars(select(Ticket.incident_id)))


def test_stamped_alerts_carry_seq_on_the_wire() -> None:
    alert = _stamped(2, "w")[1]
    assert json.loads(alert.to_bytes())["seq"] == 2
