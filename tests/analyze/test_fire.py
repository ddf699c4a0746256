"""FireRule: k-of-n confirmation, flicker / colour / person suppressors, clearing; real fire stills."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.analyze.fire import FireRule, fire_colour_share, flicker_score
from pipeline.analyze.incident import Hazard, Incident, IncidentEvent
from pipeline.analyze.rules import FrameView
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.detections import Detections

W, H = 640, 480
NAMES = {0: "fire", 1: "smoke"}
RULE = HazardRule(detector="fire", classes=["fire", "smoke"], dwell_seconds=0, confirm_k=3, confirm_n=5,
                  min_confidence=0.4, clear_seconds=30, severity=5, update_interval_seconds=15)


def flame_frame(rng: np.random.Generator, box: tuple[int, int, int, int], seed: int) -> np.ndarray:
    """A dark frame with a flame-coloured, noisy blob filling ``box`` (varies with ``seed``)."""
    img = np.full((H, W, 3), 30, np.uint8)
    x1, y1, x2, y2 = box
    r = np.random.default_rng(seed)
    patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
    patch[:] = (0, int(r.integers(90, 170)), 255)
    noise = r.integers(0, 90, patch.shape[:2])
    patch[:, :, 1] = np.clip(patch[:, :, 1].astype(int) + noise - 45, 0, 255)
    img[y1:y2, x1:x2] = patch
    return img


def fire_dets(box: tuple[float, float, float, float], conf: float = 0.8, cls: int = 0) -> dict[str, Detections]:
    return {"fire": Detections.from_arrays([box], [conf], [cls], NAMES)}


def run(rule: FireRule, frames: list[tuple[np.ndarray, dict[str, Detections]]], t0: float = 100.0,
        step: float = 1.0) -> list[Incident]:
    out: list[Incident] = []
    for i, (img, dets) in enumerate(frames):
        out += rule.judge(FrameView(t0 + i * step, W, H, img, dets))
    return out


def flickering(n: int, seed: int = 0) -> list[tuple[np.ndarray, dict[str, Detections]]]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        x2, y1 = 300 + int(rng.integers(-25, 25)), 200 + int(rng.integers(-25, 25))
        box = (200, y1, x2, 360)
        frames.append((flame_frame(rng, box, seed * 100 + i), fire_dets(box)))
    return frames


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flickering_fire_opens_once(seed: int) -> None:
    rule = FireRule("cam1", None, RULE)
    events = run(rule, flickering(5, seed))
    assert [(e.event, e.hazard, e.severity, e.zone_id) for e in events] == [
        (IncidentEvent.OPENED, Hazard.FIRE, 5, None)]
    assert events[0].id.startswith("cam1-frame-fire-")
    assert events[0].details["labels"] == ["fire"] and events[0].details["confirmed_frames"] >= 3


@pytest.mark.parametrize("n", [1, 2])
def test_too_few_frames_nothing(n: int) -> None:
    # one frame has no flicker yet; two flickering frames are fewer than k=3
    assert run(FireRule("cam1", None, RULE), flickering(n)) == []


@pytest.mark.parametrize("colour", [(0, 0, 255), (0, 100, 255), (40, 40, 200)])
def test_static_red_box_never_alerts(colour: tuple[int, int, int]) -> None:
    img = np.full((H, W, 3), 30, np.uint8)
    img[100:140, 300:330] = colour             # a red lamp: constant area and intensity
    rule = FireRule("cam1", None, RULE)
    frames = [(img.copy(), fire_dets((300, 100, 330, 140), 0.9)) for _ in range(20)]
    assert run(rule, frames) == []
    assert all(c.flicker < rule.min_flicker for c in rule.last_checks)


def test_rigidly_moving_orange_object_never_alerts() -> None:
    texture = flame_frame(np.random.default_rng(0), (0, 0, 60, 60), 7)[:60, :60]
    frames = []
    for i in range(15):
        img = np.full((H, W, 3), 30, np.uint8)
        x = 100 + 12 * i                              # an orange jacket walking by: same content, moved
        img[200:260, x:x + 60] = texture
        frames.append((img, fire_dets((x, 200, x + 60, 260))))
    assert run(FireRule("cam1", None, RULE), frames) == []


@pytest.mark.parametrize("cover", [1.0, 0.7])
def test_fire_box_on_a_person_ignored(cover: float) -> None:
    frames = flickering(10)
    for _, dets in frames:
        x1, y1, x2, y2 = dets["fire"].xyxy[0]
        h = (y2 - y1) / cover
        dets["coco"] = Detections.from_arrays([[x1 - 5, y2 - h, x2 + 5, y2 + 5]], [0.9], [0], {0: "person"})
    assert run(FireRule("cam1", None, RULE), frames) == []


def test_person_elsewhere_does_not_suppress() -> None:
    frames = flickering(5)
    for _, dets in frames:
        dets["coco"] = Detections.from_arrays([[500, 50, 600, 400]], [0.9], [0], {0: "person"})
    assert [e.event for e in run(FireRule("cam1", None, RULE), frames)] == [IncidentEvent.OPENED]


def test_grey_box_called_fire_fails_colour_check() -> None:
    frames = flickering(8)
    grey = [(cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR), d) for img, d in frames]
    assert run(FireRule("cam1", None, RULE), grey) == []
    # the same grey flicker labelled smoke passes (smoke has no colour check)
    smoke = [(img, {"fire": Detections.from_arrays(d["fire"].xyxy, [0.8], [1], NAMES)}) for img, d in grey]
    assert [e.details["smoke_only"] for e in run(FireRule("cam1", None, RULE), smoke)] == [True]


@pytest.mark.parametrize(("gap", "events"), [
    (29.0, [IncidentEvent.OPENED]),
    (31.0, [IncidentEvent.OPENED, IncidentEvent.CLEARED]),
])
def test_cleared_after_clear_seconds(gap: float, events: list[IncidentEvent]) -> None:
    rule = FireRule("cam1", None, RULE)
    out = run(rule, flickering(6))
    empty = np.full((H, W, 3), 30, np.uint8)
    t = 105.0
    while t < 105.0 + gap:
        t += 1.0
        out += rule.judge(FrameView(t, W, H, empty, {"fire": Detections.empty(NAMES)}))
    assert [e.event for e in out] == events
    if len(out) == 2:
        assert out[0].id == out[1].id


def test_zone_rule_only_counts_boxes_in_zone() -> None:
    zone = ZoneConfig(id="store", kind="area", polygon=[[0.6, 0.0], [1.0, 0.0], [1.0, 1.0], [0.6, 1.0]])
    rule = FireRule("cam1", zone, RULE)
    assert run(rule, flickering(8)) == []                 # the flame is left of the zone
    inside = [(np.ascontiguousarray(np.roll(img, 300, axis=1)), fire_dets((500, d["fire"].xyxy[0][1], 600, 360)))
              for img, d in flickering(5)]
    assert [e.zone_id for e in run(FireRule("cam1", zone, RULE), inside)] == ["store"]


def test_k_of_n_needs_frames_within_window() -> None:
    # 5 flickering frames 10 s apart: never 3 within the 10 s window
    assert run(FireRule("cam1", None, RULE, window_seconds=10), flickering(5), step=10.0) == []


def test_measures() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, :5] = (0, 0, 255)
    assert fire_colour_share(img, (0, 0, 10, 10)) == pytest.approx(0.5)
    assert flicker_score([]) == 0.0


# -- real fire stills: label boxes as detections, flicker simulated by jittered crops -----------------

def load_fire_stills(shared: Path, n: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, largest fire box px) of the first ``n`` val images that have a fire label."""
    root = shared / "datasets" / "fire"
    out = []
    for img_path in sorted((root / "images" / "val").glob("*.jpg")):
        lab = root / "labels" / "val" / (img_path.stem + ".txt")
        if not lab.is_file():
            continue
        rows = [list(map(float, line.split())) for line in lab.read_text().splitlines() if line.strip()]
        fires = [r for r in rows if int(r[0]) == 0 and r[3] * r[4] > 0.01]
        if not fires:
            continue
        img = cv2.imread(str(img_path))
        h, w = img.shape[:2]
        _, cx, cy, bw, bh = max(fires, key=lambda r: r[3] * r[4])[:5]
        out.append((img, np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])))
        if len(out) == n:
            break
    return out


