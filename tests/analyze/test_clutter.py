"""ClutterRule on the real corridor clip: people walking (no incident), a real object cut out of a dataset
image and composited onto the floor (one incident), the e-bike callout; plus synthetic detector-path cases."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.analyze.clutter import UNKNOWN, ClutterRule
from pipeline.analyze.incident import Hazard, Incident, IncidentEvent
from pipeline.analyze.rules import FrameView
from pipeline.analyze.static_objects import StaticObjectDetector
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.detections import Detections
from tests.fixtures.media import shared_clip_at_1fps

FLOOR = [[0.0, 0.6], [1.0, 0.6], [1.0, 1.0], [0.0, 1.0]]
"""The wooden floor of the corridor clip (768x432)."""
DWELL = 20.0
PLACED_AT = 40
"""Frame index (1 fps) from which the object stands in the corridor."""
RULE = HazardRule(classes=["bicycle", "motorcycle", "suitcase", "chair", "couch", "bench"], dwell_seconds=DWELL,
                  clear_seconds=60, update_interval_seconds=1e9, severity=3)
MOTORCYCLE = "yuskun__1d3c0507e127f1ea"
"""A vehicles/val image whose motorcycle, cut out and pasted on the floor, COCO detects (0.76)."""
HALF_RATE = 2
"""Frame step of the composited-object cases (PLACED_AT is even, so the placement frame is judged)."""
COCO = {0: "person", 1: "bicycle", 3: "motorcycle", 28: "suitcase", 56: "chair"}


def zone(kind: str = "corridor") -> ZoneConfig:
    return ZoneConfig(id="hall", kind=kind, polygon=FLOOR)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def clip(shared_dir: Path) -> list[np.ndarray]:
    """The corridor clip at 1 fps (140 frames)."""
    return shared_clip_at_1fps(shared_dir, "one-by-one-person-detection.mp4")


@pytest.fixture(scope="module")
def coco(shared_dir: Path) -> object:
    model = shared_dir / "models" / "yolo11n-coco.onnx"
    if not model.is_file():
        pytest.skip(f"{model} missing")
    from pipeline.detect.yolo import YoloDetector

    return YoloDetector(str(model), threads=1)


def detect_all(det: object, frames: list[np.ndarray]) -> list[Detections]:
    return [det.detect(f) for f in frames]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def clean_dets(coco: object, clip: list[np.ndarray]) -> list[Detections]:
    return detect_all(coco, clip)


def cutout(shared: Path, dataset: str, classes: tuple[int, ...], stem: str = "*") -> np.ndarray:
    """BGRA cut-out of the largest labelled object of ``classes`` (in an image with <= 2 labels, named
    ``stem``), with a feathered elliptical alpha mask."""
    best: tuple[float, Path, list[float]] | None = None
    for lab in sorted((shared / "datasets" / dataset / "labels" / "val").glob(f"{stem}.txt")):
        rows = [list(map(float, line.split()[:5])) for line in lab.read_text().splitlines() if line.strip()]
        for r in rows:
            if int(r[0]) in classes and len(rows) <= 2 and (best is None or r[3] * r[4] > best[0]):
                img = lab.parents[2] / "images" / "val" / (lab.stem + ".jpg")
                if img.is_file():
                    best = (r[3] * r[4], img, r)
    if best is None:
        pytest.skip(f"no {dataset} object of classes {classes}")
    img = cv2.imread(str(best[1]))
    h, w = img.shape[:2]
    _, cx, cy, bw, bh = best[2]
    x1, y1 = int((cx - bw / 2) * w), int((cy - bh / 2) * h)
    x2, y2 = int((cx + bw / 2) * w), int((cy + bh / 2) * h)
    crop = img[max(0, y1):y2, max(0, x1):x2]
    ch, cw = crop.shape[:2]
    alpha = np.zeros((ch, cw), np.uint8)
    cv2.ellipse(alpha, (cw // 2, ch // 2), (int(cw * 0.46), int(ch * 0.46)), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(2.0, 0.04 * min(cw, ch)))
    return np.dstack([crop, alpha])


def paste(frame: np.ndarray, obj: np.ndarray, bottom_centre: tuple[int, int], height: int) -> np.ndarray:
    """Composite BGRA ``obj`` scaled to ``height`` px with its bottom centre at ``bottom_centre``."""
    s = height / obj.shape[0]
    o = cv2.resize(obj, (max(1, int(obj.shape[1] * s)), height), interpolation=cv2.INTER_AREA)
    oh, ow = o.shape[:2]
    x1, y1 = bottom_centre[0] - ow // 2, bottom_centre[1] - oh
    out = frame.copy()
    region = out[y1:y1 + oh, x1:x1 + ow].astype(np.float32)
    a = o[:, :, 3:4].astype(np.float32) / 255.0
    out[y1:y1 + oh, x1:x1 + ow] = np.clip(region * (1 - a) + o[:, :, :3] * a + 0.5, 0, 255).astype(np.uint8)
    return out


def run(rule: ClutterRule, frames: list[np.ndarray], dets: list[Detections], t0: float = 1000.0,
        step: int = 1) -> list[Incident]:
    """Judge the frames in order, one a second (``frames[i]`` at ``t0 + i``); ``step`` 2 judges every other
    one (0.5 fps: ``dets`` then holds only those frames' detections)."""
    out: list[Incident] = []
    for i, (f, d) in enumerate(zip(frames[::step], dets, strict=True)):
        out += rule.judge(FrameView(t0 + i * step, f.shape[1], f.shape[0], f, {"coco": d}))
    return out


def test_people_walking_no_incident(clip: list[np.ndarray], clean_dets: list[Detections]) -> None:
    rule = ClutterRule("cam1", zone(), RULE)
    assert run(rule, clip, clean_dets) == []


def test_without_person_masking_a_still_person_alerts(clip: list[np.ndarray], clean_dets: list[Detections]) -> None:
    """Control: the person standing still for > DWELL s is what the person mask keeps out."""
    rule = ClutterRule("cam1", zone(), RULE, person_detector="none")
    events = run(rule, clip, clean_dets)
    assert IncidentEvent.OPENED in [e.event for e in events]


@pytest.fixture(scope="module")
def clutter_dets(clip: list[np.ndarray]) -> list[Detections]:
    """The trained clutter model (models/clutter.onnx) on the clean corridor clip."""
    from pipeline.detect.yolo import YoloDetector

    model = Path(__file__).resolve().parents[2] / "models" / "clutter.onnx"
    det = YoloDetector(str(model), input_size=416, threads=1)
    return detect_all(det, clip)


def test_clutter_model_on_the_clean_corridor_opens_nothing(clip: list[np.ndarray], clean_dets: list[Detections],
                                                           clutter_dets: list[Detections]) -> None:
    """The deployed clutter model plus COCO on the clean corridor clip (people walk, one stands ~20 s)."""
    rule = ClutterRule("cam1", zone(), RULE.model_copy(update={"dwell_seconds": 8.0}), model_free=False)
    events = [e for i, (f, d, c) in enumerate(zip(clip, clean_dets, clutter_dets, strict=True))
              for e in rule.judge(FrameView(1000.0 + i, f.shape[1], f.shape[0], f, {"coco": d, "clutter": c}))]
    assert events == [], [(e.ts, e.details.get("labels")) for e in events]


@pytest.mark.parametrize(("person_cover", "alerts"), [(0.6, False), (1.1, True)])
def test_a_person_read_as_a_bin_is_hidden_by_the_person_box(clip: list[np.ndarray], clean_dets: list[Detections],
                                                            person_cover: float, alerts: bool) -> None:
    """clutter v1 read the man standing ~20 s in a dark coat as ``overflowing_bin`` (0.5-0.8) on 46 of 139
    frames. Replayed here as an ``overflowing_bin`` on each real COCO person box: the person box hides it
    (``person_cover`` 0.6); with hiding off (> 1) the clean clip opens an incident."""
    def as_bin(d: Detections) -> Detections:
        p = d.with_classes(frozenset({"person"})).with_min_confidence(0.5)
        return Detections.from_arrays(p.xyxy, p.confidence, [0] * len(p), {0: "overflowing_bin"})

    rule = ClutterRule("cam1", zone(), RULE.model_copy(update={"dwell_seconds": 8.0}), model_free=False,
                       person_cover=person_cover)
    events = [e for i, (f, d) in enumerate(zip(clip, clean_dets, strict=True))
              for e in rule.judge(FrameView(1000.0 + i, f.shape[1], f.shape[0], f, {"coco": d, "clutter": as_bin(d)}))]
    opened = [e for e in events if e.event is IncidentEvent.OPENED]
    assert bool(opened) is alerts, [(e.ts, e.details.get("labels")) for e in opened]
    if alerts:
        assert "overflowing_bin" in opened[0].details["labels"]  # type: ignore[operator]


@pytest.mark.parametrize(("dataset", "classes", "where"), [
    ("clutter", (0, 1), (170, 415)),       # a garbage pile left of the table
    ("clutter", (0, 1), (640, 420)),       # ... right of it
])
def test_composited_object_opens_one_incident(shared_dir: Path, clip: list[np.ndarray], coco: object,
                                              clean_dets: list[Detections], dataset: str,
                                              classes: tuple[int, ...], where: tuple[int, int]) -> None:
    obj = cutout(shared_dir, dataset, classes)
    frames = [paste(f, obj, where, 120) if i >= PLACED_AT else f for i, f in enumerate(clip)]
    # Judged at 0.5 fps (half the detector runs): DWELL is 10 judged frames, the background learns in 10 s.
    dets = clean_dets[:PLACED_AT:HALF_RATE] + detect_all(coco, frames[PLACED_AT::HALF_RATE])
    events = run(ClutterRule("cam1", zone(), RULE), frames, dets, step=HALF_RATE)
    assert [e.event for e in events] == [IncidentEvent.OPENED]
    e = events[0]
    assert e.hazard is Hazard.CLUTTER and e.zone_id == "hall"
    assert e.ts >= 1000.0 + PLACED_AT + DWELL
    assert 0.0 < float(e.details["blocked_share"]) < 0.5  # type: ignore[arg-type]
    assert e.details["objects"] and e.details["ebike"] is False
    # the reported box lies on the pasted object
    cx, cy = where[0] / 768, (where[1] - 60) / 432
    assert any(b.x1 <= cx <= b.x2 and b.y1 <= cy <= b.y2 for b in e.boxes), e.boxes


@pytest.fixture(scope="module")
def motorcycle_clip(shared_dir: Path, clip: list[np.ndarray], coco: object,
                    clean_dets: list[Detections]) -> tuple[list[np.ndarray], list[Detections]]:
    """The corridor clip with the motorcycle pasted from PLACED_AT, and COCO on it: the same for every zone
    kind, so detected once per module."""
    obj = cutout(shared_dir, "vehicles", (3,), MOTORCYCLE)
    frames = [paste(f, obj, (180, 425), 150) if i >= PLACED_AT else f for i, f in enumerate(clip)]
    return frames, clean_dets[:PLACED_AT] + detect_all(coco, frames[PLACED_AT:])


@pytest.mark.parametrize(("kind", "ebike", "severity"), [
    ("corridor", True, 4), ("stairwell", True, 4), ("fire_lane", False, 3),
])
def test_motorcycle_callout(motorcycle_clip: tuple[list[np.ndarray], list[Detections]],
                            kind: str, ebike: bool, severity: int) -> None:
    frames, dets = motorcycle_clip
    events = run(ClutterRule("cam1", zone(kind), RULE), frames, dets)
    assert [e.event for e in events] == [IncidentEvent.OPENED]
    e = events[0]
    labels = set(e.details["labels"])  # type: ignore[arg-type]
    assert labels & {"motorcycle", "bicycle"}, e.details
    assert e.details["ebike"] is ebike and e.severity == severity


# -- detector path and the change detector, synthetic -------------------------------------------------

def test_detector_path_without_image_dwell_and_labels() -> None:
    rule = ClutterRule("cam1", zone(), RULE.model_copy(update={"dwell_seconds": 10}))
    bike = Detections.from_arrays([[100, 300, 200, 400]], [0.8], [1], COCO)
    events = [e for t in range(15) for e in rule.update(float(t), bike, 768, 432)]
    assert [(e.event, e.ts, e.severity) for e in events] == [(IncidentEvent.OPENED, 10.0, 4)]
    assert events[0].details["labels"] == ["bicycle"] and events[0].details["ebike"] is True
    assert 0 < float(events[0].details["blocked_share"]) < 0.2  # type: ignore[arg-type]


@pytest.mark.parametrize(("label", "detector", "counts"), [
    ("bicycle", "coco", True),
    ("person", "coco", False),
    ("garbage", "clutter", True),
    ("overflowing_bin", "clutter", True),
    ("bin", "clutter", False),
])
def test_which_classes_count(label: str, detector: str, counts: bool) -> None:
    rule = ClutterRule("cam1", zone(), RULE.model_copy(update={"dwell_seconds": 2}), model_free=False)
    d = Detections.from_arrays([[100, 300, 200, 400]], [0.8], [0], {0: label})
    img = np.zeros((432, 768, 3), np.uint8)
    events = [e for t in range(5) for e in rule.judge(FrameView(float(t), 768, 432, img, {detector: d}))]
    assert bool(events) is counts


def test_moving_object_never_counts() -> None:
    rule = ClutterRule("cam1", zone(), RULE.model_copy(update={"dwell_seconds": 5}), model_free=False)
    events = []
    for t in range(30):
        x = 20 * t
        d = Detections.from_arrays([[x, 300, x + 100, 400]], [0.8], [1], COCO)   # a bicycle ridden through
        events += rule.update(float(t), d, 768, 432)
    assert events == []


def test_change_detector_ignores_global_lighting() -> None:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(60, 200, (90, 160, 3)).astype(np.uint8), (0, 0), 3)
    sc = StaticObjectDetector(learn_frames=3, min_object_px=4)
    no = np.zeros((90, 160), bool)
    t0 = 1.8e9
    scenes = [sc.update(t0 + t, np.clip(base * (1 + 0.01 * t), 0, 255).astype(np.uint8), no) for t in range(40)]
    assert not scenes[-1].learning and scenes[-1].blobs == ()


def test_unknown_label_constant() -> None:
    assert UNKNOWN == "unknown object"
