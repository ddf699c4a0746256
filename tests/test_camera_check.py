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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.config import SiteConfig
from pipeline.contract.casework import CameraCheckRequestV1, CameraCheckResultV1
from pipeline.contract.topics import check_request_topic
from pipeline.worker import Worker
from tests.fixtures.media import CACHE

pytestmark = pytest.mark.integration

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
