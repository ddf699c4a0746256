"""Camera checks (issue 9) through a real Worker: a parked-car clip, the YOLO11n ONNX model, a Mosquitto
broker started for the test, requests and results as MQTT messages, snapshots on disk.

The clip is one frame of car-detection.mp4 with a car at rest (bottom left) held for 15 s and looped, so
the car is parked whenever a check looks. ``np1`` covers the car, ``empty`` the bare asphalt to its right.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.alerts.evidence import EvidenceWriter
from pipeline.alerts.publisher import MqttPublisher
from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.camera_check import CheckResponder, PendingCheck
from pipeline.config import SiteConfig
from pipeline.contract.casework import CameraCheckRequestV1, CameraCheckResultV1
from pipeline.contract.enums import Hazard
from pipeline.contract.topics import check_request_topic
from pipeline.detect.detections import Detections
from pipeline.ingest.frame import Frame
from pipeline.worker import Worker
from tests.fixtures.media import CACHE
from tests.test_mqtt_acl import secure as secure  # the fixture: a Mosquitto with the broker files' ACL

CAR_ZONE = [[0.05, 0.70], [0.50, 0.70], [0.50, 1.00], [0.05, 1.00]]
EMPTY_ZONE = [[0.55, 0.25], [0.95, 0.25], [0.95, 0.90], [0.55, 0.90]]


@pytest.fixture(scope="session")
def parked_only_clip(shared_dir: Path) -> Path:
    """15 s of the car-detection.mp4 frame at 27.6 s (a car at rest), with sensor noise, key frame every 1 s."""
    src = shared_dir / "clips" / "car-detection.mp4"
    if not src.is_file():
        pytest.skip(f"missing clip {src}")
    out = CACHE / "car-parked-only-27.6-15.mp4"
    if out.is_file() and out.stat().st_size > 0:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.{uuid.uuid4().hex}.part.mp4")
    rng = np.random.default_rng(0)
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        held = next(f.to_ndarray(format="bgr24") for f in inp.decode(stream)
                    if f.time is not None and f.time >= 27.6)
    with av.open(str(tmp), "w") as dst:
        outs = dst.add_stream("libx264", rate=10)
        outs.width, outs.height, outs.pix_fmt = held.shape[1], held.shape[0], "yuv420p"
        outs.options = {"g": "10", "keyint_min": "10", "sc_threshold": "0", "bf": "0", "preset": "veryfast"}
        for _ in range(150):
            img = np.clip(held + rng.normal(0, 2.0, held.shape), 0, 255).astype(np.uint8)
            for pkt in outs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                dst.mux(pkt)
        for pkt in outs.encode():
            dst.mux(pkt)
    tmp.replace(out)
    return out


def _site(tmp_path: Path, mqtt_url: str, clip: Path, shared_dir: Path) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
            {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}],
        "cameras": [
            {"id": "lot", "url": str(clip), "grid": "G1", "decode": "keyframes",
             "zones": [{"id": "np1", "kind": "no_parking", "polygon": CAR_ZONE},
                       {"id": "empty", "kind": "no_parking", "polygon": EMPTY_ZONE}]},
            {"id": "dead", "url": str(tmp_path / "no-such-clip.mp4"), "grid": "G1",
             "zones": [{"id": "z", "kind": "no_parking", "polygon": CAR_ZONE}]},
            {"id": "off", "url": str(clip), "grid": "G1", "enabled": False, "zones": []},
        ],
        "hazards": {"parking": {"dwell_seconds": 3, "clear_seconds": 30}},
        "detectors": {"coco": {"model": str(shared_dir / "models" / "yolo11n-coco.onnx"), "threads": 1}},
        "mqtt": {"url": mqtt_url, "topic_prefix": "gw"},
        "api": {"evidence_dir": str(tmp_path / "evidence"), "public_url": "https://tickets.example"},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "reconnect_min_seconds": 0.2,
                   "reconnect_max_seconds": 1},
    })


class ServiceSide:
    """The ticket service's end of the check topics: publishes requests, collects results."""

    def __init__(self, host: str, port: int) -> None:
        self.results: dict[str, CameraCheckResultV1] = {}
        self.topics: dict[str, str] = {}
        self.duplicates = 0
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"svc-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *_: c.subscribe("gw/check/result/+", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        result = CameraCheckResultV1.model_validate_json(msg.payload)
        self.duplicates += result.check_id in self.results
        self.results[result.check_id] = result
        self.topics[result.check_id] = msg.topic

    def request(self, camera_id: str, zone_id: str | None, window_seconds: float, hazard: str = "parking",
                topic_camera: str | None = None) -> str:
        check_id = f"chk-{uuid.uuid4().hex[:10]}"
        req = CameraCheckRequestV1(schema_version=1, check_id=check_id, ticket_id=7,
                                   incident_id=f"{camera_id}-{zone_id or 'frame'}-{hazard}-1796000000-1",
                                   camera_id=camera_id, zone_id=zone_id, hazard=hazard,
                                   window_seconds=window_seconds, requested_at=datetime.now(UTC))
        self.client.publish(check_request_topic("gw", topic_camera or camera_id), req.to_bytes(), qos=1)
        return check_id

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def running(tmp_path: Path, shared_dir: Path, parked_only_clip: Path,
            mosquitto: Any) -> Iterator[tuple[Worker, ServiceSide]]:
    broker = mosquitto()
    worker = Worker(_site(tmp_path, broker.url, parked_only_clip, shared_dir), worker_id="w-check")
    worker.checks.grace_seconds = 4.0  # the dead camera's check gives up soon
    worker.start()
    service = ServiceSide(broker.host, broker.port)
    _wait(lambda: worker.checks._client.is_connected(), 15, "the check responder's connection")
    time.sleep(0.5)  # its subscription
    yield worker, service
    service.close()
    worker.stop()


