"""DetectorRegistry: lazy cached sessions, config-relative paths, manifest names and hash checks."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from pipeline.config import SiteConfig
from pipeline.detect.registry import DetectorRegistry, ModelHashMismatch, load_manifest
from pipeline.detect.yolo import YoloDetector

GRID = [{"code": "T1", "name": "T", "children": [{"code": "D1", "name": "D", "children": [
    {"code": "C1", "name": "C", "children": [{"code": "G1", "name": "G"}]}]}]}]


def _site(base: Path, detectors: dict[str, dict[str, object]]) -> SiteConfig:
    cfg = SiteConfig.model_validate({"grid": GRID, "detectors": detectors})
    cfg.base_dir = str(base)
    return cfg


@pytest.fixture()
def model_copy(tmp_path: Path, coco_model: Path) -> Path:
    dst = tmp_path / "models" / "coco.onnx"
    dst.parent.mkdir()
    shutil.copy(coco_model, dst)
    return dst


def _write_manifest(path: Path, sha: str, file: str = "coco.onnx", input_size: int = 320) -> Path:
    entry = {"name": "coco-v1", "file": file, "sha256": sha, "classes": 80, "input_size": input_size}
    doc = {"models": [entry]}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_lazy_cached_relative_path(tmp_path: Path, model_copy: Path) -> None:
    reg = DetectorRegistry(_site(tmp_path, {"coco": {"model": "models/coco.onnx", "threads": 1}}))
    assert reg.loaded() == []
    det = reg.get("coco")
    assert isinstance(det, YoloDetector) and det.model_path == model_copy
    assert reg.get("coco") is det and reg.loaded() == ["coco"]


def test_concurrent_get_creates_one_session(tmp_path: Path, model_copy: Path) -> None:
    reg = DetectorRegistry(_site(tmp_path, {"coco": {"model": str(model_copy), "threads": 1}}))
    got: list[YoloDetector] = []
    threads = [threading.Thread(target=lambda: got.append(reg.get("coco"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and all(d is got[0] for d in got)


def test_settings_are_passed(tmp_path: Path, model_copy: Path) -> None:
    reg = DetectorRegistry(_site(tmp_path, {"c": {"model": str(model_copy), "input_size": 320, "threads": 1,
                                                  "nms_iou": 0.6, "min_confidence": 0.4}}))
    det = reg.get("c")
    assert (det.input_size, det.nms_iou, det.min_confidence) == (320, 0.6, 0.4)


def test_unknown_name(tmp_path: Path) -> None:
    reg = DetectorRegistry(_site(tmp_path, {}))
    with pytest.raises(KeyError, match="nope"):
        reg.get("nope")


def test_missing_model_file(tmp_path: Path) -> None:
    reg = DetectorRegistry(_site(tmp_path, {"coco": {"model": "models/absent.onnx"}}))
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        reg.get("coco")


def test_manifest_name_with_matching_hash(tmp_path: Path, model_copy: Path) -> None:
    sha = hashlib.sha256(model_copy.read_bytes()).hexdigest()
    manifest = _write_manifest(model_copy.parent / "manifest.yaml", sha)
    site = _site(tmp_path, {"coco": {"model": "coco-v1", "threads": 1}})
    reg = DetectorRegistry(site)  # found as <base_dir>/models/manifest.yaml
    assert reg.manifest_path == manifest
    det = reg.get("coco")
    assert det.model_path == model_copy and det.input_size == 320  # manifest input_size applies
    # a manifest entry can be asked for by name without a `detectors` entry
    assert reg.get("coco-v1").model_path == model_copy
    assert load_manifest(manifest)["coco-v1"].classes == 80


def test_config_input_size_wins_over_manifest(tmp_path: Path, model_copy: Path) -> None:
    sha = hashlib.sha256(model_copy.read_bytes()).hexdigest()
    _write_manifest(model_copy.parent / "manifest.yaml", sha)
    reg = DetectorRegistry(_site(tmp_path, {"coco": {"model": "coco-v1", "input_size": 640, "threads": 1}}))
    assert reg.resolve("coco")[1].input_size == 640


@pytest.mark.parametrize("by", ["name", "path"])
def test_manifest_hash_mismatch_is_refused(tmp_path: Path, model_copy: Path, by: str) -> None:
    wrong = "0" * 64
    manifest = _write_manifest(tmp_path / "elsewhere.yaml", wrong, file=str(model_copy))
    model = "coco-v1" if by == "name" else "models/coco.onnx"
    reg = DetectorRegistry(_site(tmp_path, {"coco": {"model": model}}), manifest=manifest)
    actual = hashlib.sha256(model_copy.read_bytes()).hexdigest()
    with pytest.raises(ModelHashMismatch) as err:
        reg.get("coco")
    assert wrong in str(err.value) and actual in str(err.value) and "coco.onnx" in str(err.value)
    assert reg.loaded() == []


def test_bad_manifest_entry(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.yaml"
    bad.write_text("models:\n  - file: x.onnx\n", encoding="utf-8")
    with pytest.raises(ValueError, match="name"):
        load_manifest(bad)
