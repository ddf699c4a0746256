"""Cameras that check the fix, service side, end to end over a real Mosquitto: the app publishes a
``CameraCheckRequestV1`` when a camera ticket is resolved; a fake worker (the real one is the worker's
side) answers with ``CameraCheckResultV1``; passed -> checked, failed -> back to in_progress."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.contract.casework import CameraCheckRequestV1, CameraCheckResultV1, NotificationV1
from pipeline.contract.topics import check_result_topic
from pipeline.tickets.api import create_app
from tests.fixtures.auth import bearer, login, user_token

from .casework_support import Subscriber
from .conftest import Publisher, make_alert, make_site, topic_of, wait_for

JPEG = b"\xff\xd8\xff\xe0" + b"the lane is clear" * 10


class FakeWorker:
    """Answers every check request of the test cameras with the outcome set for its ticket (default
    passed), as the worker running the camera would."""

    def __init__(self, host: str, port: int) -> None:
        self.requests: list[CameraCheckRequestV1] = []
        self.outcomes: dict[int, str] = {}
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"worker-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_request
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.connect(host, port)
        self.client.subscribe("gwtest/check/request/+", qos=1)
        self.client.loop_start()
        assert self._ready.wait(10)

    def result(self, req: CameraCheckRequestV1, outcome: str) -> CameraCheckResultV1:
        return CameraCheckResultV1(
            schema_version=1, check_id=req.check_id, ticket_id=req.ticket_id, camera_id=req.camera_id,
            outcome=outcome, checked_at=datetime.now(UTC),
            snapshot_url=f"http://127.0.0.1:8080/evidence/{req.check_id}/snapshot.jpg",
            confidence=0.8 if outcome == "failed" else None, worker_id="fake-worker")

    def _on_request(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        req = CameraCheckRequestV1.model_validate_json(msg.payload)
        assert msg.topic == f"gwtest/check/request/{req.camera_id}"
        self.requests.append(req)
        res = self.result(req, self.outcomes.get(req.ticket_id, "passed"))
        client.publish(check_result_topic("gwtest", req.camera_id), res.to_bytes(), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def client(tmp_path: Path, broker: Any) -> Iterator[TestClient]:
    site = make_site(tmp_path, mqtt_url=broker.url)
    with TestClient(create_app(site)) as c:
        login(c)
        wait_for(lambda: c.app.state.tickets.consumer.ready)  # type: ignore[attr-defined]
        user_token(c.app, "li", "patrol", ["T1/D1/C1/G1"])  # type: ignore[arg-type]
        yield c


@pytest.fixture
def worker(broker: Any) -> Iterator[FakeWorker]:
    w = FakeWorker(broker.host, broker.port)
    yield w
    w.close()


def _resolved_ticket(client: TestClient, publisher: Publisher) -> int:
    alert = make_alert(camera="cam1", hazard="parking", ts=time.time())  # now: no deadline has passed
    publisher.publish(topic_of(alert), alert.to_bytes())
    ticket = wait_for(lambda: client.get(f"/tickets?camera=cam1&since={_iso(alert.ts)}").json()["items"])[0]
    tid: int = ticket["id"]
    for to in ("dispatched", "in_progress"):
        assert client.post(f"/tickets/{tid}/transition", json={"to": to}).status_code == 200
    assert client.post(f"/tickets/{tid}/proof", content=JPEG, headers={"Content-Type": "image/jpeg"}).status_code == 201
    r = client.post(f"/tickets/{tid}/transition", json={"to": "resolved", "note": "car towed"})
    assert r.status_code == 200, r.text
    return tid


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _status(client: TestClient, tid: int) -> str:
    status: str = client.get(f"/tickets/{tid}").json()["status"]
    return status


def test_a_passed_check_moves_the_ticket_to_checked(client: TestClient, publisher: Publisher,
                                                   worker: FakeWorker, tmp_path: Path) -> None:
    tid = _resolved_ticket(client, publisher)
    wait_for(lambda: _status(client, tid) == "checked")
    [req] = worker.requests
    assert (req.ticket_id, req.camera_id, req.hazard.value, req.window_seconds) == (tid, "cam1", "parking", 60.0)
    ticket = client.get(f"/tickets/{tid}").json()
    [check_event] = [e for e in ticket["events"] if e["kind"] == "camera_check"]
    assert check_event["note"] == "camera_check: passed" and check_event["actor"] == "camera:cam1"
    assert check_event["payload"]["snapshot_url"] == f"http://127.0.0.1:8080/evidence/{req.check_id}/snapshot.jpg"
    last = ticket["events"][-1]
    assert (last["from_status"], last["to_status"], last["actor"]) == ("resolved", "checked", "camera:cam1")
    [check] = client.get(f"/tickets/{tid}/camera-checks").json()
    assert (check["check_id"], check["outcome"]) == (req.check_id, "passed") and check["published_at"]
    # The worker's snapshot is evidence of this ticket: served with its scope checks.
    folder = tmp_path / "evidence" / req.check_id
    folder.mkdir(parents=True)
    (folder / "snapshot.jpg").write_bytes(JPEG)
    li = bearer(user_token(client.app, "li", "patrol", ["T1/D1/C1/G1"]))  # type: ignore[arg-type]
    other = bearer(user_token(client.app, "zhao", "patrol", ["T1/D2/C2/G3"]))  # type: ignore[arg-type]
    assert client.get(f"/evidence/{req.check_id}/snapshot.jpg", headers=li).content == JPEG
    assert client.get(f"/evidence/{req.check_id}/snapshot.jpg", headers=other).status_code == 403
    # The same result again (redelivery) changes nothing.
    publisher.publish(check_result_topic("gwtest", "cam1"), worker.result(req, "passed").to_bytes())
    metrics = client.app.state.tickets.metrics  # type: ignore[attr-defined]
    wait_for(lambda: metrics.camera_checks.labels("passed", "duplicate")._value.get() == 1)
    assert len([e for e in client.get(f"/tickets/{tid}").json()["events"] if e["kind"] == "camera_check"]) == 1


def test_a_failed_check_sends_the_ticket_back_to_work(client: TestClient, publisher: Publisher,
                                                     worker: FakeWorker, broker: Any) -> None:
    watcher = Subscriber(broker.host, broker.port, "gwtest/notify/T1/D1/C1/G1/#")
    try:
        worker.outcomes = {tid: "failed" for tid in range(1, 100)}
        tid = _resolved_ticket(client, publisher)
        wait_for(lambda: _status(client, tid) == "in_progress")
        ticket = client.get(f"/tickets/{tid}").json()
        assert [e["note"] for e in ticket["events"] if e["kind"] == "camera_check"] == ["camera_check: failed"]
        assert ticket["resolved_at"] is None and ticket["due_stage"] == "resolve"
        failed = wait_for(lambda: [NotificationV1.model_validate(b) for _, b in watcher.received()
                                   if b["kind"] == "check_failed"])
        assert (failed[0].ticket_id, failed[0].status) == (tid, "in_progress")
        # Rework, fresh proof, resolved again: a second check, which passes.
        worker.outcomes = {}
        jpeg2 = JPEG + b"second visit"
        assert client.post(f"/tickets/{tid}/proof", content=jpeg2, headers={"Content-Type": "image/jpeg"}
                           ).status_code == 201
        assert client.post(f"/tickets/{tid}/transition", json={"to": "resolved", "note": "towed again"}
                           ).status_code == 200
        wait_for(lambda: _status(client, tid) == "checked")
        assert [c["outcome"] for c in client.get(f"/tickets/{tid}/camera-checks").json()] == ["failed", "passed"]
    finally:
        watcher.close()


def test_bad_results_are_dead_lettered_and_change_nothing(client: TestClient, publisher: Publisher) -> None:
    topic = check_result_topic("gwtest", "cam1")
    forged = {"schema_version": 1, "check_id": "chk-1-1-deadbeef", "ticket_id": 1, "camera_id": "cam1",
              "outcome": "passed", "checked_at": "2027-01-15T08:00:00Z"}
    publisher.publish(topic, json.dumps(forged))                                   # no such check
    publisher.publish(topic, json.dumps({**forged, "outcome": "gone"}))            # not an outcome
    publisher.publish(topic, json.dumps({**forged, "detail": "x" * 20_000}))      # over the size bound
    publisher.publish(check_result_topic("gwtest", "cam2"), json.dumps(forged))   # topic != payload camera
    letters = wait_for(lambda: (d := client.get("/dead-letters").json()) and len(d) == 4 and d)
    reasons = " | ".join(d["reason"] for d in letters)
    for part in ("no camera check 'chk-1-1-deadbeef'", "outcome", "exceeds the limit", "topic camera 'cam2'"):
        assert part in reasons, part


def test_the_check_round_trip_on_postgresql(tmp_path: Path, broker: Any, pg_url: str, publisher: Publisher,
                                            worker: FakeWorker) -> None:
    """The same loop on PostgreSQL (advisory-locked case loop, row locks on the check): passed -> checked,
    a redelivered result is a duplicate, and a failed check sends a second ticket back to work."""
    site = make_site(tmp_path, database_url=pg_url, mqtt_url=broker.url)
    with TestClient(create_app(site)) as c:
        login(c)
        wait_for(lambda: c.app.state.tickets.consumer.ready)  # type: ignore[attr-defined]
        user_token(c.app, "li", "patrol", ["T1/D1/C1/G1"])  # type: ignore[arg-type]
        tid = _resolved_ticket(c, publisher)
        wait_for(lambda: _status(c, tid) == "checked")
        [req] = worker.requests
        publisher.publish(check_result_topic("gwtest", "cam1"), worker.result(req, "passed").to_bytes())
        metrics = c.app.state.tickets.metrics  # type: ignore[attr-defined]
        wait_for(lambda: metrics.camera_checks.labels("passed", "duplicate")._value.get() == 1)
        [check] = c.get(f"/tickets/{tid}/camera-checks").json()
        assert (check["outcome"], check["timed_out_at"]) == ("passed", None) and check["published_at"]
        worker.outcomes = {t: "failed" for t in range(1, 100)}
        second = _resolved_ticket(c, publisher)
        wait_for(lambda: _status(c, second) == "in_progress")
        assert [e["note"] for e in c.get(f"/tickets/{second}").json()["events"]
                if e["kind"] == "camera_check"] == ["camera_check: failed"]


def test_a_result_after_the_timeout_is_recorded_late_over_mqtt(client: TestClient, publisher: Publisher,
                                                                 worker: FakeWorker) -> None:
    """The worker answers only after the case loop gave up: the result is stored, counted as late, and the
    ticket stays resolved for the dispatcher it went to."""
    from pipeline.tickets.escalation import run_pass

    worker.client.on_message = lambda c, u, msg: worker.requests.append(  # receives, does not answer yet
        CameraCheckRequestV1.model_validate_json(msg.payload))
    tid = _resolved_ticket(client, publisher)
    [req] = wait_for(lambda: worker.requests)
    st = client.app.state.tickets  # type: ignore[attr-defined]
    later = time.time() + st.case.casework.check_timeout_seconds + 1
    assert run_pass(st.sessions, st.case, st.consumer.publish, later, holder=st.case_loop.holder).checks_timed_out == 1
    assert client.get(f"/tickets/{tid}").json()["manual_check"] is True
    publisher.publish(check_result_topic("gwtest", "cam1"), worker.result(req, "passed").to_bytes())
    metrics = st.metrics
    wait_for(lambda: metrics.camera_checks.labels("passed", "late")._value.get() == 1)
    ticket = client.get(f"/tickets/{tid}").json()
    assert (ticket["status"], ticket["manual_check"]) == ("resolved", True)
    notes = [e["note"] for e in ticket["events"] if e["kind"] == "camera_check"]
    assert notes[0].startswith("camera_check: timeout") and "late: after the timeout" in notes[1]
    [check] = client.get(f"/tickets/{tid}/camera-checks").json()
    assert check["outcome"] == "passed" and check["timed_out_at"] is not None
