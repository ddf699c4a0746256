"""Scenes and metrics follow run-time cameras: a scene whose camera is not in the site YAML waits (log line,
``gridwatch_scene_waiting``), starts when the camera is added over the API and waits again when it is deleted;
a removed camera leaves no per-camera metric series (real worker, Mosquitto, SQLite ticket store, real clip and
a real scene model)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.config import SiteConfig
from pipeline.contract.topics import camera_config_topic
from pipeline.scenes.rule import StateRule
from pipeline.tickets.api import create_app
from pipeline.tickets.users import Role
from pipeline.worker import Worker
from tests.fixtures.auth import bearer, user_token
from tests.scenes.conftest import brightness_model
from tests.test_camera_runtime import _message

BIN = {"id": "bin", "name": "垃圾满溢", "camera": "yard", "box": [0.0, 0.5, 1.0, 1.0], "states": ["clear", "blocked"],
       "bad_states": ["blocked"], "interval_seconds": 0.5}


def _site(tmp_path: Path, mqtt_url: str, gate_url: str) -> SiteConfig:
    (tmp_path / "bin").mkdir(exist_ok=True)
    model = brightness_model(tmp_path / "bin" / "model.onnx")
    return SiteConfig.model_validate({
        "grid": [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
            {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}],
        "cameras": [{"id": "gate", "url": gate_url, "grid": "G1", "decode": "keyframes"}],
        "scenes": [{**BIN, "model": str(model), "data_dir": str(tmp_path / "bin")}],
        "mqtt": {"url": mqtt_url, "topic_prefix": "rt"},
        "api": {"database_url": f"sqlite:///{tmp_path}/tickets.db", "evidence_dir": str(tmp_path / "ev")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "health_interval_seconds": 1,
                   "start_spread_seconds": 0, "reconnect_min_seconds": 0.2, "reconnect_max_seconds": 1},
    })


def _wait(pred: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.1)
    return pred()


def _waiting(worker: Worker) -> float | None:
    return worker.metrics.registry.get_sample_value(
        "gridwatch_scene_waiting", {"worker": worker.worker_id, "scene": "bin", "camera": "yard"})


def _analysed(worker: Worker, camera: str) -> float | None:
    return worker.metrics.registry.get_sample_value(
        "gridwatch_camera_frames_analysed", {"worker": worker.worker_id, "camera": camera})


def _scene_rules(worker: Worker, camera: str) -> list[StateRule]:
    slot = worker.slots.get(camera)
    return [r for r in slot.analyzer.rules if isinstance(r, StateRule)] if slot else []


def test_a_waiting_scene_and_removed_metrics_without_broker(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Messages applied by hand to a worker that is not started: the scene waits, starts with its camera and
    waits again; the removed camera's gauges go at once."""
    caplog.set_level(logging.INFO, "pipeline.scenes.waiting")
    worker = Worker(_site(tmp_path, "mqtt://127.0.0.1:1", str(tmp_path / "a.mp4")), worker_id="w-wait")
    worker._stop.set()  # a stopping worker swaps slots but starts no reader
    rt, yard = worker.runtime, {"id": "yard", "url": str(tmp_path / "b.mp4"), "grid": "G1"}
    try:
        assert rt.stats()["scenes_waiting"] == ["bin"] and _waiting(worker) == 1.0
        assert "scene bin: camera 'yard' is not running on this worker" in caplog.text
        assert rt.handle(camera_config_topic("rt", "yard"), _message(yard, 2)) == "applied"
        assert [r.scene.id for r in _scene_rules(worker, "yard")] == ["bin"]
        assert rt.stats()["scenes_waiting"] == [] and _waiting(worker) == 0.0
        assert "scene bin: camera 'yard' is running; the scene is active" in caplog.text
        worker.metrics.update(worker.camera_health(), {})
        assert _analysed(worker, "yard") == 0.0 and _analysed(worker, "gate") == 0.0
        assert rt.handle(camera_config_topic("rt", "yard"), b"") == "removed"
        assert _analysed(worker, "yard") is None and _analysed(worker, "gate") == 0.0  # gate's stay
        assert rt.stats()["scenes_waiting"] == ["bin"] and _waiting(worker) == 1.0
    finally:
        worker.journal.close()
        worker.publisher.outbox.close()