@pytest.mark.integration
def test_checks_judge_the_zone_through_its_rule(running: tuple[Worker, ServiceSide], tmp_path: Path) -> None:
    worker, service = running
    parked = service.request("lot", "np1", window_seconds=25)
    empty = service.request("lot", "empty", window_seconds=4)
    no_zone = service.request("lot", "no-such-zone", window_seconds=4)
    no_camera = service.request("no-such-camera", "np1", window_seconds=4)
    disabled = service.request("off", None, window_seconds=4)
    no_rule = service.request("lot", "np1", window_seconds=4, hazard="fire")
    dead = service.request("dead", "z", window_seconds=2)
    mismatch = service.request("lot", "np1", window_seconds=4, topic_camera="dead")
    ids = [parked, empty, no_zone, no_camera, disabled, no_rule, dead, mismatch]
    _wait(lambda: all(i in service.results for i in ids), 60, f"every result ({service.results})")
    r = service.results

    assert r[parked].outcome == "failed", r[parked]
    confidence = r[parked].confidence
    assert confidence is not None and confidence > 0.3
    assert r[empty].outcome == "passed", r[empty]
    assert r[empty].confidence is None
    for check_id, words in ((no_zone, "unknown zone 'no-such-zone'"), (no_camera, "unknown camera"),
                            (disabled, "disabled"), (no_rule, "no fire rule"), (dead, "no frames"),
                            (mismatch, "differs from the topic")):
        assert r[check_id].outcome == "unavailable", r[check_id]
        assert words in (r[check_id].detail or ""), r[check_id]
        assert r[check_id].snapshot_url is None
    assert service.topics[parked] == "gw/check/result/lot" and service.topics[no_camera] == \
        "gw/check/result/no-such-camera"
    assert {x.worker_id for x in r.values()} == {"w-check"} and {x.ticket_id for x in r.values()} == {7}

    # Fresh snapshots under the incident's evidence folder, at the URL the result names.
    for check_id in (parked, empty):
        name = f"check-{check_id}.jpg"
        incident = f"lot-{'np1' if check_id == parked else 'empty'}-parking-1796000000-1"
        assert r[check_id].snapshot_url == f"https://tickets.example/evidence/{incident}/{name}"
        img = cv2.imread(str(tmp_path / "evidence" / incident / name))
        assert img is not None and img.shape[:2] == (432, 768)
    assert worker.checks.outcomes == {"passed": 1, "failed": 1, "unavailable": 6}
    assert worker.checks.pending() == [] and service.duplicates == 0
    worker.publish_health()  # the Prometheus gauges follow
    sample = worker.metrics.registry.get_sample_value
    assert [sample("gridwatch_camera_checks", {"worker": "w-check", "outcome": o})
            for o in ("passed", "failed", "unavailable")] == [1.0, 1.0, 6.0]
    assert sample("gridwatch_camera_checks_running", {"worker": "w-check"}) == 0.0


