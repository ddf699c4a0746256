"""FireRule smoke proposals on real held-out frames, through the real detector and second stage.

``fire.onnx`` scores real smoke below the rule's 0.4 floor; with the default smoke knobs
(``hazards.fire.smoke_min_confidence`` / ``smoke_min_score``, calibrated on training frames) a ``smoke``
box from the lower floor counts when the classifier's p(smoke) is high enough. The frames were picked by
running the rule over the val splits (scripts/smoke_operating_point.py): a fixed-CCTV smoke frame of the
fire2 val split (a clip no training frame comes from) that only the smoke proposal alarms, and a
traffic-camera frame (vehicles val, in no fire set) on which the detector proposes smoke that the classifier
rejects. Flicker is off (one still frame repeated); timestamps are real Unix times.
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
from pipeline.config import SiteConfig
from pipeline.config_hazards import FireRuleConfig
from pipeline.detect.detections import Detections
from pipeline.detect.fire_confirm import FireConfirmClassifier
from pipeline.detect.yolo import YoloDetector

REPO = Path(__file__).resolve().parents[2]
DETECTOR, CONFIRM = REPO / "models" / "fire.onnx", REPO / "models" / "fire-confirm.onnx"
T0 = 1_800_000_000.0
SMOKE_FRAME = ("fire2", "krcctv__C097105_001_3945")  # CCTV smoke, no fire label
HARD_NEGATIVE = ("vehicles", "yuskun__3429c6851095a4c3")  # traffic camera, a confident smoke box on no smoke
GRID = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
    {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]


@pytest.fixture(scope="module")
def models() -> tuple[YoloDetector, FireConfirmClassifier]:
    if not DETECTOR.is_file() or not CONFIRM.is_file():
        pytest.skip("models/fire.onnx or models/fire-confirm.onnx missing")
    cfg = FireRuleConfig.model_validate({})
    return (YoloDetector(DETECTOR, input_size=416, threads=1, min_confidence=cfg.smoke_min_confidence),
            FireConfirmClassifier(CONFIRM, threads=1))


def _frame(shared_dir: Path, ds: str, stem: str) -> np.ndarray:
    img = cv2.imread(str(shared_dir / "datasets" / ds / "images" / "val" / f"{stem}.jpg"))
    if img is None:
        pytest.skip(f"{ds}/{stem} missing")
    return img


def _rule(confirm: FireConfirmClassifier, **knobs: Any) -> FireRule:
    cfg = FireRuleConfig.model_validate({"detector": "fire", "classes": ["fire", "smoke"], "confirm_k": 3,
                                         "confirm_n": 4, "dwell_seconds": 0, "min_confidence": 0.4} | knobs)
    return FireRule("cam1", None, cfg, min_flicker=0, confirm=confirm, confirm_min_score=cfg.confirm_min_score)


def _run(rule: FireRule, det: YoloDetector, img: np.ndarray, frames: int = 4) -> list[Any]:
    d = det.detect(img)
    events: list[Any] = []
    for k in range(frames):
        events += rule.judge(FrameView(T0 + 0.5 * k, img.shape[1], img.shape[0], img, {"fire": d}))
    return events


def test_cctv_smoke_alarms_only_with_smoke_proposals(shared_dir: Path,
                                                     models: tuple[YoloDetector, FireConfirmClassifier]) -> None:
    det, clf = models
    img = _frame(shared_dir, *SMOKE_FRAME)
    assert _run(_rule(clf, smoke_min_score=None), det, img) == []  # the rule before: smoke boxes need 0.4
    rule = _rule(clf)
    events = _run(rule, det, img)
    assert [e.event.value for e in events] == ["opened"]
    assert events[0].started_at == T0 and events[0].details["smoke_only"] is True
    counted = [c for c in rule.last_checks if c.counted]
    assert counted and all(c.label == "smoke" and c.source == "detector" for c in counted)
    assert any(c.confidence < rule.rule.min_confidence for c in counted)  # found below the fire floor
    assert all(c.smoke_score is not None and c.smoke_score >= rule.smoke_min_score for c in counted
               if rule.smoke_min_score is not None)
    assert rule.state()["boxes"]


def test_hard_negative_smoke_box_is_rejected(shared_dir: Path,
                                             models: tuple[YoloDetector, FireConfirmClassifier]) -> None:
    det, clf = models
    img = _frame(shared_dir, *HARD_NEGATIVE)
    rule = _rule(clf)
    assert _run(rule, det, img) == []
    smoke = [c for c in rule.last_checks if c.label == "smoke"]
    assert smoke, "the detector should propose smoke here (that is what makes it a hard negative)"
    assert all(c.reason == "confirm" and not c.counted for c in smoke)
    min_score = rule.smoke_min_score
    assert min_score is not None
    assert all(c.smoke_score is not None and c.smoke_score < min_score for c in smoke)


def test_smoke_tiles_are_candidates(shared_dir: Path, models: tuple[YoloDetector, FireConfirmClassifier]) -> None:
    """A tile classifier's smoke tiles are ``smoke`` candidates (source ``tile``); none above its threshold,
    none counted. fire-confirm stands in for a tile model here (same contract)."""
    _, clf = models
    img = _frame(shared_dir, *SMOKE_FRAME)
    none = Detections.empty({0: "fire", 1: "smoke"})  # no detector boxes at all: only tiles can count
    for threshold, opens in ((0.2, True), (1.0, False)):
        rule = _rule(clf, smoke_min_score=None)
        rule.smoke_tiles, rule.smoke_tile_min_score = clf, threshold
        events: list[Any] = []
        for k in range(4):
            events += rule.judge(FrameView(T0 + 0.5 * k, img.shape[1], img.shape[0], img, {"fire": none}))
        assert bool(events) is opens
        if opens:
            assert rule.last_checks and all(c.source == "tile" and c.label == "smoke" for c in rule.last_checks)
            assert all(c.smoke_score is not None and c.smoke_score >= threshold for c in rule.last_checks)
        else:
            assert rule.last_checks == []


def test_site_yaml_smoke_knobs_reach_the_rule() -> None:
    cam = {"id": "cam1", "url": "x.mp4", "grid": "G", "zones": [], "hazards": ["fire"]}
    base = {"grid": GRID, "cameras": [cam], "base_dir": str(REPO),
            "detectors": {"coco": {"model": "m.onnx"}, "fire": {"model": "f.onnx"}}}
    default = SiteConfig.model_validate(base)
    rule = next(r for r in CameraAnalyzer(default, default.cameras[0]).rules if r.hazard == Hazard.FIRE)
    cfg = FireRuleConfig.model_validate({})
    assert isinstance(rule, FireRule) and rule.smoke_min_score == cfg.smoke_min_score is not None
    assert rule.smoke_min_confidence == cfg.smoke_min_confidence < rule.rule.min_confidence
    assert rule.smoke_tiles is None
    knobs = {"smoke_min_score": 0.5, "smoke_min_confidence": 0.2, "smoke_tiles_model": str(CONFIRM),
             "smoke_tile_min_score": 0.95}
    site = SiteConfig.model_validate(base | {"hazards": {"fire": knobs}})
    rule = next(r for r in CameraAnalyzer(site, site.cameras[0]).rules if r.hazard == Hazard.FIRE)
    assert isinstance(rule, FireRule)
    assert (rule.smoke_min_score, rule.smoke_min_confidence, rule.smoke_tile_min_score) == (0.5, 0.2, 0.95)
    assert rule.smoke_tiles is not None and rule.smoke_tiles.path.name == CONFIRM.name
    off = SiteConfig.model_validate(base | {"hazards": {"fire": {"smoke_min_score": None}}})
    rule = next(r for r in CameraAnalyzer(off, off.cameras[0]).rules if r.hazard == Hazard.FIRE)
    assert isinstance(rule, FireRule) and rule.smoke_min_score is None
    assert rule.smoke_min_confidence == rule.rule.min_confidence


def test_check_config_warns_when_the_detector_floor_hides_smoke_proposals(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.analyze.fire_checks import smoke_floor_warnings
    from pipeline.cli import app

    # Left unset, the fire detector runs at the rule's smoke floor: nothing to warn about.
    unset = {"grid": GRID, "detectors": {"fire": {"model": "f.onnx"}}}
    assert smoke_floor_warnings(SiteConfig.model_validate(unset)) == []
    base = {"grid": GRID, "detectors": {"fire": {"model": "f.onnx", "min_confidence": 0.25}}}
    warned = smoke_floor_warnings(SiteConfig.model_validate(base))
    assert len(warned) == 1 and "detectors.fire.min_confidence 0.25" in warned[0]
    low = base | {"detectors": {"fire": {"model": "f.onnx", "min_confidence": 0.1}}}
    assert smoke_floor_warnings(SiteConfig.model_validate(low)) == []
    off = base | {"hazards": {"fire": {"smoke_min_score": None}}}
    assert smoke_floor_warnings(SiteConfig.model_validate(off)) == []
    site = tmp_path / "site.yaml"
    import yaml

    site.write_text(yaml.safe_dump(base))
    result = CliRunner().invoke(app, ["check-config", str(site)])
    assert result.exit_code == 0, result.output
    assert "warning: detectors.fire.min_confidence 0.25 is above hazards.fire.smoke_min_confidence 0.1" \
        in result.output.replace("\n", " ")


def test_fire_detector_left_unset_runs_at_the_smoke_floor(shared_dir: Path) -> None:
    """The registry builds the fire detector at the rule's smoke floor unless its floor is set explicitly."""
    from pipeline.detect.registry import DetectorRegistry

    model = str(shared_dir / "models" / "yolo11n-coco.onnx")  # any YOLO file: only the floor is looked at
    unset = SiteConfig.model_validate({"grid": GRID, "detectors": {"fire": {"model": model}, "coco": {"model": model}}})
    reg = DetectorRegistry(unset)
    floor = FireRuleConfig.of(unset.hazards["fire"]).smoke_min_confidence
    assert reg.create("fire").min_confidence == floor < unset.detectors["fire"].min_confidence
    assert reg.create("coco").min_confidence == unset.detectors["coco"].min_confidence  # not the fire rule's
    pinned = SiteConfig.model_validate({"grid": GRID, "detectors": {"fire": {"model": model, "min_confidence": 0.3}}})
    assert DetectorRegistry(pinned).create("fire").min_confidence == 0.3