def test_gauges_of_a_camera_missing_from_an_update_are_removed() -> None:
    from pipeline.worker_metrics import WorkerMetrics

    m = WorkerMetrics("w1")
    m.update([{"camera_id": "a", "state": "streaming", "frames_decoded": 3}, {"camera_id": "b"}], {})
    m.update([{"camera_id": "a", "state": "streaming", "frames_decoded": 4}], {})  # b removed meanwhile
    sample = m.registry.get_sample_value
    assert sample("gridwatch_camera_frames_decoded", {"worker": "w1", "camera": "a"}) == 4.0
    assert sample("gridwatch_camera_frames_decoded", {"worker": "w1", "camera": "b"}) is None
    assert sample("gridwatch_camera_streaming", {"worker": "w1", "camera": "b"}) is None


@pytest.mark.integration
def test_a_scene_starts_when_its_camera_is_added_at_run_time(tmp_path: Path, h264_clips: dict[str, Path],
                                                             mosquitto: Any) -> None:
    broker = mosquitto()
    site = _site(tmp_path, broker.url, str(h264_clips["car"]))
    app = create_app(site, start_consumer=False)
    worker = Worker(site, worker_id="w-scene-rt")
    with TestClient(app) as api:
        api.headers.update(bearer(user_token(app, "admin", Role.ADMIN, [])))
        app.state.camera_config.start()
        worker.start()
        try:
            assert worker.runtime.stats()["scenes_waiting"] == ["bin"] and _waiting(worker) == 1.0
            assert _wait(lambda: worker.slots["gate"].frames_analysed >= 1)
            new = {"id": "yard", "url": str(h264_clips["person"]), "grid": "G1", "decode": "keyframes"}
            assert api.post("/cameras", json=new).status_code == 201
            # The scene's rule runs on the new camera's frames: the real model classified a crop.
            assert _wait(lambda: any(r.last.get("state") for r in _scene_rules(worker, "yard"))), \
                [r.state() for r in _scene_rules(worker, "yard")]
            assert _waiting(worker) == 0.0 and worker.runtime.stats()["scenes_waiting"] == []
            assert _wait(lambda: (_analysed(worker, "yard") or 0) >= 1)  # its gauges are reported ...

            assert api.delete("/cameras/yard").status_code == 204
            assert _wait(lambda: "yard" not in worker.slots)
            time.sleep(1.5)  # one more health cycle: the removed camera must not come back in the metrics
            assert _analysed(worker, "yard") is None  # ... and gone with the camera
            assert (_analysed(worker, "gate") or 0) >= 1
            assert _waiting(worker) == 1.0 and worker.runtime.stats()["scenes_waiting"] == ["bin"]
        finally:
            worker.stop()
            app.state.camera_config.stop()


def test_check_requests_for_another_shards_run_time_camera_are_left_to_it(tmp_path: Path) -> None:
    """A sharded worker leaves a check request for a camera of another shard alone, also one the YAML lacks
    (added at run time), and answers one for its own shard's camera it does not run (unavailable)."""
    import paho.mqtt.client as paho

    from pipeline.contract.casework import CameraCheckRequestV1
    from pipeline.contract.topics import check_request_topic
    from pipeline.sharding import ShardSpec, shard_of
    from tests.tickets.casework_support import utc

    site = _site(tmp_path, "mqtt://127.0.0.1:1", str(tmp_path / "a.mp4"))
    worker = Worker(site, worker_id="w-shard", shard=ShardSpec(0, 2))
    ids = [f"cam-{i}" for i in range(20)]
    mine, theirs = (next(c for c in ids if shard_of(c, 2) == s) for s in (0, 1))
    try:
        for n, camera in enumerate((theirs, mine), start=1):
            req = CameraCheckRequestV1(schema_version=1, check_id=f"chk-{n}", ticket_id=n,
                                       incident_id=f"{camera}-z-parking-1796000000-1", camera_id=camera,
                                       zone_id="z", hazard="parking", window_seconds=10,
                                       requested_at=utc(1_796_000_000))
            msg = paho.MQTTMessage(topic=check_request_topic("rt", camera).encode())
            msg.payload = req.to_bytes()
            worker.checks._on_message(worker.checks._client, None, msg)
            answered = sum(worker.checks.outcomes.values())
            assert answered == (0 if camera == theirs else 1), (camera, worker.checks.outcomes)
        assert worker.checks.outcomes["unavailable"] == 1
    finally:
        worker.journal.close()
        worker.publisher.outbox.close()