@pytest.mark.integration
def test_one_check_per_zone_and_redelivery_ignored(running: tuple[Worker, ServiceSide]) -> None:
    worker, service = running
    first = service.request("lot", "empty", window_seconds=6)
    _wait(lambda: worker.checks.pending() == [first], 10, "the first check running")
    second = service.request("lot", "empty", window_seconds=6)
    _wait(lambda: second in service.results, 10, "the refused second check")
    assert service.results[second].outcome == "unavailable"
    assert first in (service.results[second].detail or "")
    # The broker redelivers the first request (QoS 1): it must not start a second run.
    payload = json.dumps({"schema_version": 1, "check_id": first, "ticket_id": 7,
                          "incident_id": "lot-empty-parking-1796000000-1", "camera_id": "lot", "zone_id": "empty",
                          "hazard": "parking", "window_seconds": 6, "requested_at": "2026-12-01T00:00:00Z"})
    service.client.publish("gw/check/request/lot", payload, qos=1)
    service.client.publish("gw/check/request/lot", b"{not json", qos=1)
    _wait(lambda: first in service.results, 30, "the first check's result")
    time.sleep(1.5)
    assert service.results[first].outcome == "passed"
    assert service.duplicates == 0 and worker.checks.pending() == []
    assert worker.checks.rejected == 1
    worker.publish_health()
    assert worker.metrics.registry.get_sample_value("gridwatch_camera_checks_refused", {"worker": "w-check"}) == 1.0


# -- the decision, frame by frame: the real parking rule on given detections, real Unix timestamps ------

T0 = 1_796_000_000.0
CAR = Detections.from_arrays([[40.0, 260.0, 200.0, 350.0]], [0.8], [2], {2: "car"})  # inside np1


@dataclass
class Bench:
    """A CheckResponder over one camera's real analyzer, publishing into an unstarted publisher's outbox."""

    analyzer: CameraAnalyzer
    publisher: MqttPublisher
    checks: CheckResponder
    seq: int = 0

    def frame(self, ts: float, car: bool, detections: dict[str, Detections] | None = None) -> None:
        """Analyse one frame (a car in np1, nothing, or ``detections``) and show it to the checks, as the worker
        does."""
        self.seq += 1
        frame = Frame("cam1", np.zeros((360, 640, 3), np.uint8), ts=ts, pts=ts - T0, seq=self.seq, keyframe=True)
        self.analyzer.analyze(frame, detections or {"coco": CAR if car else Detections.empty()})
        self.checks.observe("cam1", frame, self.analyzer)

    def results(self) -> list[CameraCheckResultV1]:
        self.checks._pool.submit(lambda: None).result(5)  # results are written by the checks' own thread
        return [CameraCheckResultV1.model_validate_json(i.payload) for i in self.publisher.outbox.peek(100)]

    def request(self, window_seconds: float, now: float, zone_id: str | None = "np1",
                hazard: Hazard = Hazard.PARKING) -> PendingCheck:
        req = CameraCheckRequestV1(schema_version=1, check_id=f"c{self.seq}-{int(now)}", ticket_id=3,
                                   incident_id="cam1-np1-parking-1796000000-1", camera_id="cam1", zone_id=zone_id,
                                   hazard=hazard, window_seconds=window_seconds,
                                   requested_at=datetime.fromtimestamp(now, UTC))
        check = self.checks.submit(req, now=now)
        assert check is not None
        return check


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    yield from _bench(tmp_path)


