"""A real worker runs a scene: FILE camera (a stretch of the corridor clip the model never saw, the unseen bag
on the floor from 5 s), Mosquitto, the scene's alert published; the worker also collects crops for labelling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.config import SiteConfig
from pipeline.worker import Worker
from tests.fixtures.scene_media import SCENE_BOX, TEST_BLOCKED, SceneMedia
from tests.tickets.conftest import GRID

pytestmark = pytest.mark.slow
FPS = 2


def _wait(pred: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.2)
    return pred()


def _clip(media: SceneMedia, path: Path) -> Path:
    """Clip seconds 95-125 (bag from 100 s) at ``FPS``: 30 s, the bag from 5 s."""
    frames = [img for t, img in media.frames if TEST_BLOCKED[0] - 5 <= t < TEST_BLOCKED[0] + 25]
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), float(FPS), (w, h))
    for img in frames:
        for _ in range(FPS):
            out.write(img)
    out.release()
    return path


def test_worker_publishes_the_scene_alert_and_collects_crops(tmp_path: Path, scene_media: SceneMedia,
                                                             floor_model: Path, mosquitto: Any) -> None:
    broker = mosquitto()
    clip = _clip(scene_media, tmp_path / "corridor-unseen.mp4")
    site = SiteConfig.model_validate({
        "grid": GRID,
        "cameras": [{"id": "cam1", "url": str(clip), "grid": "G1", "decode": "interval", "max_fps": 2}],
        "scenes": [{"id": "floor", "name": "通道堆物", "camera": "cam1", "box": SCENE_BOX,
                    "states": ["clear", "blocked"], "bad_states": ["blocked"], "model": str(floor_model),
                    "data_dir": str(tmp_path / "floor"), "dwell_seconds": 5, "confirm_k": 2, "confirm_n": 3,
                    "interval_seconds": 1, "collect_every_seconds": 3}],
        "mqtt": {"url": broker.url},
        "api": {"evidence_dir": str(tmp_path / "ev")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "health_interval_seconds": 1},
    })
    got: list[dict[str, Any]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    client.connect(broker.host, broker.port)
    client.subscribe("gridwatch/alerts/#", qos=1)
    client.loop_start()
    worker = Worker(site, worker_id="w-scene")
    started = time.monotonic()
    worker.start()
    try:
        opened = _wait(lambda: next((a for a in got if a["event"] == "opened"), None), 40)
        took = time.monotonic() - started
    finally:
        worker.stop()
        client.loop_stop()
        client.disconnect()
    assert opened, f"no scene alert; got {got}"
    assert opened["hazard"] == "scene" and opened["zone"]["id"] == "floor"
    assert opened["details"]["scene_name"] == "通道堆物" and opened["details"]["state"] == "blocked"
    assert opened["incident_id"].startswith("cam1-floor-scene-")
    assert took >= 5 + 5 - 1, took  # not before the bag (from 5 s) has stood for the dwell (5 s)
    held = datetime.fromisoformat(opened["ts"]) - datetime.fromisoformat(opened["started_at"])
    assert held.total_seconds() >= 5 - 1e-3
    crops = list((tmp_path / "floor" / "crops").glob("*.jpg"))
    assert len(crops) >= 2, crops  # every 3 s while the worker ran
