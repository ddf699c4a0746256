"""Alert recovery: gap rows follow the sequence (split, fill, restart), the recovery asks for them, retries and
gives up visibly, a worker's status ``last_seq`` reveals a lost tail; and on a real Mosquitto the alerts a
broker restart drops for an offline shared subscription come back through the worker's archive and become
tickets exactly once."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.alerts.publisher import MqttPublisher
from pipeline.alerts.resend import ResendResponder
from pipeline.config import MqttConfig
from pipeline.contract.messages import AlertV1, WorkerStatusV1
from pipeline.contract.resend import ResendRequestV1, SeqRange
from pipeline.contract.topics import resend_request_topic, status_topic
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.gaps import OPEN, UNRECOVERABLE, AlertGap
from pipeline.tickets.metrics import TicketMetrics
from pipeline.tickets.models import Ticket, TicketEvent
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.recovery import GapRecovery
from pipeline.tickets.sequence import SequenceCheck
from pipeline.tickets.service import apply_alert

from .conftest import make_alert, wait_for

PREFIX = "gwtest"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = init_db(db_url)
    yield e
    e.dispose()


def _seq(worker: str, seq: int, alert: AlertV1 | None = None) -> AlertIn:
    data = (alert or make_alert()).model_dump(mode="json")
    return AlertIn.model_validate({**data, "worker_id": worker, "seq": seq})


def _gaps(sessions: sessionmaker[Session], worker: str) -> list[tuple[int, int, str]]:
    with sessions() as s:
        return [(g.first_seq, g.last_seq, g.state) for g in
                s.scalars(select(AlertGap).where(AlertGap.worker_id == worker).order_by(AlertGap.first_seq))]


def _requests_of(sessions: sessionmaker[Session], worker: str) -> list[tuple[int, int, int]]:
    with sessions() as s:
        return [(g.first_seq, g.last_seq, g.requests) for g in s.scalars(select(AlertGap).where(
            AlertGap.worker_id == worker))]


def test_gap_rows_split_fill_and_restart(engine: Engine) -> None:
    sessions = session_factory(engine)
    three = make_alert()
    apply_alert(sessions, _seq("w", 1))
    assert apply_alert(sessions, _seq("w", 5)).sequence.missing == 3
    assert _gaps(sessions, "w") == [(2, 4, OPEN)]
    late = apply_alert(sessions, _seq("w", 3, three)).sequence
    assert late.late and late.recovered and _gaps(sessions, "w") == [(2, 2, OPEN), (4, 4, OPEN)]
    again = apply_alert(sessions, _seq("w", 3, three)).sequence  # the same alert re-sent: a duplicate
    assert not again.recovered and not again.late
    for n in (2, 4):
        assert apply_alert(sessions, _seq("w", n)).sequence.recovered
    assert _gaps(sessions, "w") == []
    # a jump of 2,500 is recorded in rows of at most one request (1,000 numbers)
    apply_alert(sessions, _seq("w", 2506))
    assert _gaps(sessions, "w") == [(6, 1005, OPEN), (1006, 2005, OPEN), (2006, 2505, OPEN)]
    # the worker lost its outbox and numbers from 1 again: the old series' gaps are given up
    restart = apply_alert(sessions, _seq("w", 1)).sequence
    assert restart.restarted and restart.dropped == 2500 and _gaps(sessions, "w") == []


class Requests:
    """The recovery's publish: records the requests and says whether the connection took them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, ResendRequestV1]] = []
        self.connected = True

    def __call__(self, topic: str, payload: bytes) -> bool:
        if self.connected:
            self.sent.append((topic, ResendRequestV1.model_validate_json(payload)))
        return self.connected