def _bench(tmp_path: Path, site_hazards: dict[str, Any] | None = None, detectors: dict[str, Any] | None = None,
           **camera: Any) -> Iterator[Bench]:
    site = SiteConfig.model_validate({
        "grid": [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
            {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}],
        "cameras": [{"id": "cam1", "url": "unused.mp4", "grid": "G1",
                     "zones": [{"id": "np1", "kind": "no_parking", "polygon": CAR_ZONE}], **camera}],
        "hazards": site_hazards or {"parking": {"dwell_seconds": 3, "clear_seconds": 30}},
        "mqtt": {"url": "mqtt://127.0.0.1:9"},
        "api": {"evidence_dir": str(tmp_path / "ev")},
        **({"detectors": detectors} if detectors else {}),
    })
    analyzer = CameraAnalyzer(site, site.cameras[0])
    publisher = MqttPublisher(site.mqtt, tmp_path / "outbox.db", "w-unit")  # never started: results stay queued
    checks = CheckResponder(site, "t-checks", {"cam1": analyzer}, publisher, EvidenceWriter(tmp_path / "ev"),
                            lambda incident, name: f"http://api/evidence/{incident}/{name}", "w-unit",
                            grace_seconds=5)
    yield Bench(analyzer, publisher, checks)
    checks._pool.shutdown()
    publisher.outbox.close()


def test_a_car_still_parked_fails_and_older_frames_do_not_count(bench: Bench) -> None:
    for i in range(10):  # parked since T0: ripe (dwell 3 s) long before the check
        bench.frame(T0 + i, car=True)
    check = bench.request(window_seconds=30, now=T0 + 10)
    bench.frame(T0 + 9.5, car=True)  # captured before the request arrived
    assert check.frames == 0 and bench.results() == []
    bench.frame(T0 + 11, car=True)
    [result] = bench.results()
    assert result.outcome == "failed" and result.confidence == 0.8 and result.ticket_id == 3
    assert result.checked_at.timestamp() == T0 + 11
    assert result.snapshot_url == f"http://api/evidence/cam1-np1-parking-1796000000-1/check-{result.check_id}.jpg"
    assert "still there after 1.0 s" in (result.detail or "")
    assert bench.checks.pending() == []


def test_gone_for_the_window_passes_only_at_its_end(bench: Bench) -> None:
    for i in range(10):
        bench.frame(T0 + i, car=True)
    bench.request(window_seconds=5, now=T0 + 10)
    for i in range(10, 15):
        bench.frame(T0 + i, car=False)
    assert bench.results() == []  # T0 + 14 is still inside the window
    bench.frame(T0 + 15, car=False)
    [result] = bench.results()
    assert result.outcome == "passed" and result.confidence is None
    assert result.checked_at.timestamp() == T0 + 15


def test_a_car_arriving_in_the_window_fails_once_it_has_dwelt(bench: Bench) -> None:
    bench.request(window_seconds=20, now=T0)
    for i in range(0, 4):
        bench.frame(T0 + i, car=False)
    for i in range(4, 7):  # arrives at T0 + 4; parked (dwell 3 s) only from T0 + 7
        bench.frame(T0 + i, car=True)
    assert bench.results() == []
    bench.frame(T0 + 7, car=True)
    [result] = bench.results()
    assert result.outcome == "failed"


