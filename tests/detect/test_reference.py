"""Our onnxruntime detector reproduces Ultralytics' own predictions on real images.

The reference (``data/yolo11n_reference.json``) was written by ``scripts/record_yolo_reference.py`` with
Ultralytics ``predict`` (conf 0.25, iou 0.45, imgsz 640, rect=False) once with the PyTorch checkpoint
(``pt``) and once with the ONNX export (``onnx``). This test needs neither torch nor Ultralytics.

Measured agreement when recorded: IoU >= 0.9999 and |score diff| <= 1e-5 for every box against both
references. The tolerances below leave room for other CPUs / onnxruntime versions, yet a one-pixel
letterbox shift, a BGR/RGB swap or another input size fails them (see the last test).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.detect.detections import Detections
from pipeline.detect.nms import box_iou
from pipeline.detect.yolo import YoloDetector
from tests.detect.frames import load_image, pixel_hash

REFERENCE = Path(__file__).parent / "data" / "yolo11n_reference.json"
MIN_IOU = 0.98
MAX_SCORE_DIFF = 0.005
DOC: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
CONF = float(DOC["settings"]["conf"])


def mismatches(ours: Detections, ref: dict[str, list[Any]]) -> list[str]:
    """Problems matching ``ours`` against one reference entry one-to-one (greedy by reference score).

    Boxes within ``MAX_SCORE_DIFF`` of the confidence threshold may legitimately appear on one side only.
    """
    problems: list[str] = []
    rx = np.asarray(ref["xyxy"], np.float64).reshape(-1, 4)
    rs = np.asarray(ref["score"], np.float64)
    rc = np.asarray(ref["class_id"], np.int64)
    used = np.zeros(len(ours), bool)
    for i in np.argsort(-rs):
        cand = np.flatnonzero((ours.class_id == rc[i]) & ~used)
        if cand.size:
            ious = box_iou(rx[i], ours.xyxy[cand].astype(np.float64))
            j = cand[int(np.argmax(ious))]
            if ious.max() >= MIN_IOU:
                used[j] = True
                if abs(float(ours.confidence[j]) - rs[i]) > MAX_SCORE_DIFF:
                    problems.append(f"class {rc[i]} score {ours.confidence[j]:.4f} vs {rs[i]:.4f}")
                continue
        if rs[i] > CONF + MAX_SCORE_DIFF:
            box = rx[i].round(1).tolist()
            problems.append(f"reference class {rc[i]} score {rs[i]:.3f} box {box} unmatched")
    for j in np.flatnonzero(~used):
        if ours.confidence[j] > CONF + MAX_SCORE_DIFF:
            problems.append(f"extra class {ours.class_id[j]} score {ours.confidence[j]:.3f}")
    return problems


@pytest.fixture(scope="module")
def images(shared_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for entry in DOC["images"]:
        img = load_image(shared_dir, entry)
        assert list(img.shape) == entry["shape"]
        assert pixel_hash(img) == entry["pixels_sha256_16"], f"{entry['name']}: decoded pixels differ"
        out[entry["name"]] = img
    return out


@pytest.fixture(scope="module")
def ref_detector(coco_model: Path) -> YoloDetector:
    s = DOC["settings"]
    return YoloDetector(coco_model, input_size=s["imgsz"], threads=1, nms_iou=s["iou"],
                        min_confidence=s["conf"])


def test_reference_is_not_trivial() -> None:
    counts = [len(e["pt"]["score"]) for e in DOC["images"]]
    assert len(counts) >= 3 and all(c > 0 for c in counts) and sum(counts) >= 10
    classes = {c for e in DOC["images"] for c in e["pt"]["class_id"]}
    assert {0, 2} <= classes  # persons and cars


@pytest.mark.parametrize("backend", ["pt", "onnx"])
@pytest.mark.parametrize("name", [e["name"] for e in DOC["images"]])
def test_matches_ultralytics(ref_detector: YoloDetector, images: dict[str, np.ndarray], name: str,
                             backend: str) -> None:
    entry = next(e for e in DOC["images"] if e["name"] == name)
    ours = ref_detector.detect(images[name])
    ref = entry[backend]
    assert mismatches(ours, ref) == []
    assert len(ours) == len(ref["score"])


def test_batch_matches_ultralytics(ref_detector: YoloDetector, images: dict[str, np.ndarray]) -> None:
    results = ref_detector.detect_batch([images[e["name"]] for e in DOC["images"]])
    for entry, ours in zip(DOC["images"], results, strict=True):
        assert mismatches(ours, entry["pt"]) == [], entry["name"]


@pytest.mark.parametrize("fault", ["input_size_480", "bgr_as_rgb", "boxes_off_by_2px"])
def test_comparison_can_fail(coco_model: Path, ref_detector: YoloDetector, images: dict[str, np.ndarray],
                             fault: str) -> None:
    """The matcher is not vacuous: each of these small mistakes is caught on at least one image."""
    other = YoloDetector(coco_model, input_size=480, threads=1) if fault == "input_size_480" else ref_detector
    found = []
    for e in DOC["images"]:
        img = images[e["name"]]
        d = other.detect(np.ascontiguousarray(img[..., ::-1]) if fault == "bgr_as_rgb" else img)
        if fault == "boxes_off_by_2px":
            d = Detections(d.xyxy + np.float32(2.0), d.confidence, d.class_id)
        found += mismatches(d, e["pt"])
    assert found
