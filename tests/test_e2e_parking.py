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
from dataclasses import dataclass
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
from tests.fixtures.auth import admin_get

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# No car stops in car-detection.mp4, so scripts/make_demo_media.py holds the frame at 27.6 s (a car at the
# bottom-left) for 20 s; this zone covers where that car rests (see tests/analyze/record_sequence.py).
PARKING_ZONE = [[0.05, 0.70], [0.50, 0.70], [0.50, 1.00], [0.05, 1.00]]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def parked_clip(shared_dir: Path) -> Path:
    """car-detection.mp4 from 20 s on, with the car at rest from 7.6 s to 27.6 s (30 s long, key frame every 1 s).

    Starting at 20 s of the source keeps each test's wait for the first alert short (the car parks 7.6 s into
    the stream instead of 27.6 s).
    """
    from tests.fixtures.media import CACHE
    from tests.scripts_loader import load_script

    mod = load_script("make_demo_media")
    out = CACHE / "car-parks-27.6-20-gop1-from20.mp4"
    if not out.is_file():
        mod.write_held_clip(shared_dir / "clips" / "car-detection.mp4", out, 27.6, 20.0, 1.0, start=20.0)
    return Path(out)


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
    return admin_get(url)  # every route needs a login (tests/fixtures/auth.py)


@dataclass
class Stack:
    """A running deployment: Mosquitto, the RTSP camera, the ticket API, a patrol client and a worker."""

    broker: Any
    site: SiteConfig
    base: str
    listener: AlertListener
    worker: Worker


@pytest.fixture
def stack(tmp_path: Path, shared_dir: Path, parked_clip: Path, rtsp_server: Any, mosquitto: Any,
          api_server: Callable[[SiteConfig], str]) -> Iterator[Stack]:
    broker = mosquitto()
    server = rtsp_server({"lot": parked_clip})
    site = make_site(tmp_path, server.url("lot"), broker.url, shared_dir)
    base = api_server(site)
    listener = AlertListener(broker.host, broker.port, "gw/alerts/T01/D01/C01/G001/#")
    worker = Worker(site, worker_id="w-e2e")
    worker.start()
    stack = Stack(broker, site, base, listener, worker)
    yield stack
    stack.worker.stop()  # a test may have replaced the worker (restart)
    listener.close()


def test_parking_clip_to_one_ticket_with_evidence(stack: Stack) -> None:
    base, listener = stack.base, stack.listener
    tickets = wait_for(lambda: _get(f"{base}/tickets").json()["items"], 90, "a ticket")
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

    # The clip loops (30 s): the car is gone for ~10 s (< clear_seconds) and parks again while the
    # incident is still open - that must not open a second incident or ticket.
    time.sleep(30)
    assert _get(f"{base}/tickets").json()["total"] == 1
    assert len(listener.events("opened")) == 1
    cams = _get(f"{base}/cameras").json()
    assert any(c["id"] == "lot-1" and (c.get("health") or {}).get("state") == "streaming" for c in cams), cams


def test_broker_down_while_alert_fires_delivers_once_after_restart(stack: Stack) -> None:
    base, listener, worker = stack.base, stack.listener, stack.worker
    wait_for(lambda: worker.publisher.connected, 15, "worker connected")
    stack.broker.stop()  # the car comes to rest ~8 s into the stream; the alert fires with no broker
    wait_for(lambda: worker.incidents_emitted >= 1, 90, "the parking incident")
    time.sleep(2)
    assert worker.publisher.stats()["pending"] >= 1, "the alert should wait in the outbox"
    assert _get(f"{base}/tickets").json()["total"] == 0
    stack.broker.start()
    tickets = wait_for(lambda: _get(f"{base}/tickets").json()["items"], 60, "the ticket after restart")
    wait_for(lambda: listener.events("opened"), 30, "the alert at the patrol client")
    time.sleep(3)  # give any duplicate delivery time to show up
    assert len(tickets) == 1 and _get(f"{base}/tickets").json()["total"] == 1
    assert len({p["incident_id"] for p in listener.events("opened")}) == 1
    assert worker.publisher.stats()["pending"] == 0


def test_worker_restart_continues_the_open_incident(stack: Stack) -> None:
    """kill/restart of the worker while a car is parked: the new process takes the incident back from its
    journal (no second ``opened`` on MQTT, the same incident id goes on with ``updated``), one ticket."""
    base, listener = stack.base, stack.listener
    opened = wait_for(lambda: listener.events("opened"), 90, "the parking alert")
    incident_id = opened[0]["incident_id"]
    stack.worker.stop()
    stack.worker = Worker(stack.site, worker_id="w-e2e")
    stack.worker.start()
    # The new worker's stream starts at the beginning: the car is at rest again from 7.6 s (< clear_seconds).
    wait_for(lambda: any(p["incident_id"] == incident_id for p in listener.events("updated")), 60,
             "the restored incident's update")
    time.sleep(20)
    assert [p["incident_id"] for p in listener.events("opened")] == [incident_id]
    assert _get(f"{base}/tickets").json()["total"] == 1
