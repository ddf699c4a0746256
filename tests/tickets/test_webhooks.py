"""Outbound webhooks against a real HTTP receiver on 127.0.0.1: signed delivery, retries with backoff from
the durable queue (also across a restart), dead letters (API and metric), filters, bot formats, and two
replicas sharing one queue. Times are real Unix timestamps; the sender is driven pass by pass where the
schedule is checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import SiteConfig
from pipeline.config_webhooks import WebhooksConfig
from pipeline.contract.webhook import WebhookEventV1
from pipeline.tickets.api import create_app
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.models import EventKind, TicketEvent, utcnow
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert, transition
from pipeline.tickets.webhook_sender import WebhookSender
from pipeline.tickets.webhooks import (
    DEAD,
    DELIVERED,
    DROPPED,
    PENDING,
    TARGET_REMOVED,
    WebhookDelivery,
    claim_due,
    install_webhook_queueing,
)
from tests.fixtures.auth import login, user_token
from tests.fixtures.webhook_receiver import WebhookReceiver, closed_port

from .conftest import Publisher, make_alert, make_site, topic_of, wait_for

SECRET = "hook-secret-0123456789abcdef"
BODY_FIELDS = ["schema_version", "delivery_id", "event", "site", "ts", "reason", "ticket"]
TICKET_FIELDS = ["id", "incident_id", "hazard", "severity", "status", "title", "camera_id", "camera_name",
                 "grid_path", "zone_id", "opened_at", "url"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    yield r
    r.stop()


def _target(url: str, **kw: Any) -> dict[str, Any]:
    return {"name": "cases", "url": url, "secret": SECRET, "backoff_base_seconds": 10,
            "backoff_max_seconds": 60, **kw}


def _site(tmp_path: Path, db_url: str | None, targets: list[dict[str, Any]], **webhooks: Any) -> SiteConfig:
    site = make_site(tmp_path, db_url)
    site.api.public_url = "https://tickets.example.org"
    site.api.webhooks = WebhooksConfig.model_validate(
        {"targets": targets, "poll_interval_seconds": 0.05, **webhooks})
    return site


def _store(site: SiteConfig) -> sessionmaker[Session]:
    """The ticket store of ``site`` with webhook queueing on its session factory (no app, no thread)."""
    sessions = session_factory(init_db(site.database_url()))
    install_webhook_queueing(sessions, site.api.webhooks, site.site, site.api.public_url)
    return sessions


def _open(sessions: sessionmaker[Session], **kw: Any) -> int:
    alert = make_alert(**kw)
    return apply_alert(sessions, AlertIn.model_validate(alert.model_dump(mode="json"))).ticket_id


def _rows(sessions: sessionmaker[Session], **where: Any) -> list[WebhookDelivery]:
    with sessions() as session:
        q = select(WebhookDelivery).order_by(WebhookDelivery.id)
        for k, v in where.items():
            q = q.where(getattr(WebhookDelivery, k) == v)
        return list(session.scalars(q))


def _verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written out as in docs/operations.md (not the service's own helper)."""
    ts = headers["x-gridwatch-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-gridwatch-signature"])


def test_created_ticket_is_delivered_signed_with_a_stable_body(tmp_path: Path, db_url: str,
                                                               receiver: WebhookReceiver) -> None:
    site = _site(tmp_path, db_url, [_target(receiver.url)])
    with TestClient(create_app(site, start_consumer=False)) as client:
        sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
        ticket_id = _open(sessions, camera="cam1", hazard="fire")
        wait_for(lambda: receiver.count() >= 1)
        got = receiver.received[0]
        assert _verify(SECRET, got.headers, got.body)
        assert not _verify(SECRET + "x", got.headers, got.body)
        assert not _verify(SECRET, got.headers, got.body + b" ")
        assert got.headers["x-gridwatch-event"] == "ticket_created"
        assert got.headers["content-type"].startswith("application/json")
        assert abs(int(got.headers["x-gridwatch-timestamp"]) - time.time()) < 600
        body = got.json()
        assert list(body) == BODY_FIELDS and list(body["ticket"]) == TICKET_FIELDS
        event = WebhookEventV1.model_validate_json(got.body)
        assert event.delivery_id == got.headers["x-gridwatch-delivery"]
        assert (event.event, event.ticket.id, event.ticket.status) == ("ticket_created", ticket_id, "received")
        assert event.ticket.grid_path == ["T1", "D1", "C1", "G1"] and event.ticket.hazard.value == "fire"
        assert event.ticket.url == f"https://tickets.example.org/tickets/{ticket_id}"
        row = wait_for(lambda: _rows(sessions, status=DELIVERED))[0]
        assert row.body.encode() == got.body and row.attempts == 1 and row.last_error is None
        login(client)
        page = client.get("/webhooks/deliveries", params={"status": "delivered"}).json()
        assert page["total"] == 1 and page["items"][0]["delivery_id"] == event.delivery_id
    assert receiver.count() == 1  # delivered once, nothing sent again