def test_too_few_frames_by_the_deadline_is_unavailable(bench: Bench) -> None:
    silent = bench.request(window_seconds=10, now=T0)
    bench.checks.sweep(time.monotonic() + 10 + 5 + 1)
    bench.request(window_seconds=10, now=T0 + 100)
    bench.frame(T0 + 101, car=False)
    bench.frame(T0 + 102, car=False)
    bench.checks.sweep(time.monotonic() + 10 + 5 + 1)
    first, second = bench.results()
    assert first.check_id == silent.request.check_id and first.outcome == "unavailable"
    assert first.detail == "no frames within 10 s + 5 s" and first.snapshot_url is None
    assert second.outcome == "unavailable" and "whole window (2 judged)" in (second.detail or "")
    assert second.snapshot_url is not None  # the last frame it had
    assert bench.checks.outcomes == {"passed": 0, "failed": 0, "unavailable": 2}


def test_a_whole_frame_fire_rule_is_read_the_same_way(tmp_path: Path) -> None:
    """Not only parking: the fire rule (whole frame, smoke boxes, k-of-n) through the same lifecycle fields."""
    smoke = {"fire": Detections.from_arrays([[100.0, 50.0, 300.0, 200.0]], [0.7], [1], {1: "smoke"})}
    none = {"fire": Detections.empty()}
    fire = {"fire": {"detector": "fire", "classes": ["fire", "smoke"], "confirm_k": 2, "confirm_n": 3,
                     "dwell_seconds": 0, "min_flicker": 0, "confirm_model": None}}
    # The model is never loaded: the test hands the rule its detections.
    for b in _bench(tmp_path, fire, {"fire": {"model": "fire.onnx"}}, zones=[], hazards=["fire"]):
        b.request(window_seconds=10, now=T0, zone_id=None, hazard=Hazard.FIRE)
        b.frame(T0 + 1, False, smoke)
        b.frame(T0 + 2, False, none)
        assert b.results() == []  # one smoky frame of three is not confirmed (confirm_k 2)
        b.frame(T0 + 3, False, smoke)
        [failed] = b.results()
        assert failed.outcome == "failed" and failed.confidence == 0.7
        b.request(window_seconds=5, now=T0 + 10, zone_id=None, hazard=Hazard.FIRE)
        for i in range(11, 16):
            b.frame(T0 + i, False, none)
        assert [r.outcome for r in b.results()] == ["failed", "passed"]


# -- with the broker's logins and ACL (gridwatch mqtt-acl) ------------------------------------------------

@pytest.mark.integration
def test_round_trip_with_logins_and_acl(secure: Any, tmp_path: Path) -> None:
    """The service's login asks, the worker's login answers; a patrol login cannot ask at all."""
    s = secure()
    site = s.site
    publisher = MqttPublisher(site.mqtt, tmp_path / "outbox-acl.db", "w-acl")
    publisher.start()
    checks = CheckResponder(site, "t-check-worker", {"cam1": CameraAnalyzer(site, site.cameras[0])}, publisher,
                            EvidenceWriter(tmp_path / "ev"), lambda i, n: f"http://api/{i}/{n}", "w-acl")
    checks.start()
    service, patrol = s.client("tickets", "tickets-pass"), s.client("li", "li-pass")
    try:
        assert publisher.wait_connected(10)
        _wait(lambda: checks._client.is_connected(), 10, "the responder's login")
        time.sleep(0.5)  # its subscription
        service.subscribe("gwtest/check/result/+")

        def ask(client: Any, check_id: str) -> None:
            req = CameraCheckRequestV1(schema_version=1, check_id=check_id, ticket_id=1,
                                       incident_id="cam1-np1-parking-1796000000-1", camera_id="cam1",
                                       zone_id="np1", hazard=Hazard.PARKING, window_seconds=5,
                                       requested_at=datetime.now(UTC))
            client.publish(check_request_topic("gwtest", "cam1"), req.to_bytes())

        ask(patrol, "from-patrol")
        ask(service, "from-service")
        _wait(lambda: service.received, 15, "the result")
        time.sleep(1.0)  # an answer to the patrol's request would be here by now
        [(topic, payload)] = service.received
        result = CameraCheckResultV1.model_validate_json(payload)
        assert topic == "gwtest/check/result/cam1" and result.check_id == "from-service"
        assert result.outcome == "unavailable" and "unknown zone 'np1'" in (result.detail or "")
    finally:
        checks.stop()
        publisher.stop()


