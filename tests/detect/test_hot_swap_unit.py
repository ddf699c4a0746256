"""ModelHotSwap without a worker: a deployed version whose file passes its hash but is no ONNX model is refused
and the loaded detector stays; canary routing and the versions alerts name; a pinned detector is left alone.
Real ONNX sessions of the repository's fire models; the manifest is a tmp copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.config import SiteConfig
from pipeline.detect.hot_swap import ModelHotSwap
from pipeline.detect.model_versions import ModelRef, add_version, promote, read_doc, rollback, write_doc
from pipeline.detect.registry import DetectorRegistry
from tests.fixtures.model_gate import REPO, fire_manifest

GRID = [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
    {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}]


def _registry(tmp_path: Path, detectors: dict[str, dict[str, object]]) -> DetectorRegistry:
    manifest = fire_manifest(tmp_path / "models")
    site = SiteConfig.model_validate({"grid": GRID, "detectors": detectors})
    return DetectorRegistry(site, manifest=manifest)


def test_corrupt_file_with_matching_hash_is_refused(tmp_path: Path) -> None:
    reg = _registry(tmp_path, {"fire": {"model": "fire", "input_size": 416, "threads": 1}})
    swap = ModelHotSwap(reg, poll_seconds=0)
    running = reg.get("fire")
    swap.start()
    bad = tmp_path / "models" / "fire-v5.onnx"
    bad.write_bytes(b"\x08\x07" + b"garbage" * 500)  # registered as it is: the hash matches, the graph is junk
    manifest = reg.manifest_path
    assert manifest is not None
    add_version(manifest, "fire", "v5", bad)
    promote(manifest, ModelRef("fire", "v5"))
    assert swap.check() is False
    assert swap.failures == 1 and "fire@v5" in str(swap.last_error)
    assert reg.get("fire") is running and swap.versions("cam", ["fire"]) == ["fire@2"]
    assert swap.check() is False and swap.failures == 1  # unchanged manifest: not retried every poll


def test_canary_routing_and_pinned_detector(tmp_path: Path) -> None:
    reg = _registry(tmp_path, {"fire": {"model": "fire", "input_size": 416, "threads": 1},
                               "fire-pinned": {"model": "fire@2", "input_size": 416, "threads": 1}})
    swap = ModelHotSwap(reg, poll_seconds=0)
    reg.get("fire"), reg.get("fire-pinned")
    manifest = reg.manifest_path
    assert manifest is not None
    v3 = Path(shutil.copy(REPO / "models" / "fire-int8.onnx", tmp_path / "models" / "fire-v3.onnx"))
    add_version(manifest, "fire", "v3", v3)
    promote(manifest, ModelRef("fire", "v3"), canary=["cam-7"])
    assert swap.check(force=True) is True
    assert swap.route("fire", "cam-7") == "fire#canary" and swap.route("fire", "cam-1") == "fire"
    assert reg.get("fire#canary") is not reg.get("fire")
    assert swap.versions("cam-7", ["fire", "fire-pinned"]) == ["fire@v3", "fire@2"]
    assert swap.versions("cam-1", ["fire"]) == ["fire@2"]
    doc = read_doc(manifest)
    doc["deployments"]["fire"]["canary"]["cameras"] = ["cam-7", "cam-8"]  # widened by hand
    write_doc(manifest, doc)
    assert swap.check(force=True) is True and swap.route("fire", "cam-8") == "fire#canary"
    assert "fire-pinned" not in swap.tracked()
    canary_session = reg.get("fire#canary")
    promote(manifest, ModelRef("fire", "v3"))  # to every camera: the canary's session becomes the deployed one
    assert swap.check(force=True) is True
    assert reg.get("fire") is canary_session and swap.route("fire", "cam-7") == "fire"
    assert swap.versions("cam-1", ["fire"]) == ["fire@v3"]


def test_worker_detector_broken_at_start_recovers_on_promote(tmp_path: Path) -> None:
    from pipeline.worker import Worker

    manifest = fire_manifest(tmp_path / "models")
    broken = tmp_path / "models" / "fire-v9.onnx"
    shutil.copy(REPO / "models" / "fire.onnx", broken)
    add_version(manifest, "fire", "v9", broken)
    promote(manifest, ModelRef("fire", "v9"))
    broken.write_bytes(b"truncated")  # the deployed file broke before the worker started
    site = SiteConfig.model_validate({
        "grid": GRID, "cameras": [{"id": "c1", "url": str(tmp_path / "none.mp4"), "grid": "G1", "hazards": ["fire"]}],
        "detectors": {"fire": {"model": "fire", "input_size": 416, "threads": 1}},
        "hazards": {"fire": {"confirm_model": None}}, "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "api": {"evidence_dir": str(tmp_path / "ev")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "model_poll_seconds": 0}})
    site.base_dir = str(tmp_path)
    worker = Worker(site, worker_id="w-broken")
    try:
        with pytest.raises(ValueError, match="sha256"):
            worker.registry.get("fire")
        worker.broken_detectors["fire"] = "detector 'fire' unavailable"  # as Worker.start records it
        worker.models.mark_broken("fire")
        rollback(manifest, "fire")  # back to v2, a good file
        assert worker.models.check() is True
        assert "fire" not in worker.broken_detectors
        assert worker.registry.get("fire").class_names and worker.models.versions("c1", ["fire"]) == ["fire@2"]
    finally:
        worker.journal.close()


def test_incident_models_name_detector_and_confirm_classifier(tmp_path: Path) -> None:
    from pipeline.analyze.analyzer import CameraAnalyzer
    from pipeline.analyze.incident import Hazard, Incident, IncidentEvent
    from pipeline.detect.hot_swap import incident_models

    fire_manifest(tmp_path / "models")
    site = SiteConfig.model_validate({
        "grid": GRID, "cameras": [{"id": "c1", "url": "x.mp4", "grid": "G1", "hazards": ["fire"]}],
        "detectors": {"fire": {"model": "fire", "input_size": 416, "threads": 1}}})
    site.base_dir = str(tmp_path)
    swap = ModelHotSwap(DetectorRegistry(site), poll_seconds=0)
    analyzer = CameraAnalyzer(site, site.cameras[0])
    incident = Incident("c1-fire-1", IncidentEvent.OPENED, Hazard.FIRE, "c1", None, 1.8e9, 1.8e9, 0.9)
    assert incident_models(swap, analyzer, incident) == ["fire@2", "fire-confirm@1"]
    other = Incident("c1-x-clutter-1", IncidentEvent.OPENED, Hazard.CLUTTER, "c1", "x", 1.8e9, 1.8e9, 0.9)
    assert incident_models(swap, analyzer, other) is None  # no rule of that hazard here: the field is left out