def test_payload_carries_no_secrets(tmp_path: Path, receiver: WebhookReceiver) -> None:
    site = _site(tmp_path, None, [_target(receiver.url + "?key=BOTKEY-7f3a9c1e5b")])
    site.mqtt.password = "mqtt-pass-Zz91xq"
    sessions = _store(site)
    _open(sessions, details={"api_token": "worker-token-Qq77"}, hazard="parking")
    sender = WebhookSender(site.api.webhooks, sessions)
    assert sender.process_due(time.time()) == 1
    got = receiver.received[0]
    text = got.body.decode() + json.dumps(got.headers)
    for secret in (SECRET, "BOTKEY-7f3a9c1e5b", "mqtt-pass-Zz91xq", "worker-token-Qq77", "api_token"):
        assert secret not in text
    assert got.headers["x-gridwatch-signature"].startswith("sha256=")


def test_alert_over_mqtt_reaches_the_receiver(tmp_path: Path, broker: Any, publisher: Publisher,
                                              receiver: WebhookReceiver) -> None:
    site = _site(tmp_path, None, [_target(receiver.url, hazards=["fire"])])
    site.mqtt.url, site.mqtt.client_id = broker.url, f"wh-{tmp_path.name[-8:]}"
    with TestClient(create_app(site)) as client:
        client.app.state.tickets.consumer.wait_subscribed(10)  # type: ignore[attr-defined]
        parked, fire = make_alert(camera="cam1", hazard="parking"), make_alert(camera="cam3", hazard="fire")
        for alert in (parked, fire):
            publisher.publish(topic_of(alert), alert.to_bytes())
        got = wait_for(lambda: receiver.received, timeout=90)[0]
        assert _verify(SECRET, got.headers, got.body)
        body = got.json()
        assert (body["event"], body["ticket"]["incident_id"]) == ("ticket_created", fire.incident_id)
        sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
        wait_for(lambda: _rows(sessions) and all(r.status == DELIVERED for r in _rows(sessions)))
    # The alerts are from 2024, so the case loop also sends the fire ticket's overdue and escalation steps.
    bodies = [r.json() for r in receiver.received]
    assert [b["event"] for b in bodies].count("ticket_created") == 1
    assert {b["ticket"]["incident_id"] for b in bodies} == {fire.incident_id}  # parking is filtered out


def test_receiver_down_is_retried_with_exponential_backoff(tmp_path: Path) -> None:
    port = closed_port()
    receiver = WebhookReceiver(port=port)
    site = _site(tmp_path, None, [_target(receiver.url, max_attempts=10)])
    sessions = _store(site)
    _open(sessions)
    sender = WebhookSender(site.api.webhooks, sessions)
    now = time.time()  # ~1.8e9: real Unix time
    waits = []
    for _ in range(4):
        assert sender.process_due(now) == 1
        row = _rows(sessions)[0]
        assert row.status == PENDING and row.last_status is None and "Connection" in (row.last_error or "")
        wait = row.next_attempt_at.timestamp() - now
        waits.append(round(wait, 3))
        assert sender.process_due(now + wait - 1) == 0  # not due yet
        now += wait
    assert waits == [10, 20, 40, 60]  # base 10 s doubling, capped at 60 s
    receiver.start()
    try:
        assert sender.process_due(now) == 1
        row = _rows(sessions)[0]
        assert (row.status, row.attempts, row.last_error) == (DELIVERED, 5, None)
        assert receiver.count() == 1
    finally:
        receiver.stop()