# -- the whole loop: worker alert -> ticket -> resolved -> check request -> worker verdict -> ticket ------

NEXT_STEP = {"received": "dispatched", "verified": "dispatched", "dispatched": "in_progress",
             "in_progress": "resolved"}


@pytest.mark.integration
@pytest.mark.slow
def test_resolved_ticket_with_the_car_still_parked_goes_back_to_in_progress(
        tmp_path: Path, shared_dir: Path, parked_only_clip: Path, mosquitto: Any) -> None:
    from fastapi.testclient import TestClient

    from pipeline.tickets.api import create_app
    from tests.fixtures.auth import login, user_token

    broker = mosquitto()
    site = _site(tmp_path, broker.url, parked_only_clip, shared_dir)
    site = site.model_copy(update={
        "api": site.api.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'tickets.db'}"}),
        "casework": site.casework.model_copy(update={"check_window_seconds": 20.0, "loop_interval_seconds": 1.0})})
    worker = Worker(site, worker_id="w-loop")
    worker.start()
    try:
        with TestClient(create_app(site)) as client:
            login(client)
            user_token(client.app, "li", "patrol", ["T1/D1/C1/G1"])  # type: ignore[arg-type]
            ticket = _wait(lambda: client.get("/tickets").json()["items"], 60, "the parking ticket")[0]
            tid = ticket["id"]
            assert ticket["zone_id"] == "np1"
            while (status := client.get(f"/tickets/{tid}").json()["status"]) != "resolved":
                to = NEXT_STEP[status]
                if to == "resolved":
                    proof = client.post(f"/tickets/{tid}/proof", content=b"\xff\xd8\xff\xe0proof" * 20,
                                        headers={"Content-Type": "image/jpeg"})
                    assert proof.status_code == 201, proof.text
                r = client.post(f"/tickets/{tid}/transition",
                                json={"to": to, "note": "car towed" if to == "resolved" else None})
                assert r.status_code == 200, r.text
            # The car is still there: the worker says failed, the service puts the ticket back in progress.
            _wait(lambda: client.get(f"/tickets/{tid}").json()["status"] == "in_progress", 60,
                  "the ticket back in progress")
            events = client.get(f"/tickets/{tid}").json()["events"]
            check = next(e for e in events if (e.get("note") or "").startswith("camera_check: failed"))
            assert "still there" in check["note"]
            assert worker.checks.outcomes["failed"] == 1
            folder = tmp_path / "evidence" / ticket["incident_id"]
            assert [p.name for p in folder.glob("check-*.jpg")] != []
    finally:
        worker.stop()


@pytest.mark.integration
def test_a_request_sent_while_the_responder_is_away_waits_at_the_broker(running: tuple[Worker, ServiceSide]) -> None:
    """With a given worker id the responder's MQTT session persists: a request published while it is
    disconnected is delivered when it is back (the service sends each request once)."""
    worker, service = running
    client = worker.checks._client
    client.disconnect()
    client.loop_stop()
    check = service.request("lot", "empty", window_seconds=2)
    time.sleep(1.0)
    assert check not in service.results
    client.reconnect()
    client.loop_start()
    _wait(lambda: check in service.results, 30, "the queued request's result")
    assert service.results[check].outcome == "passed"


