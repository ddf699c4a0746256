"""Run-time cameras reach a live worker over retained MQTT: a new zone is judged, a removed camera stops, the
other camera's reader is never restarted, a bad message is refused and the camera keeps its config (real
Mosquitto, SQLite ticket store, real clips and the COCO model)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.camera_runtime import camera_owner
from pipeline.config import SiteConfig
from pipeline.contract.topics import camera_config_topic
from pipeline.sharding import ShardSpec, shard_of
from pipeline.tickets.api import create_app
from pipeline.tickets.users import Role
from pipeline.worker import Worker
from tests.fixtures.auth import bearer, user_token

pytestmark = pytest.mark.integration

LANE = {"id": "lane", "kind": "no_parking", "polygon": [[0, 0.4], [1, 0.4], [1, 1], [0, 1]]}


def _site(tmp_path: Path, mqtt_url: str, clips: dict[str, Path], model: Path) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
            {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}],
        "cameras": [{"id": "gate", "url": str(clips["car"]), "grid": "G1", "decode": "keyframes"},
                    {"id": "lobby", "url": str(clips["person"]), "grid": "G1", "decode": "keyframes"}],
        "detectors": {"coco": {"model": str(model), "input_size": 320, "threads": 1}},
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


def _retained(broker: Any, topic: str) -> dict[str, Any] | None:
    """The retained JSON on ``topic`` (None when there is none within 5 s)."""
    import json

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[dict[str, Any]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        return _wait(lambda: got and got[-1], 5) or None
    finally:
        client.loop_stop()
        client.disconnect()


def test_zone_change_and_removal_reach_the_live_worker(tmp_path: Path, shared_dir: Path,
                                                       h264_clips: dict[str, Path], mosquitto: Any) -> None:
    broker = mosquitto()
    site = _site(tmp_path, broker.url, h264_clips, shared_dir / "models" / "yolo11n-coco.onnx")
    app = create_app(site, start_consumer=False)
    worker = Worker(site, worker_id="w-rt")
    with TestClient(app) as api:
        api.headers.update(bearer(user_token(app, "admin", Role.ADMIN, [])))
        app.state.camera_config.start()
        worker.start()
        try:
            runtime = worker.runtime
            # The seeded copy of the YAML arrives first: same entries, so nothing restarts.
            assert _wait(lambda: runtime.outcomes["unchanged"] >= 2), runtime.stats()
            gate_reader, lobby_reader = worker.slots["gate"].reader, worker.slots["lobby"].reader
            assert _wait(lambda: worker.slots["gate"].frames_analysed >= 1)
            assert not worker.slots["gate"].analyzer.rules  # no zone, no rule yet

            t0 = time.monotonic()
            r = api.put("/cameras/gate/zones", json={"zones": [LANE]})
            assert r.status_code == 200, r.text
            assert _wait(lambda: runtime.outcomes["applied"] >= 1), runtime.stats()
            applied_s = time.monotonic() - t0
            gate = worker.slots["gate"]
            assert gate.reader is not gate_reader and not gate_reader.running  # only gate restarted
            assert worker.slots["lobby"].reader is lobby_reader and lobby_reader.running
            assert [z.id for z in gate.analyzer.camera.zones] == ["lane"]
            # The new analyzer judges the new zone on the new reader's frames.
            assert _wait(lambda: any(s["zone"] == "lane" and s["last_judged"] is not None
                                     for s in gate.analyzer.rule_states())), gate.analyzer.rule_states()
            print(f"zone change: applied {applied_s:.2f} s, first judged {time.monotonic() - t0:.2f} s after the PUT")

            # A bad message for gate is refused; gate keeps running its last good config.
            refused = runtime.outcomes["refused"]
            info = app.state.camera_config._client.publish(camera_config_topic("rt", "gate"), b'{"nope": 1}',
                                                          qos=1, retain=False)
            info.wait_for_publish(5)
            assert _wait(lambda: runtime.outcomes["refused"] == refused + 1)
            assert worker.slots["gate"] is gate and gate.reader.running and "gate" in str(runtime.last_error)
            assert (worker.metrics.registry.get_sample_value(
                "gridwatch_camera_config_messages_total", {"worker": "w-rt", "outcome": "refused"}) or 0) >= 1

            assert api.delete("/cameras/lobby").status_code == 204
            assert _wait(lambda: "lobby" not in worker.slots), runtime.stats()
            assert _wait(lambda: not lobby_reader.running)
            stopped = _retained(broker, "rt/health/lobby")
            assert stopped is not None and stopped["state"] == "stopped", stopped  # last word: stopped
            assert worker.slots["gate"] is gate and gate.reader.running  # gate untouched by lobby's removal
            assert "lobby" not in worker.debug.cameras and "lobby" not in worker.checks.analyzers

            # A camera added at run time starts without a worker restart.
            new = {"id": "yard", "url": str(h264_clips["person"]), "grid": "G1", "decode": "keyframes"}
            assert api.post("/cameras", json=new).status_code == 201
            assert _wait(lambda: "yard" in worker.slots and worker.slots["yard"].frames_analysed >= 1)
            # The debug view knows the new camera and its worker answers for it.
            debug = _wait(lambda: (r := api.get("/cameras/yard/debug.jpg", params={"timeout": 5})).status_code == 200
                          and r, 20)
            assert debug and debug.content[:2] == b"\xff\xd8", "no debug picture of a camera added at run time"
            assert worker.slots["gate"] is gate
        finally:
            worker.stop()
            app.state.camera_config.stop()


def test_a_worker_keeps_only_its_shards_cameras() -> None:
    owns = camera_owner(None, ShardSpec(1, 3))
    ids = [f"cam-{i}" for i in range(30)]
    assert [c for c in ids if owns(c)] == [c for c in ids if shard_of(c, 3) == 1]
    assert camera_owner(["a"], None)("a") and not camera_owner(["a"], None)("b")
    assert camera_owner(None, None)("anything")


def _message(camera: dict[str, Any], revision: int) -> bytes:
    from datetime import UTC, datetime

    from pipeline.contract.camera_config import CameraConfigV1

    return CameraConfigV1(schema_version=1, camera_id=camera["id"], revision=revision,
                          ts=datetime.fromtimestamp(1_796_000_000, tz=UTC), camera=camera).to_bytes()


def test_messages_are_applied_by_revision_and_bad_ones_refused(tmp_path: Path) -> None:
    from pipeline.contract.camera_config import CameraIndexV1
    from pipeline.contract.topics import camera_index_topic

    clips = {"car": tmp_path / "a.mp4", "person": tmp_path / "b.mp4"}  # never opened: readers are not started
    worker = Worker(_site(tmp_path, "mqtt://127.0.0.1:1", clips, tmp_path / "absent.onnx"), worker_id="w-unit")
    worker._stop.set()  # a stopping worker swaps slots but starts no reader
    rt, topic = worker.runtime, camera_config_topic("rt", "gate")
    try:
        gate = {"id": "gate", "url": str(clips["car"]), "grid": "G1", "decode": "keyframes"}
        assert rt.handle(topic, _message(gate, 3)) == "unchanged"  # the seeded copy of the YAML
        lobby_slot = worker.slots["lobby"]
        assert rt.handle(topic, _message({**gate, "zones": [LANE]}, 4)) == "applied"
        assert rt.handle(topic, _message({**gate, "zones": []}, 4)) == "unchanged"  # not newer: ignored
        assert [z.id for z in worker.slots["gate"].camera.zones] == ["lane"]
        for bad in (b"not json", _message({**gate, "grid": "G9"}, 5), _message({**gate, "id": "lobby"}, 6),
                    _message({**gate, "zones": [{**LANE, "polygon": [[0, 0], [2, 0], [1, 1]]}]}, 7)):
            assert rt.handle(topic, bad) == "refused"
        assert [z.id for z in worker.slots["gate"].camera.zones] == ["lane"]  # the last good config runs on
        assert rt.outcomes["refused"] == 4 and "polygon" in str(rt.last_error)
        assert rt.handle(topic, _message({**gate, "enabled": False}, 8)) == "removed"
        assert "gate" not in worker.slots and worker.slots["lobby"] is lobby_slot
        index = CameraIndexV1(schema_version=1, revision=9, ts=_ts(), camera_ids=["gate"]).to_bytes()
        assert rt.handle(camera_index_topic("rt"), index) == "removed"  # lobby is no longer in the database
        assert worker.slots == {}
    finally:
        worker.journal.close()
        worker.publisher.outbox.close()


def _ts() -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(1_796_000_100, tz=UTC)