def test_requests_retries_and_gives_up_visibly(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    sessions = session_factory(engine)
    metrics, requests = TicketMetrics(), Requests()
    recovery = GapRecovery(sessions, PREFIX, metrics, requests, retry_seconds=0.0, max_requests=2, grace_seconds=0.0)
    apply_alert(sessions, _seq("w9", 1))
    apply_alert(sessions, _seq("w9", 4))     # 2..3 missing
    apply_alert(sessions, _seq("w9", 1010))  # 5..1009 missing: 1,005 numbers, over one request
    requests.connected = False
    assert recovery.tick() == 0              # not connected: nothing counted as asked
    assert {r for *_, r in _requests_of(sessions, "w9")} == {0}
    requests.connected = True
    assert recovery.tick() == 1
    topic, first = requests.sent[0]
    assert topic == resend_request_topic(PREFIX, "w9") and first.worker_id == "w9"
    # one request holds at most 1,000 numbers: the rest of the row is split off for the next one
    assert [(r.first, r.last) for r in first.ranges] == [(2, 3), (5, 1002)] and first.count() == 1000
    assert metrics.gaps_open._value.get() == 1007
    caplog.set_level(logging.WARNING, "pipeline.tickets.recovery")
    while recovery.tick():                   # retry_seconds 0: due again at once, until each row is asked twice
        assert len(requests.sent) < 10
    asked: dict[int, int] = {}
    for _, request in requests.sent:
        for r in request.ranges:
            for n in range(r.first, r.last + 1):
                asked[n] = asked.get(n, 0) + 1
    assert asked == {n: 2 for n in [2, 3, *range(5, 1010)]}
    recovery.tick()                          # asked twice and still missing: given up
    assert {s for _, _, s in _gaps(sessions, "w9")} == {UNRECOVERABLE}
    assert metrics.gaps_unrecoverable.labels("w9")._value.get() == 1007
    assert metrics.resend_requests.labels("w9")._value.get() == len(requests.sent) == 4
    assert metrics.gaps_open._value.get() == 0
    assert "worker w9: alerts 2..3 (2) not recovered after 2 resend request(s); given up" in caplog.text
    # an alert that turns up after all still fills its row and counts as recovered
    assert apply_alert(sessions, _seq("w9", 3)).sequence.recovered


def test_status_last_seq_reveals_a_lost_tail_once_the_worker_is_quiet(engine: Engine) -> None:
    sessions = session_factory(engine)
    metrics, requests = TicketMetrics(), Requests()
    recovery = GapRecovery(sessions, PREFIX, metrics, requests, retry_seconds=10.0, max_requests=3,
                           grace_seconds=2.0)
    for n in (1, 2, 3):
        apply_alert(sessions, _seq("w3", n))
    status = WorkerStatusV1.model_validate({"state": "online", "ts": "2026-12-01T19:00:00Z", "last_seq": 10})
    recovery.on_status(status_topic(PREFIX, "w3"), status.to_bytes())
    for bad in (b"", b"{", b'{"state": "online"}', b"x" * 5000, b'{"state": "away", "ts": "2026-12-01T19:00:00Z"}'):
        recovery.on_status(status_topic(PREFIX, "w4"), bad)  # ignored, no exception
    recovery.on_status("gwtest/status/workers/a/b", status.to_bytes())
    t = time.monotonic()
    assert recovery.tick(t) == 0 and _gaps(sessions, "w3") == []  # within the grace: alerts may be on the way
    recovery.note_alert(SequenceCheck("w3"))                      # and one just arrived
    assert recovery.tick(t + 1.5) == 0 and _gaps(sessions, "w3") == []
    recovery.tick(time.monotonic() + 2.5)                         # quiet for the grace: the tail is missing
    assert _gaps(sessions, "w3") == [(4, 10, OPEN)]
    assert metrics.sequence_gaps.labels("w3")._value.get() == 7
    assert _gaps(sessions, "w4") == []
    # a worker this store never heard of counts while online (a new store asks for what it still archives),
    # not by the retained `offline` of a worker that may be long gone
    recovery.on_status(status_topic(PREFIX, "w5"), status.model_copy(update={"state": "offline"}).to_bytes())
    recovery.on_status(status_topic(PREFIX, "w6"), status.model_copy(update={"last_seq": 4}).to_bytes())
    recovery.tick(time.monotonic() + 5)
    assert _gaps(sessions, "w5") == [] and _gaps(sessions, "w6") == [(1, 4, OPEN)]
    # a claim at or below what arrived changes nothing
    recovery.on_status(status_topic(PREFIX, "w3"), status.model_copy(update={"last_seq": 2}).to_bytes())
    recovery.tick(time.monotonic() + 5)
    assert _gaps(sessions, "w3") == [(4, 10, OPEN)] and metrics.sequence_gaps.labels("w3")._value.get() == 7


# -- real Mosquitto: the broker-restart loss and its recovery ----------------------------------------------------


def _tickets(sessions: sessionmaker[Session]) -> dict[str, int]:
    """incident id -> tickets with it."""
    with sessions() as s:
        return {str(i): int(n) for i, n in s.execute(select(Ticket.incident_id, func.count()).group_by(
            Ticket.incident_id)).all()}


def _events(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(TicketEvent)) or 0


def _restart_with_consumer_offline(broker: Any, sessions: sessionmaker[Session], tmp_path: Path,
                                   with_archive: bool) -> tuple[AlertConsumer, MqttPublisher, ResendResponder | None,
                                                                list[AlertV1], float]:
    """Three alerts become tickets; the ticket consumer (shared group) goes offline; the broker restarts; the
    worker publishes 20 more (all PUBACKed); the consumer comes back. Returns it, the worker's publisher and
    responder, the alerts and the monotonic time the consumer was started again."""
    cfg = MqttConfig(url=broker.url, topic_prefix=PREFIX, shared_group="api", resend_retry_seconds=1.0,
                     resend_max_requests=2 if with_archive else 1)
    client_id = f"rec-{uuid.uuid4().hex[:8]}"
    consumer = AlertConsumer(cfg, sessions, client_id=client_id, retry_seconds=0.2)
    consumer.start()
    assert consumer.wait_subscribed(10)
    pub = MqttPublisher(cfg, tmp_path / "outbox.db", "wk-1", reconnect_max_seconds=1,
                        archive_max=10_000 if with_archive else 0)
    responder = ResendResponder(pub, f"{pub.client_id}-resend") if with_archive else None
    pub.start()
    if responder is not None:
        responder.start()
    alerts = [make_alert() for _ in range(23)]
    for a in alerts[:3]:
        pub.publish_alert(a)
    wait_for(lambda: len(_tickets(sessions)) == 3)
    consumer.stop()  # offline; its persistent session (shared subscription) stays at the broker
    broker.stop()
    broker.start()
    for a in alerts[3:]:
        pub.publish_alert(a)
    wait_for(lambda: pub.connected and len(pub.outbox) == 0, timeout=20)  # all 20 acknowledged by the broker
    started = time.monotonic()
    back = AlertConsumer(cfg, sessions, client_id=client_id, retry_seconds=0.2)
    back.start()
    assert back.wait_subscribed(10)
    return back, pub, responder, alerts, started


def test_broker_restart_drops_the_shared_queue_and_the_loss_stays_visible(
        mosquitto: Any, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """The loss itself (Mosquitto 2.0.11): no archive on the worker, so nothing can be re-sent."""
    broker = mosquitto()
    consumer, pub, _, alerts, _ = _restart_with_consumer_offline(broker, sessions, tmp_path, with_archive=False)
    try:
        # the status's last_seq shows 20 missing; one request goes unanswered; they are given up
        wait_for(lambda: consumer.metrics.gaps_unrecoverable.labels("wk-1")._value.get() == 20, timeout=20)
        assert len(_tickets(sessions)) == 3, "the broker delivered the queued alerts: see docs/reliability.md"
        assert consumer.metrics.sequence_gaps.labels("wk-1")._value.get() == 20
        assert consumer.metrics.resend_requests.labels("wk-1")._value.get() == 1
        # the counter moves inside the give-up transaction, a moment before it commits
        wait_for(lambda: _gaps(sessions, "wk-1") == [(4, 23, UNRECOVERABLE)], timeout=10)
    finally:
        consumer.stop()
        pub.stop(drain_timeout=0)


def test_broker_restart_loss_is_recovered_by_resend_exactly_once(
        mosquitto: Any, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    broker = mosquitto()
    consumer, pub, responder, alerts, started = _restart_with_consumer_offline(broker, sessions, tmp_path,
                                                                               with_archive=True)
    assert responder is not None
    try:
        wait_for(lambda: len(_tickets(sessions)) == 23, timeout=30)
        took = time.monotonic() - started
        wait_for(lambda: consumer.metrics.gaps_recovered.labels("wk-1")._value.get() == 20)
        tickets = _tickets(sessions)
        assert set(tickets) == {a.incident_id for a in alerts} and set(tickets.values()) == {1}
        assert _events(sessions) == 23  # one `opened` event per alert, none twice
        assert consumer.metrics.sequence_gaps.labels("wk-1")._value.get() == 20
        assert consumer.metrics.gaps_unrecoverable.labels("wk-1")._value.get() == 0
        assert consumer.metrics.resend_requests.labels("wk-1")._value.get() >= 1
        assert responder.stats()["resent"] >= 20 and _gaps(sessions, "wk-1") == []
        # a second request for the same numbers (a retry that crossed the answer) changes nothing
        request = ResendRequestV1(schema_version=1, request_id="again", worker_id="wk-1",
                                  ranges=[SeqRange(first=1, last=23)], requested_at=datetime.now(UTC))
        assert consumer.publish(resend_request_topic(PREFIX, "wk-1"), request.to_bytes())
        wait_for(lambda: consumer.metrics.alerts_consumed.labels("opened", "duplicate")._value.get() >= 23,
                 timeout=20)
        assert set(_tickets(sessions).values()) == {1} and len(_tickets(sessions)) == 23 and _events(sessions) == 23
        print(f"\nrecovered 20 of 20 lost alerts {took:.1f} s after the consumer came back "
              f"({consumer.metrics.resend_requests.labels('wk-1')._value.get():.0f} request(s))")
    finally:
        if responder is not None:
            responder.stop()
        consumer.stop()
        pub.stop(drain_timeout=0)
