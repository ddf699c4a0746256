"""A running Worker follows the manifest without a restart: canary on one camera, full promotion, rollback,
and a corrupt deployed file refused while the old model keeps running. Real parts: the repository's fire
models (fire.onnx v2, fire-int8.onnx registered as v3), the fire slideshow clip on two FILE cameras, a
private Mosquitto, and the alerts as a subscriber receives them (each names the model version behind it)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import SiteConfig
from pipeline.detect.model_versions import ModelRef, add_version, promote, read_doc, rollback, write_doc
from pipeline.worker import Worker
from tests.fixtures.model_gate import Alerts, fire_clip, fire_manifest, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
A, B = "cam-a", "cam-b"


def _site(tmp_path: Path, mqtt_url: str, clip: Path) -> SiteConfig:
    site = SiteConfig.model_validate({
        "grid": [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
            {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}],
        "cameras": [{"id": cid, "url": str(clip), "grid": "G1", "decode": "keyframes", "hazards": ["fire"]}
                    for cid in (A, B)],
        "detectors": {"fire": {"model": "fire", "input_size": 416, "threads": 1, "batch_size": 2,
                               "min_confidence": 0.4}},
        "hazards": {"fire": {"confirm_model": None, "update_interval_seconds": 1}},
        "mqtt": {"url": mqtt_url, "topic_prefix": "hs"},
        "api": {"evidence_dir": str(tmp_path / "ev")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "health_interval_seconds": 1,
                   "model_poll_seconds": 0.3, "clip_post_seconds": 0},
    })
    site.base_dir = str(tmp_path)  # the registry finds tmp_path/models/manifest.yaml
    return site


def test_worker_swaps_models_without_restart(tmp_path: Path, shared_dir: Path, mosquitto: Any) -> None:
    broker = mosquitto()
    manifest = fire_manifest(tmp_path / "models")
    v3 = shutil.copy(REPO / "models" / "fire-int8.onnx", tmp_path / "models" / "fire-v3.onnx")
    add_version(manifest, "fire", "v3", Path(v3))
    alerts = Alerts(broker.host, broker.port, "hs")
    worker = Worker(_site(tmp_path, broker.url, fire_clip(shared_dir)), worker_id="w-swap")
    worker.start()
    try:
        first = wait_for(lambda: alerts.after(0, A, ["fire@2"]), 60, "a fire@2 alert from cam-a")
        assert first["event"] == "opened"
        readers = {cid: s.reader for cid, s in worker.slots.items()}

        # Canary: cam-b only.
        promote(manifest, ModelRef("fire", "v3"), canary=[B], reason="canary")
        mark = len(alerts.got)
        wait_for(lambda: alerts.after(mark, B, ["fire@v3"]), 30, "a fire@v3 alert from the canary camera")
        wait_for(lambda: alerts.after(mark, A, ["fire@2"]), 30, "cam-a still on fire@2 during the canary")
        assert not alerts.after(mark, A, ["fire@v3"])
        assert worker.models.stats()["canary"] == {"fire": {"version": "fire@v3", "cameras": [B]}}

        # Everyone.
        promote(manifest, ModelRef("fire", "v3"))
        mark = len(alerts.got)
        swapped = wait_for(lambda: alerts.after(mark, A, ["fire@v3"]), 30, "a fire@v3 alert from cam-a")
        assert swapped["incident_id"] == first["incident_id"]  # the same open incident: no restart, no reopen
        assert worker.models.stats()["canary"] == {}  # the full promotion ended the canary

        # Back.
        rollback(manifest, "fire", reason="test")
        mark = len(alerts.got)
        wait_for(lambda: alerts.after(mark, A, ["fire@2"]), 30, "a fire@2 alert from cam-a after the rollback")

        # A deployed version whose file is corrupt on this host: refused, the running model stays.
        v4 = shutil.copy(REPO / "models" / "fire.onnx", tmp_path / "models" / "fire-v4.onnx")
        add_version(manifest, "fire", "v4", Path(v4))
        Path(v4).write_bytes(b"not an onnx model" * 100)  # sha256 no longer matches
        doc = read_doc(manifest)
        doc["deployments"]["fire"]["deployed"] = "v4"  # as if promoted elsewhere, before the copy broke
        write_doc(manifest, doc)
        wait_for(lambda: worker.models.failures >= 1, 30, "the corrupt fire@v4 refused")
        assert "sha256" in str(worker.models.last_error) and "fire@v4" in str(worker.models.last_error)
        assert worker.metrics.registry.get_sample_value(
            "gridwatch_model_load_failures_total", {"worker": "w-swap", "model": "fire@v4"}) == 1
        analysed = worker.slots[A].frames_analysed
        mark = len(alerts.got)
        wait_for(lambda: alerts.after(mark, A, ["fire@2"]), 30, "fire@2 alerts after the refused swap")
        assert worker.slots[A].frames_analysed > analysed
        assert worker.models.stats()["serving"]["fire"] == "fire@2"
        assert {cid: s.reader for cid, s in worker.slots.items()} == readers  # same readers: never restarted
        assert worker.models.swaps == 3  # canary, promote, rollback; the refused v4 is not one
    finally:
        worker.stop()
        alerts.close()
