"""End to end: looped parking clip over real RTSP -> ONNX -> parking rule -> Mosquitto -> ticket + evidence.

Everything is real: the GStreamer RTSP server, PyAV ingest, the YOLO11n ONNX model, a Mosquitto broker
started for the test, the FastAPI ticket service on SQLite, and MP4/JPEG evidence on disk.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import uvicorn

from pipeline.config import SiteConfig
from pipeline.tickets.api import create_app
from pipeline.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Where the car comes to rest in car-detection.mp4 (normalised; see tests/analyze for how it was found).
PARKING_ZONE = [[0.30, 0.35], [0.70, 0.35], [0.70, 0.95], [0.30, 0.95]]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_site(tmp_path: Path, rtsp_url: str, mqtt_url: str, shared_dir: Path, **over: Any) -> SiteConfig:
    port = _free_port()
    data: dict[str, Any] = {
        "grid": [{"code": "T01", "name": "Town", "children": [{"code": "D01", "name": "District", "children": [
            {"code": "C01", "name": "Community", "children": [{"code": "G001", "name": "Cell 1"}]}]}]}],
        "cameras": [{"id": "lot-1", "url": rtsp_url, "grid": "G001", "decode": "keyframes",
                     "zones": [{"id": "np1", "kind": "no_parking", "polygon": PARKING_ZONE}]}],
        "hazards": {"parking": {"dwell_seconds": 4, "clear_seconds": 45, "update_interval_seconds": 20}},
        "detectors": {"coco": {"model": str(shared_dir / "models" / "yolo11n-coco.onnx"), "threads": 1}},
        "mqtt": {"url": mqtt_url, "topic_prefix": "gw"},
        "api": {"host": "127.0.0.1", "port": port, "database_url": f"sqlite:///{tmp_path / 'tickets.db'}",
                "evidence_dir": str(tmp_path / "evidence")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "clip_pre_seconds": 3, "clip_post_seconds": 3,
                   "health_interval_seconds": 2, "reconnect_min_seconds": 0.5, "reconnect_max_seconds": 2},
    }
    for k, v in over.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) else v
    return SiteConfig.model_validate(data)


class AlertListener:
    """A patrol worker's MQTT client subscribed to its own cell with a wildcard."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="patrol-g001", clean_session=False)
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, json.loads(m.payload)))
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.connect(host, port)
        self.client.loop_start()

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [p for _, p in self.messages if p.get("event") == kind]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def api_server() -> Iterator[Callable[[SiteConfig], str]]:
    servers: list[uvicorn.Server] = []

    def start(site: SiteConfig) -> str:
        server = uvicorn.Server(uvicorn.Config(create_app(site), host="127.0.0.1", port=site.api.port,
                                               log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        wait_for(lambda: server.started, 30, "API start")
        servers.append(server)
        return f"http://127.0.0.1:{site.api.port}"

    yield start
    for s in servers:
        s.should_exit = True


def _get(url: str) -> Any:
    import httpx

    return httpx.get(url, timeout=10)


def test_parking_clip_to_one_ticket_with_evidence(tmp_path: Path, shared_dir: Path, h264_clips: dict[str, Path],
                                                  rtsp_server: Any, mosquitto: Any,
                                                  api_server: Callable[[SiteConfig], str]) -> None:
    broker = mosquitto()
    server = rtsp_server({"lot": h264_clips["car-detection"]})
    site = make_site(tmp_path, server.url("lot"), broker.url, shared_dir)
    base = api_server(site)
    listener = AlertListener(broker.host, broker.port, "gw/alerts/T01/D01/C01/G001/#")
    worker = Worker(site, worker_id="w-e2e")
    worker.start()
    try:
        tickets = wait_for(lambda: _get(f"{base}/tickets").json() or None, 90, "a ticket")
        assert len(tickets) == 1
        ticket = tickets[0]
        assert ticket["hazard"] == "parking" and ticket["camera_id"] == "lot-1"
        opened = wait_for(lambda: listener.events("opened"), 10, "the MQTT alert")
        topic = next(t for t, p in listener.messages if p.get("event") == "opened")
        assert topic == "gw/alerts/T01/D01/C01/G001/lot-1/parking"
        assert opened[0]["incident_id"] == ticket["incident_id"]

        snap = wait_for(lambda: (r := _get(f"{base}/tickets/{ticket['id']}/evidence/snapshot")).status_code
                        == 200 and r, 10, "snapshot")
        img = cv2.imdecode(np.frombuffer(snap.content, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 100
        clip = wait_for(lambda: (r := _get(f"{base}/tickets/{ticket['id']}/evidence/clip")).status_code
                        == 200 and r, 30, "clip")
        with av.open(io.BytesIO(clip.content)) as container:
            frames = sum(1 for _ in container.decode(video=0))
            duration = float(container.duration or 0) / 1e6
        assert frames >= 10, frames
        assert 2.0 <= duration <= 30.0, duration

        # The clip loops (30 s): the parked car comes back while the incident is still open.
        time.sleep(35)
        assert len(_get(f"{base}/tickets").json()) == 1
        assert len(listener.events("opened")) == 1
        cams = _get(f"{base}/cameras").json()
        assert any(c["id"] == "lot-1" and (c.get("health") or {}).get("state") == "streaming" for c in cams), cams
    finally:
        worker.stop()
        listener.close()