def test_queue_survives_a_restart(tmp_path: Path, db_url: str) -> None:
    receiver = WebhookReceiver(port=closed_port())
    site = _site(tmp_path, db_url, [_target(receiver.url, backoff_base_seconds=0.2, backoff_max_seconds=0.2,
                                            max_attempts=100)])
    with TestClient(create_app(site, start_consumer=False)) as client:
        sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
        _open(sessions)
        wait_for(lambda: [r for r in _rows(sessions) if r.attempts >= 2])
    queued = _rows(sessions)[0]
    assert queued.status == PENDING
    receiver.start()
    try:
        with TestClient(create_app(site, start_consumer=False)) as client:
            sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
            wait_for(lambda: _rows(sessions, status=DELIVERED))
        assert receiver.count() == 1
        assert receiver.received[0].json()["delivery_id"] == queued.delivery_id
    finally:
        receiver.stop()


def test_dead_letter_after_max_attempts_in_api_and_metrics(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.status = 500
    site = _site(tmp_path, None, [_target(receiver.url, max_attempts=3)], poll_interval_seconds=300)
    with TestClient(create_app(site, start_consumer=False)) as client:
        app: Any = client.app
        sender: WebhookSender = app.state.webhooks
        sender.stop()  # driven pass by pass below
        sessions = app.state.tickets.sessions
        _open(sessions)
        now = time.time()
        for attempt in (1, 2, 3):
            assert sender.process_due(now) == 1
            row = _rows(sessions)[0]
            assert row.attempts == attempt
            now = row.next_attempt_at.timestamp()
        assert (row.status, row.attempts, row.last_status) == (DEAD, 3, 500)
        assert sender.process_due(now + 3600) == 0  # dead: never tried again
        assert receiver.count() == 3
        login(client)
        page = client.get("/webhooks/deliveries", params={"status": "dead"}).json()
        assert page["total"] == 1
        dead = page["items"][0]
        assert dead["target"] == "cases" and dead["last_status"] == 500 and "HTTP 500" in dead["last_error"]
        metrics = client.get("/metrics").text
        assert 'gridwatch_webhook_deliveries{status="dead",target="cases"} 1.0' in metrics
        assert 'gridwatch_webhook_attempts_total{outcome="dead",target="cases"} 1.0' in metrics
        assert 'gridwatch_webhook_attempts_total{outcome="failed",target="cases"} 2.0' in metrics
        viewer = user_token(app, "vera", "viewer", ["T1"])
        assert client.get("/webhooks/deliveries", headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
        assert client.post(f"/webhooks/deliveries/{dead['id']}/retry",
                           headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
        assert client.post("/webhooks/deliveries/999999/retry").status_code == 404
        receiver.status = 200
        r = client.post(f"/webhooks/deliveries/{dead['id']}/retry")
        assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
        assert client.post(f"/webhooks/deliveries/{dead['id']}/retry").status_code == 409
        assert sender.process_due(time.time()) == 1
        assert _rows(sessions)[0].status == DELIVERED


def test_targets_filter_by_grid_hazard_and_event(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    site = _site(tmp_path, None, [
        _target(url, name="d1-fire", grid=["T1/D1"], hazards=["fire"]),
        _target(url, name="other-town", grid=["T10"]),
        _target(url, name="closed-only", events=["ticket_closed"]),
        _target(url, name="off", enabled=False)])
    sessions = _store(site)
    fire_d1 = _open(sessions, camera="cam1", hazard="fire")
    _open(sessions, camera="cam1", hazard="parking")  # T1/D1, not fire
    _open(sessions, camera="cam3", hazard="fire")  # T1/D2
    poster_t10 = _open(sessions, camera="cam9", hazard="poster")
    by_target = {t: [(r.event, r.ticket_id) for r in _rows(sessions, target=t)]
                 for t in ("d1-fire", "other-town", "closed-only", "off")}
    assert by_target == {"d1-fire": [("ticket_created", fire_d1)], "other-town": [("ticket_created", poster_t10)],
                         "closed-only": [], "off": []}
    with sessions() as session, session.begin():
        transition(session, fire_d1, "false_alarm", actor="disp", note="a red jacket, not a fire")
    closed = _rows(sessions, target="closed-only")
    assert [(r.event, r.ticket_id) for r in closed] == [("ticket_closed", fire_d1)]
    body = json.loads(closed[0].body)
    assert body["ticket"]["status"] == "false_alarm" and body["reason"] == "a red jacket, not a fire"
    assert [r.event for r in _rows(sessions, target="d1-fire")] == ["ticket_created", "ticket_closed"]


def test_escalation_event_is_queued_and_rollback_queues_nothing(tmp_path: Path) -> None:
    site = _site(tmp_path, None, [_target(f"http://127.0.0.1:{closed_port()}/hook")])
    sessions = _store(site)
    ticket_id = _open(sessions, camera="cam2")
    with sessions() as session, session.begin():  # what the escalation loop writes
        session.add(TicketEvent(ticket_id=ticket_id, kind=EventKind.ESCALATED.value, message_key="escalated:t:1",
                                ts=utcnow(), note="dispatch deadline passed; notified: community T1/D1/C1"))
    rows = _rows(sessions, event="ticket_escalated")
    assert len(rows) == 1 and json.loads(rows[0].body)["reason"].startswith("dispatch deadline passed")
    with sessions() as session:
        session.begin()
        session.add(TicketEvent(ticket_id=ticket_id, kind=EventKind.ESCALATED.value, message_key="escalated:t:2",
                                ts=utcnow(), note="rolled back"))
        session.flush()  # queued inside this transaction ...
        assert len(session.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "ticket_escalated")
                                   ).all()) == 2
        session.rollback()  # ... and gone with it
    assert len(_rows(sessions, event="ticket_escalated")) == 1


def test_the_case_loop_escalation_is_sent(tmp_path: Path, receiver: WebhookReceiver) -> None:
    from datetime import timedelta

    from pipeline.tickets.deadlines import CaseContext
    from pipeline.tickets.escalation import run_pass
    from pipeline.tickets.models import Ticket

    site = _site(tmp_path, None, [_target(receiver.url, events=["ticket_overdue", "ticket_escalated"])])
    sessions = _store(site)
    ticket_id = _open(sessions, camera="cam1", hazard="fire")
    now = time.time()
    with sessions() as session, session.begin():  # a case whose verify deadline passed 2 h ago
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        ticket.due_stage, ticket.due_at = "verify", utcnow() - timedelta(hours=2)
    result = run_pass(sessions, CaseContext(casework=site.casework, prefix="gwtest"), None, now)
    assert result.ran
    assert (result.overdue, result.escalated) == (1, 3)  # 2 h late, a level every 30 min, 3 levels up
    assert WebhookSender(site.api.webhooks, sessions).process_due(time.time()) == 4
    events = [r.json() for r in receiver.received]
    assert [e["event"] for e in events] == ["ticket_overdue"] + ["ticket_escalated"] * 3
    assert all(e["ticket"]["id"] == ticket_id and "deadline" in e["reason"] for e in events)
    assert [e["reason"].rsplit("notified: ", 1)[1].split()[0] for e in events] == [
        "cell", "community", "district", "town"]


@pytest.mark.parametrize("fmt", ["wecom", "dingtalk"])
def test_bot_formats(tmp_path: Path, receiver: WebhookReceiver, fmt: str) -> None:
    receiver.answer = {"errcode": 0, "errmsg": "ok"}
    site = _site(tmp_path, None, [_target(receiver.url + "?key=abc", format=fmt)])
    sessions = _store(site)
    _open(sessions, camera="cam1", hazard="fire")
    sender = WebhookSender(site.api.webhooks, sessions)
    assert sender.process_due(time.time()) == 1
    got = receiver.received[0]
    message = got.json()
    assert message["msgtype"] == "markdown"
    text = message["markdown"]["content" if fmt == "wecom" else "text"]
    assert "New case: Fire at" in text and "T1/D1/C1/G1" in text and SECRET not in text
    query = parse_qs(urlsplit(got.path).query)
    if fmt == "dingtalk":
        ts = query["timestamp"][0]
        mac = hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
        assert query["sign"][0] == base64.b64encode(mac).decode()
    else:
        assert set(query) == {"key"}
    assert _rows(sessions)[0].status == DELIVERED
    receiver.answer = {"errcode": 310000, "errmsg": "sign not match"}
    _open(sessions, camera="cam2", hazard="fire")
    assert sender.process_due(time.time()) == 1
    failed = _rows(sessions, status=PENDING)[0]
    assert failed.last_status == 200 and "errcode 310000" in (failed.last_error or "")


def test_two_replicas_deliver_each_item_once(tmp_path: Path, db_url: str, receiver: WebhookReceiver) -> None:
    receiver.delay = 0.02
    site = _site(tmp_path, db_url, [_target(receiver.url)], batch_size=4)
    producer = _store(site)
    replicas = [WebhookSender(site.api.webhooks, session_factory(init_db(site.database_url()))) for _ in range(2)]
    assert [r.process_due() for r in replicas] == [0, 0]  # connections warm before the race starts
    for i in range(30):
        _open(producer, camera=f"cam{1 + i % 3}")
    start = threading.Barrier(2)
    attempted = Counter[int]()
    errors: list[BaseException] = []

    def run(k: int) -> None:
        start.wait()
        deadline = time.monotonic() + 60
        try:
            while receiver.count() < 30 and time.monotonic() < deadline:
                attempted[k] += replicas[k].process_due()
        except BaseException as exc:  # shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = Counter(r.json()["delivery_id"] for r in receiver.received)
    assert len(ids) == 30 and set(ids.values()) == {1}
    assert sum(attempted.values()) == 30 and min(attempted.values()) > 0  # both replicas worked
    assert {r.status for r in _rows(producer)} == {DELIVERED}


def test_an_expired_lease_is_taken_over(tmp_path: Path, receiver: WebhookReceiver) -> None:
    site = _site(tmp_path, None, [_target(receiver.url)], lease_seconds=120)
    sessions = _store(site)
    _open(sessions)
    now = time.time()
    crashed = claim_due(sessions, ["cases"], "crashed-replica:1", now, 120, 10)
    assert len(crashed) == 1
    sender = WebhookSender(site.api.webhooks, sessions)
    assert sender.process_due(now + 60) == 0  # still leased
    assert sender.process_due(now + 121) == 1
    assert _rows(sessions)[0].status == DELIVERED and receiver.count() == 1


def test_a_claim_leases_at_most_its_limit(tmp_path: Path, db_url: str) -> None:
    site = _site(tmp_path, db_url, [_target(f"http://127.0.0.1:{closed_port()}/hook")])
    sessions = _store(site)
    for _ in range(10):
        _open(sessions)
    other = session_factory(init_db(site.database_url()))
    now = time.time()
    first = claim_due(sessions, ["cases"], "replica-a:1", now, 300, 4)
    second = claim_due(other, ["cases"], "replica-b:1", now, 300, 4)
    assert (len(first), len(second)) == (4, 4)
    assert not {c.id for c in first} & {c.id for c in second}
    assert len(claim_due(other, ["cases"], "replica-b:2", now, 300, 4)) == 2


def test_items_of_a_removed_target_are_dropped_not_kept_for_ever(tmp_path: Path, db_url: str) -> None:
    down = WebhookReceiver(port=closed_port())
    old = _site(tmp_path, db_url, [_target(down.url), _target(down.url, name="gone"),
                                   _target(down.url, name="paused")], poll_interval_seconds=300)
    sessions = _store(old)  # a replica (or an earlier start) with the old config queues for all three
    _open(sessions)
    assert sorted(r.target for r in _rows(sessions, status=PENDING)) == ["cases", "gone", "paused"]
    new = _site(tmp_path, db_url, [_target(down.url), _target(down.url, name="paused", enabled=False)],
                poll_interval_seconds=300)
    with TestClient(create_app(new, start_consumer=False)) as client:
        app: Any = client.app
        sender: WebhookSender = app.state.webhooks
        sender.stop()
        [gone] = _rows(sessions, target="gone")
        assert (gone.status, gone.dropped_reason, gone.attempts) == (DROPPED, TARGET_REMOVED, 0)
        assert _rows(sessions, target="paused")[0].status == PENDING  # disabled, not removed: it waits
        # The old-config replica is still running and queues one more for the removed target.
        _open(sessions)
        assert sender.drop_removed(time.time()) == 1
        login(client)
        page = client.get("/webhooks/deliveries", params={"status": "dropped"}).json()
        assert page["total"] == 2
        assert {(i["target"], i["dropped_reason"]) for i in page["items"]} == {("gone", "target_removed")}
        metrics = client.get("/metrics").text
        assert 'gridwatch_webhook_dropped_total{reason="target_removed",target="gone"} 2.0' in metrics
        assert 'gridwatch_webhook_deliveries{status="dropped",target="gone"} 2.0' in metrics
        r = client.post(f"/webhooks/deliveries/{gone.id}/retry")
        assert r.status_code == 409 and "not configured" in r.json()["detail"]
    # The target comes back: an admin may send its dropped items after all.
    with TestClient(create_app(old, start_consumer=False)) as client:
        client.app.state.webhooks.stop()  # type: ignore[attr-defined]
        login(client)
        r = client.post(f"/webhooks/deliveries/{gone.id}/retry")
        assert r.status_code == 200 and (r.json()["status"], r.json()["dropped_reason"]) == ("pending", None)
