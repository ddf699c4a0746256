"""The worker with file sources: a missing or corrupt camera never stops the others; a missing model is
reported per camera instead of crashing the worker."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.analyze.incident import Incident, IncidentEvent
from pipeline.config import SiteConfig
from pipeline.contract.messages import CameraHealthV1, OccupancyV1
from pipeline.worker import Worker
from tests.fixtures.media import corrupt_copy

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parents[1] / "models"


def _site(tmp_path: Path, mqtt_url: str, cameras: dict[str, str], model: str,
          zone: dict[str, Any] | None = None, metrics_port: int | None = None) -> SiteConfig:
    zone = zone or {"id": "z", "kind": "no_parking"}
    return SiteConfig.model_validate({
        "grid": [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
            {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}],
        "cameras": [{"id": cid, "url": url, "grid": "G1", "decode": "keyframes",
                     "zones": [{**zone, "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]}
                    for cid, url in cameras.items()],
        "detectors": {"coco": {"model": model, "input_size": 320, "threads": 1}},
        "mqtt": {"url": mqtt_url},
        "api": {"evidence_dir": str(tmp_path / "ev")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "reconnect_min_seconds": 0.2,
                   "reconnect_max_seconds": 1, "health_interval_seconds": 1, "metrics_port": metrics_port},
    })


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(pred: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.2)
    return pred()


def _health(worker: Worker) -> dict[str, dict[str, Any]]:
    return {str(h["camera_id"]): h for h in worker.camera_health()}


def test_bad_cameras_do_not_stop_good_ones(tmp_path: Path, shared_dir: Path, h264_clips: dict[str, Path],
                                           mosquitto: Any) -> None:
    broker = mosquitto()
    bad = corrupt_copy(h264_clips["person"], tmp_path / "bad.mp4", mode="garbage")
    port = _free_port()
    site = _site(tmp_path, broker.url, {"good": str(h264_clips["person"]), "missing": str(tmp_path / "no.mp4"),
                                        "corrupt": str(bad)}, str(shared_dir / "models" / "yolo11n-coco.onnx"),
                 metrics_port=port)
    worker = Worker(site, worker_id="w-test")
    worker.start()
    try:
        assert _wait(lambda: _health(worker)["good"]["frames_analysed"] >= 3, 30), _health(worker)
        h = _wait(lambda: (h := _health(worker))["missing"]["state"] == "error"
                  and h["corrupt"]["state"] == "error" and h, 30)
        assert h, _health(worker)
        assert "no.mp4" in str(h["missing"]["last_error"])
        assert h["corrupt"]["last_error"]
        assert h["good"]["state"] == "streaming" and h["good"]["analysis_error"] is None
        for report in h.values():  # every field the worker publishes is in the contract's model
            assert not set(report) - set(CameraHealthV1.model_fields), set(report) - set(CameraHealthV1.model_fields)
            CameraHealthV1.model_validate({**report, "ts": time.time()})
        time.sleep(1.5)  # the next health report refreshes the metrics
        import httpx

        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'gridwatch_camera_streaming{camera="good",worker="w-test"} 1.0' in text, text
        assert 'gridwatch_camera_streaming{camera="missing",worker="w-test"} 0.0' in text
        assert 'gridwatch_mqtt_connected{worker="w-test"} 1.0' in text
    finally:
        worker.stop()


def test_missing_model_is_reported_not_fatal(tmp_path: Path, h264_clips: dict[str, Path], mosquitto: Any) -> None:
    broker = mosquitto()
    site = _site(tmp_path, broker.url, {"good": str(h264_clips["person"])}, str(tmp_path / "nope.onnx"))
    worker = Worker(site, worker_id="w-test2")
    worker.start()
    try:
        h = _wait(lambda: (h := _health(worker)["good"])["frames_analysed"] >= 1 and h["analysis_error"] and h, 30)
        assert h, _health(worker)
        assert "detector 'coco' unavailable" in h["analysis_error"] and "nope.onnx" in h["analysis_error"]
        assert h["state"] == "streaming"
    finally:
        worker.stop()


def _still_clip(image: Path, out: Path, seconds: float = 4.0, fps: int = 5) -> Path:
    """A short H.264 clip of one still image (key frame every second)."""
    import av
    import cv2

    img = cv2.imread(str(image))
    img = img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]
    with av.open(str(out), "w") as dst:
        st = dst.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
        st.options = {"g": str(fps), "bf": "0"}
        for _ in range(int(seconds * fps)):
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                dst.mux(pkt)
        for pkt in st.encode():
            dst.mux(pkt)
    return out


def test_parking_occupancy_is_published_retained(tmp_path: Path, shared_dir: Path, mosquitto: Any) -> None:
    import json

    import paho.mqtt.client as mqtt

    broker = mosquitto()
    clip = _still_clip(shared_dir / "datasets" / "vehicles" / "images" / "val" / "yuskun__102564.jpg",
                       tmp_path / "lot.mp4")
    site = _site(tmp_path, broker.url, {"lot": str(clip)}, str(shared_dir / "models" / "yolo11n-coco.onnx"),
                 zone={"id": "bays", "kind": "parking", "capacity": 40})
    worker = Worker(site, worker_id="w-occ")
    worker.start()
    try:
        assert _wait(lambda: _health(worker)["lot"]["frames_analysed"] >= 3, 30)
        time.sleep(2.5)  # the next health/occupancy report
    finally:
        worker.stop()
    # A client connecting afterwards still gets the retained state.
    got: list[dict[str, Any]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    client.connect(broker.host, broker.port)
    client.subscribe("gridwatch/occupancy/lot/bays", qos=1)
    client.loop_start()
    try:
        state = _wait(lambda: got and got[-1], 10)
    finally:
        client.loop_stop()
        client.disconnect()
    assert state, "no retained occupancy message"
    assert state["capacity"] == 40 and state["used"] >= 5, state  # the image shows ~29 cars
    assert state["free"] == 40 - state["used"] and state["grid_path"] == ["T1", "D1", "C1", "G1"]
    assert set(state) == set(OccupancyV1.model_fields)
    OccupancyV1.model_validate(state)


def test_decode_plan_and_source_faults_in_health_and_metrics(tmp_path: Path, mosquitto: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import httpx

    from tests.ingest.conftest import encode_test_pattern

    broker = mosquitto()
    gop3 = encode_test_pattern(tmp_path / "gop3.mp4", 8.0, gop=75)  # a key frame every 3 s, B-frames
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(gop3.read_bytes()[: gop3.stat().st_size // 2])
    still = tmp_path / "snap.jpg"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48",
                    "-frames:v", "1", str(still)], check=True, timeout=60)
    port = _free_port()
    cams = {"fire-auto": (gop3, "auto"), "fire-kf": (gop3, "keyframes"), "cut": (cut, "keyframes"),
            "still": (still, "auto")}
    site = SiteConfig.model_validate({
        "grid": [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
            {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}],
        "cameras": [{"id": cid, "url": str(path), "grid": "G1", "decode": mode, "hazards": ["fire"]}
                    for cid, (path, mode) in cams.items()],
        "detectors": {"fire": {"model": str(MODELS / "fire.onnx"), "input_size": 320, "threads": 1}},
        "mqtt": {"url": broker.url}, "api": {"evidence_dir": str(tmp_path / "ev")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "health_interval_seconds": 1, "metrics_port": port,
                   "reconnect_min_seconds": 0.2, "reconnect_max_seconds": 1, "source_error_retry_seconds": 60},
    })
    caplog.set_level(logging.INFO, logger="pipeline.ingest.reader")
    worker = Worker(site, worker_id="w-plan")
    worker.start()
    try:
        h = _wait(lambda: (h := _health(worker))["fire-auto"]["keyframe_interval_s"] is not None
                  and h["fire-kf"]["keyframe_interval_s"] is not None and h["cut"]["truncated_loops"] and h, 30)
        assert h, _health(worker)
        time.sleep(1.5)  # the next health report refreshes the metrics
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        worker.stop()
    auto, kf, cut_h, still_h = h["fire-auto"], h["fire-kf"], h["cut"], h["still"]
    # Fire on a 3 s GOP: auto decodes every frame and analyses 2/s; keyframes gives 1/3 and says so.
    assert (auto["decode_mode_effective"], auto["keyframe_interval_s"], auto["fps"]) == ("interval", 3.0, 25.0)
    assert auto["analysis_fps"] == 2.0 and auto["rate_warning"] is None and auto["required_fps"] == 2.0
    assert kf["decode_mode_effective"] == "keyframes" and kf["analysis_fps"] == 0.333
    assert "fire needs 2 frames/s" in kf["rate_warning"]
    assert any("fire-kf" in r.getMessage() and "fire needs" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    assert cut_h["state"] == "streaming" and "file ends early" in cut_h["last_error"]
    assert still_h["state"] == "error" and "still image" in still_h["last_error"] and still_h["reconnects"] == 0
    labels = 'camera="{}",worker="w-plan"'
    assert f"gridwatch_camera_error{{{labels.format('still')}}} 1.0" in text, text
    assert f"gridwatch_camera_error{{{labels.format('cut')}}} 0.0" in text
    assert f"gridwatch_camera_rate_shortfall{{{labels.format('fire-kf')}}} 1.0" in text
    assert f"gridwatch_camera_rate_shortfall{{{labels.format('fire-auto')}}} 0.0" in text
    assert f"gridwatch_camera_analysis_fps{{{labels.format('fire-auto')}}} 2.0" in text
    assert f"gridwatch_camera_keyframe_interval_s{{{labels.format('fire-kf')}}} 3.0" in text
    truncated = f"gridwatch_camera_truncated_loops{{{labels.format('cut')}}} "
    assert float(text.split(truncated)[1].split()[0]) >= 1


def test_journalled_incidents_of_down_camera_and_removed_zone_are_cleared(tmp_path: Path, shared_dir: Path,
                                                                         mosquitto: Any) -> None:
    """What a previous run left open is never orphaned: an incident of a zone no longer configured is cleared
    at start, and one whose camera delivers no frame is cleared after ``camera_down_clear_seconds``."""
    import json

    import paho.mqtt.client as mqtt

    from pipeline.analyze.incident import Hazard
    from pipeline.analyze.journal import IncidentJournal

    broker = mosquitto()
    site = _site(tmp_path, broker.url, {"gone": str(tmp_path / "no.mp4")},
                 str(shared_dir / "models" / "yolo11n-coco.onnx"))
    site.worker.camera_down_clear_seconds = 2.0
    t0 = time.time() - 100
    journal = IncidentJournal(tmp_path / "outbox.db.incidents")
    for zone in ("z", "old"):
        journal.record(Incident(f"gone-{zone}-parking-{int(t0)}-1", IncidentEvent.OPENED, Hazard.PARKING, "gone",
                                zone, t0, t0 + 5, 0.9))
    journal.close()
    got: list[dict[str, Any]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    client.connect(broker.host, broker.port)
    client.subscribe("gridwatch/alerts/#", qos=1)
    client.loop_start()
    worker = Worker(site, worker_id="w-journal")
    worker.start()
    try:
        done = _wait(lambda: len(got) >= 2 and got, 30)
        assert done, got
        assert worker.journal.open_incidents() == []
    finally:
        worker.stop()
        client.loop_stop()
        client.disconnect()
    # Every alert is stamped with the worker id and a gap-free sequence number (the service counts gaps).
    assert sorted((p["worker_id"], p["seq"]) for p in got) == [("w-journal", 1), ("w-journal", 2)], got
    reasons = {p["incident_id"]: (p["event"], p["details"].get("clear_reason")) for p in got}
    assert reasons == {f"gone-old-parking-{int(t0)}-1": ("cleared", "rule_removed"),
                       f"gone-z-parking-{int(t0)}-1": ("cleared", "camera_down")}, got
