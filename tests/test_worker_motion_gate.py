"""A real worker with the motion gate on a still camera: health and metrics count gated and detected frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config import SiteConfig
from pipeline.worker import Worker
from tests.test_worker import _health, _site, _still_clip, _wait

pytestmark = pytest.mark.integration


def test_still_camera_is_gated_in_health_and_metrics(tmp_path: Path, shared_dir: Path, mosquitto: Any) -> None:
    broker = mosquitto()
    clip = _still_clip(shared_dir / "datasets" / "vehicles" / "images" / "val" / "yuskun__102564.jpg",
                       tmp_path / "lot.mp4")
    base = _site(tmp_path, broker.url, {"lot": str(clip), "plain": str(clip)},
                 str(shared_dir / "models" / "yolo11n-coco.onnx"))
    data = base.model_dump(mode="json", exclude_none=True)
    data["cameras"][0]["motion_gate"] = {"enabled": True}  # only camera "lot"
    site = SiteConfig.model_validate(data)
    worker = Worker(site, worker_id="w-gate")
    worker.start()
    try:
        assert _wait(lambda: _health(worker)["lot"].get("frames_gated", 0) >= 2, 40), _health(worker)["lot"]
        worker.publish_health()
    finally:
        worker.stop()
    lot, plain = _health(worker)["lot"], _health(worker)["plain"]
    assert lot["frames_detected"] >= 1 and lot["frames_gated"] + lot["frames_detected"] <= lot["frames_analysed"]
    assert "frames_gated" not in plain  # gate off on this camera
    labels = {"worker": "w-gate", "camera": "lot"}
    assert (worker.metrics.registry.get_sample_value("gridwatch_camera_frames_gated", labels) or 0) >= 2
