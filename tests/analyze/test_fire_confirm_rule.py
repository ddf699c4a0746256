"""FireRule with the second-stage classifier: a box the classifier rejects never counts; a real fire does.

Real held-out frames (fire val split), the real models/fire-confirm.onnx; the detector boxes are given so
that only the classifier decides (colour and flicker checks off). Timestamps are real Unix times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.fire import FireRule
from pipeline.analyze.incident import Hazard
from pipeline.analyze.rules import FrameView
from pipeline.config import HazardRule, SiteConfig
from pipeline.detect.detections import Detections
from pipeline.detect.fire_confirm import FireConfirmClassifier

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "fire-confirm.onnx"
T0 = 1_800_000_000.0
GRID = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
    {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]


@pytest.fixture(scope="module")
def clf() -> FireConfirmClassifier:
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} not built (scripts/train_fire_confirm.py)")
    return FireConfirmClassifier(MODEL, threads=1)


def _val(shared_dir: Path, stem: str) -> np.ndarray:
    img = cv2.imread(str(shared_dir / "datasets" / "fire" / "images" / "val" / f"{stem}.jpg"))
    if img is None:
        pytest.skip(f"{stem} missing")
    return img


def _fire_box(shared_dir: Path, stem: str, img: np.ndarray) -> list[float]:
    rows = np.loadtxt(shared_dir / "datasets" / "fire" / "labels" / "val" / f"{stem}.txt", ndmin=2)
    h, w = img.shape[:2]
    c, x, y, bw, bh = rows[np.argmax(rows[:, 3] * rows[:, 4])]
    return [(x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h]


def _run(rule: FireRule, img: np.ndarray, box: list[float], frames: int = 4) -> list[Any]:
    events: list[Any] = []
    for k in range(frames):
        d = Detections.from_arrays([box], [0.9], [0], {0: "fire", 1: "smoke"})
        events += rule.judge(FrameView(T0 + 0.5 * k, img.shape[1], img.shape[0], img, {"fire": d}))
    return events


def _rule(confirm: FireConfirmClassifier | None) -> FireRule:
    return FireRule("cam1", None, HazardRule(detector="fire", confirm_k=3, confirm_n=4, dwell_seconds=0),
                    min_flicker=0, min_fire_colour=0, confirm=confirm, confirm_min_score=0.5)


def test_rejected_box_never_counts(shared_dir: Path, clf: FireConfirmClassifier) -> None:
    """A box on a garbage-compound frame without fire: an incident without the classifier, none with it."""
    img = _val(shared_dir, "ATANU0023__000174")
    h, w = img.shape[:2]
    box = [w * 0.3, h * 0.3, w * 0.7, h * 0.7]
    assert [e.event.value for e in _run(_rule(None), img, box)] == ["opened"]  # the control
    rule = _rule(clf)
    assert _run(rule, img, box) == []
    assert rule.last_checks and all(c.reason == "confirm" for c in rule.last_checks)
    score = rule.last_checks[0].confirm_score
    assert score is not None and score < 0.5
    boxes = rule.state()["boxes"]
    assert isinstance(boxes, list) and boxes[0]["reason"] == "confirm"


def test_confirmed_fire_still_opens(shared_dir: Path, clf: FireConfirmClassifier) -> None:
    stem = "AdhyaksaWP__20-fire"
    img = _val(shared_dir, stem)
    rule = _rule(clf)
    events = _run(rule, img, _fire_box(shared_dir, stem, img))
    assert [e.event.value for e in events] == ["opened"]
    assert events[0].started_at == T0
    score = rule.last_checks[0].confirm_score
    assert score is not None and score >= 0.5


def test_site_yaml_sets_it(clf: FireConfirmClassifier) -> None:
    """`hazards.fire.confirm_model` (a manifest entry name; on by default) reaches the rule as a loaded
    classifier; null turns it off."""
    cam = {"id": "cam1", "url": "x.mp4", "grid": "G", "zones": [], "hazards": ["fire"]}
    detectors = {"coco": {"model": "m.onnx"}, "fire": {"model": "f.onnx"}}
    base = {"grid": GRID, "cameras": [cam], "detectors": detectors, "base_dir": str(REPO)}
    on = SiteConfig.model_validate(base | {"hazards": {"fire": {"confirm_model": "fire-confirm",
                                                                 "confirm_min_score": 0.7}}})
    rules = [r for r in CameraAnalyzer(on, on.cameras[0]).rules if r.hazard == Hazard.FIRE]
    assert len(rules) == 1 and isinstance(rules[0], FireRule)
    assert isinstance(rules[0].confirm, FireConfirmClassifier) and rules[0].confirm_min_score == 0.7
    default = SiteConfig.model_validate(base)
    rule = next(r for r in CameraAnalyzer(default, default.cameras[0]).rules if r.hazard == Hazard.FIRE)
    assert isinstance(rule, FireRule) and rule.confirm is not None and rule.confirm.path.name == MODEL.name
    assert rule.confirm_min_score == 0.6
    off = SiteConfig.model_validate(base | {"hazards": {"fire": {"confirm_model": None}}})
    rule_off = next(r for r in CameraAnalyzer(off, off.cameras[0]).rules if r.hazard == Hazard.FIRE)
    assert isinstance(rule_off, FireRule) and rule_off.confirm is None


def test_unknown_confirm_model_is_a_clear_error() -> None:
    cam = {"id": "cam1", "url": "x.mp4", "grid": "G", "zones": [], "hazards": ["fire"]}
    cfg = SiteConfig.model_validate({"grid": GRID, "cameras": [cam], "base_dir": str(REPO),
                                     "detectors": {"fire": {"model": "f.onnx"}},
                                     "hazards": {"fire": {"confirm_model": "no-such-model"}}})
    with pytest.raises(FileNotFoundError, match="no-such-model.*confirm_model to null"):
        CameraAnalyzer(cfg, cfg.cameras[0])
