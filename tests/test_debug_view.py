"""Live debug view: API -> MQTT -> the camera's worker -> drawn JPEG -> API, over a real Mosquitto."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.config import SiteConfig
from pipeline.debug_view import DebugFrames
from pipeline.detect.detections import Detections
from pipeline.ingest.frame import Frame
from pipeline.tickets.api import create_app
from pipeline.worker import Worker
from tests.fixtures.auth import login

pytestmark = pytest.mark.integration
GRID = [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
    {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}]
ZONE = {"id": "lane", "kind": "no_parking", "polygon": [[0.05, 0.7], [0.5, 0.7], [0.5, 1.0], [0.05, 1.0]]}


def _site(tmp_path: Path, mqtt_url: str, cameras: dict[str, str], coco: Path) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": GRID,
        "cameras": [{"id": cid, "url": url, "grid": "G1", "decode": "keyframes", "zones": [ZONE]}
                    for cid, url in cameras.items()],
        "detectors": {"coco": {"model": str(coco), "input_size": 320, "threads": 1}},
        "mqtt": {"url": mqtt_url},
        "api": {"database_url": f"sqlite:///{tmp_path / 't.db'}", "evidence_dir": str(tmp_path / "ev")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "reconnect_min_seconds": 0.5,
                   "reconnect_max_seconds": 1},
    })


def _wait(pred: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.2)
    return pred()


def test_debug_jpeg_comes_from_the_cameras_worker(tmp_path: Path, shared_dir: Path, h264_clips: dict[str, Path],
                                                   mosquitto: Any) -> None:
    broker = mosquitto()
    site = _site(tmp_path, broker.url, {"lot": str(h264_clips["car"]), "dead": str(tmp_path / "missing.mp4"),
                                        "elsewhere": str(h264_clips["car"])},
                 shared_dir / "models" / "yolo11n-coco.onnx")
    worker = Worker(site, worker_id="w-debug", camera_ids=["lot", "dead"])  # `elsewhere` has no worker here
    worker.start()
    app = create_app(site, start_consumer=False)
    try:
        assert _wait(lambda: cast(int, worker.camera_health()[0]["frames_analysed"]) >= 2, 30)
        # Nobody watched yet: the worker keeps no frame for any camera.
        assert not worker.debug_frames._views
        with TestClient(app) as client:
            login(client)
            r = client.get("/cameras/lot/debug.jpg", params={"timeout": 10})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/jpeg"
            img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.shape == (432, 768, 3)
            # Drawn: the dark state panel on top with white text (header + the parking rule's line) ...
            panel = img[:30]
            assert panel.mean() < 90 and (panel.min(axis=2) > 200).sum() > 50
            # ... and the zone outline (yellow, or red when an incident is open) along its top edge.
            edge = img[int(0.7 * 432) - 2:int(0.7 * 432) + 3, int(0.1 * 768):int(0.45 * 768)].astype(int)
            b, g, r = edge[..., 0], edge[..., 1], edge[..., 2]
            yellow = (g + r) // 2 - b > 60  # a 1 px line: JPEG softens its colour; the asphalt is grey
            red = r - (g + b) // 2 > 60
            assert (yellow | red).sum() > 100
            # Now watched: the worker keeps that camera's latest frame (and only that camera's).
            assert set(worker.debug_frames._views) == {"lot"}
            assert worker.debug.served >= 1

            r = client.get("/cameras/nope/debug.jpg")
            assert r.status_code == 404 and "unknown camera 'nope'" in r.json()["detail"]
            r = client.get("/cameras/dead/debug.jpg", params={"timeout": 10})  # its worker has no frame
            assert r.status_code == 404 and "no analysed frame yet" in r.json()["detail"]
            r = client.get("/cameras/elsewhere/debug.jpg", params={"timeout": 1})  # no worker runs it
            assert r.status_code == 504 and "no worker answered for camera 'elsewhere' within 1 s" in r.json()[
                "detail"]
    finally:
        req = getattr(app.state, "debug_requester", None)
        if req is not None:
            req.stop()
        worker.stop()


def test_frames_are_kept_only_while_watched(shared_dir: Path) -> None:
    site = SiteConfig.model_validate({"grid": GRID, "cameras": [{"id": "c", "url": "x.mp4", "grid": "G1",
                                                                 "zones": [ZONE]}]})
    analyzer = CameraAnalyzer(site, site.cameras[0])
    frames = DebugFrames(watch_seconds=0.3)
    frame = Frame("c", np.full((240, 320, 3), 90, np.uint8), ts=1.8e9 + 0.25, pts=0.25, seq=7, keyframe=True)
    assert not frames.wants("c")
    assert frames.latest("c", wait_s=0.05) is None  # a request marks it watched, but no frame came
    assert frames.wants("c")
    analyzer.analyze(frame, {"coco": Detections.empty()})
    frames.offer(frame, {"coco": Detections.empty()}, analyzer)
    view = frames.latest("c", wait_s=0)
    assert view is not None and view.frame.seq == 7 and view.rules[0]["hazard"] == "parking"
    jpeg = cv2.imdecode(np.frombuffer(view.jpeg(), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg is not None and jpeg.shape == (240, 320, 3)
    time.sleep(0.35)
    assert not frames.wants("c") and "c" not in frames._views  # the frame is released


def test_without_a_broker_the_api_answers_503(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    site = SiteConfig.model_validate({
        "grid": GRID, "cameras": [{"id": "c", "url": "x.mp4", "grid": "G1"}],
        "mqtt": {"url": f"mqtt://127.0.0.1:{port}"},  # nothing listens there
        "api": {"database_url": f"sqlite:///{tmp_path / 't.db'}", "evidence_dir": str(tmp_path / "ev")}})
    app = create_app(site, start_consumer=False)
    try:
        with TestClient(app) as client:
            login(client)
            r = client.get("/cameras/c/debug.jpg")  # the first request waits for the connection (5 s)
            assert r.status_code == 503 and "not connected to the MQTT broker" in r.json()["detail"]
            assert app.state.debug_requester._connect_wait == 0  # later ones answer at once
            r = client.get("/cameras/c/debug.jpg", params={"timeout": 30})
            assert r.status_code == 503
    finally:
        app.state.debug_requester.stop()