@pytest.mark.integration
@pytest.mark.slow
def test_resolved_ticket_of_a_cleared_zone_is_checked_by_the_camera(
        tmp_path: Path, shared_dir: Path, parked_only_clip: Path, mosquitto: Any) -> None:
    """passed -> checked through the real parts: the API resolves a ticket of the clip's bare zone, the case
    loop asks over Mosquitto, the Worker re-judges ``empty`` with YOLO11n for the window, answers ``passed``
    with a fresh snapshot, and the service moves the ticket to ``checked``."""
    from fastapi.testclient import TestClient

    from pipeline.tickets.api import create_app
    from pipeline.tickets.payload import AlertIn
    from pipeline.tickets.service import apply_alert
    from tests.fixtures.auth import login, user_token

    broker = mosquitto()
    site = _site(tmp_path, broker.url, parked_only_clip, shared_dir)
    site = site.model_copy(update={
        "api": site.api.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'tickets.db'}"}),
        "casework": site.casework.model_copy(update={"check_window_seconds": 3.0, "loop_interval_seconds": 0.5})})
    worker = Worker(site, worker_id="w-pass")
    worker.start()
    try:
        with TestClient(create_app(site)) as client:
            login(client)
            user_token(client.app, "li", "patrol", ["T1/D1/C1/G1"])  # type: ignore[arg-type]
            st = client.app.state.tickets  # type: ignore[attr-defined]
            # A ticket of the zone the clip shows empty (a car parked there earlier, say): opened as an alert.
            now = time.time()
            alert = json.loads(json.dumps({
                "schema_version": 1, "event": "opened", "incident_id": f"lot-empty-parking-{int(now)}-1",
                "hazard": "parking", "severity": 2, "ts": datetime.fromtimestamp(now, UTC).isoformat(),
                "started_at": datetime.fromtimestamp(now - 60, UTC).isoformat(),
                "camera": {"id": "lot", "name": None},
                "grid": {"path": ["T1", "D1", "C1", "G1"], "names": ["t", "d", "c", "g"], "patrol": None},
                "zone": {"id": "empty", "kind": "no_parking", "name": None}, "confidence": 0.8, "boxes": [],
                "details": {}, "evidence": {"snapshot_url": None, "clip_url": None}}))
            tid = apply_alert(st.sessions, AlertIn.model_validate(alert), ctx=st.case).ticket_id
            _wait(lambda: worker.checks._client.is_connected(), 30, "the check responder's connection")
            time.sleep(0.5)  # its subscription
            for to in ("dispatched", "in_progress"):
                assert client.post(f"/tickets/{tid}/transition", json={"to": to}).status_code == 200
            proof = client.post(f"/tickets/{tid}/proof", content=b"\xff\xd8\xff\xe0proof" * 20,
                                headers={"Content-Type": "image/jpeg"})
            assert proof.status_code == 201, proof.text
            resolved_at = time.time()
            r = client.post(f"/tickets/{tid}/transition", json={"to": "resolved", "note": "car towed"})
            assert r.status_code == 200, r.text
            _wait(lambda: client.get(f"/tickets/{tid}").json()["status"] == "checked", 60, "the ticket checked")
            ticket = client.get(f"/tickets/{tid}").json()
            [event] = [e for e in ticket["events"] if e["kind"] == "camera_check"]
            assert event["note"].startswith("camera_check: passed (parking not seen for") and \
                event["actor"] == "camera:lot"
            last = ticket["events"][-1]
            assert (last["from_status"], last["to_status"], last["actor"]) == ("resolved", "checked", "camera:lot")
            [check] = client.get(f"/tickets/{tid}/camera-checks").json()
            name = f"check-{check['check_id']}.jpg"
            assert (check["outcome"], check["window_seconds"], check["timed_out_at"]) == ("passed", 3.0, None)
            assert check["snapshot_url"] == f"https://tickets.example/evidence/{alert['incident_id']}/{name}"
            snapshot = tmp_path / "evidence" / alert["incident_id"] / name
            assert snapshot.stat().st_mtime >= resolved_at  # taken for this check
            img = cv2.imread(str(snapshot))
            assert img is not None and img.shape[:2] == (432, 768)
            # Served as the ticket's evidence to the patrol user of its cell.
            li = {"Authorization": f"Bearer {user_token(client.app, 'li', 'patrol', [])}"}  # type: ignore[arg-type]
            served = client.get(f"/evidence/{alert['incident_id']}/{name}", headers=li)
            assert served.status_code == 200 and served.content == snapshot.read_bytes()
            assert worker.checks.outcomes["passed"] == 1
    finally:
        worker.stop()