def jittered(img: np.ndarray, box: np.ndarray, rng: np.random.Generator,
             n: int) -> list[tuple[np.ndarray, dict[str, Detections]]]:
    """``n`` frames: the still with +-10 % brightness flicker, the box jittered by up to 8 % of its size."""
    frames = []
    bw, bh = box[2] - box[0], box[3] - box[1]
    for _ in range(n):
        gain = rng.uniform(0.9, 1.1)
        frame = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        j = box + rng.uniform(-0.08, 0.08, 4) * np.array([bw, bh, bw, bh])
        frames.append((frame, fire_dets(tuple(float(v) for v in j), float(rng.uniform(0.5, 0.9)))))
    return frames


def test_real_fire_stills_open_one_incident_each(shared_dir: Path) -> None:
    stills = load_fire_stills(shared_dir)
    if len(stills) < 6:
        pytest.skip("fewer than 6 labelled fire images")
    rng = np.random.default_rng(0)
    opened = 0
    for i, (img, box) in enumerate(stills):
        h, w = img.shape[:2]
        rule = FireRule(f"cam{i}", None, RULE)
        events: list[Incident] = []
        for k, (frame, dets) in enumerate(jittered(img, box, rng, 6)):
            events += rule.judge(FrameView(100.0 + k, w, h, frame, dets))
        assert [e.event for e in events] == [IncidentEvent.OPENED], [c for c in rule.last_checks]
        opened += 1
    assert opened == 6


def test_real_fire_stills_frozen_box_never_alerts(shared_dir: Path) -> None:
    """The same stills with a constant box and no brightness change: no flicker, no alert."""
    stills = load_fire_stills(shared_dir)
    if not stills:
        pytest.skip("no labelled fire images")
    for img, box in stills:
        h, w = img.shape[:2]
        rule = FireRule("cam1", None, RULE)
        dets = fire_dets(tuple(float(v) for v in box))
        assert [e for k in range(10) for e in rule.judge(FrameView(100.0 + k, w, h, img, dets))] == []
