"""The motion gate on real clips: still scenes skip the detector, moving cars and left objects are never missed,
fire is never gated.

* parking: the e2e parked-car clip (``car-detection.mp4`` from 20 s, the car at rest 7.6-27.6 s) replayed as
  demo.yaml's ``lot-1`` (the ``vehicles`` detector, dwell 8 s) with the gate off and on: the same incidents at
  the same stream times, the same vehicles in the zone on every frame, and >= 80 % of the still frames gated.
* clutter: a real bag composited into the real corridor clip (``test_left_object_clips``' helpers, COCO's
  boxes on the composited frames) opens its incident at the same time with the gate on as off.
* fire: the fire detector is requested on every frame of a still scene while the others are carried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.analyze.analyzer import CameraAnalyzer, DetectRequest
from pipeline.analyze.incident import Incident, IncidentEvent
from pipeline.analyze.motion_gate import MotionGate, small_grey
from pipeline.config import SiteConfig, load_config
from pipeline.config_motion import MotionGateConfig
from pipeline.detect.detections import Detections
from pipeline.ingest.frame import Frame
from pipeline.replay import FrameRecord, Replay
from pipeline.worker_metrics import WorkerMetrics
from tests.analyze.test_left_object_clips import CORRIDOR, FLOOR, WHITE_BAG, Paste, cut, scene
from tests.fixtures.media import shared_clip_at_1fps

REPO = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.25
"""Unix seconds of the first frame."""
HOLD = (7.6, 27.6)
"""Stream seconds during which the parked clip's car stands still (and nothing else moves)."""
GATE_ON = MotionGateConfig(enabled=True)


def with_gate(site: SiteConfig, gate: MotionGateConfig) -> SiteConfig:
    return site.model_copy(update={"worker": site.worker.model_copy(update={"motion_gate": gate})})


# -- parking: replay of the parked-car clip with the gate off and on ----------------------------------------------


@pytest.fixture(scope="module")
def parked_clip(shared_dir: Path) -> Path:
    """The e2e parked-car clip (tests/test_e2e_parking.py: same file, same cache)."""
    from tests.fixtures.media import CACHE
    from tests.scripts_loader import load_script

    src = shared_dir / "clips" / "car-detection.mp4"
    if not src.is_file():
        pytest.skip(f"missing {src}")
    out = CACHE / "car-parks-27.6-20-gop1-from20.mp4"
    if not out.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        load_script("make_demo_media").write_held_clip(src, out, 27.6, 20.0, 1.0, start=20.0)
    return out


def replay(site: SiteConfig, clip: Path) -> tuple[list[FrameRecord], Any, Replay]:
    rp = Replay(site, site.camera("lot-1"))
    records: list[FrameRecord] = []
    summary = rp.run(clip, start_ts=T0, on_frame=records.append)
    return records, summary, rp


@pytest.fixture(scope="module")
def parking_runs(parked_clip: Path) -> dict[str, tuple[list[FrameRecord], Any, Replay]]:
    site = load_config(REPO / "configs" / "demo.yaml")  # the demo turns the gate on: each run sets its own
    off = replay(with_gate(site, MotionGateConfig(enabled=False)), parked_clip)
    return {"off": off, "on": replay(with_gate(site, GATE_ON), parked_clip)}


def in_zone(record: FrameRecord, site: SiteConfig, detector: str = "vehicles") -> int:
    """Vehicle boxes (>= 0.35) the rules saw whose bottom centre is in lot-1's zone."""
    zone = site.camera("lot-1").zones[0].polygon
    xs, ys = [p[0] for p in zone], [p[1] for p in zone]
    d = record.detections.get(detector) or Detections.empty()
    w, h = record.frame.width, record.frame.height
    return sum(1 for box, score in zip(d.xyxy.tolist(), d.confidence.tolist(), strict=True)
               if score >= 0.35 and min(xs) <= (box[0] + box[2]) / 2 / w <= max(xs)
               and min(ys) <= box[3] / h <= max(ys) + 0.02)


@pytest.mark.slow
def test_parking_replay_incidents_are_the_same_with_the_gate_on(
        parking_runs: dict[str, tuple[list[FrameRecord], Any, Replay]]) -> None:
    (_, off, _), (_, on, _) = parking_runs["off"], parking_runs["on"]
    assert [vars(s) for s in off.incidents], "the gate-off replay must alert on the parked car"
    spans = [{k: v for k, v in vars(s).items() if k != "id"} for s in off.incidents]
    assert [{k: v for k, v in vars(s).items() if k != "id"} for s in on.incidents] == spans
    assert on.frames_analysed == off.frames_analysed


@pytest.mark.slow
def test_a_moving_car_is_never_missed(parking_runs: dict[str, tuple[list[FrameRecord], Any, Replay]]) -> None:
    """Every frame on which the car drives in or out (the number of vehicles in the zone differs from the frame
    before) ran the detector, and the rules saw as many vehicles in the zone on every frame, carried or not."""
    site = load_config(REPO / "configs" / "demo.yaml")
    off, on = parking_runs["off"][0], parking_runs["on"][0]
    assert len(off) == len(on)
    moved = 0
    for i, (a, b) in enumerate(zip(off, on, strict=True)):
        carried = b.rules[0]["detections_carried"]
        assert in_zone(a, site) == in_zone(b, site), (a.t, in_zone(a, site), in_zone(b, site), carried)
        if i and in_zone(a, site) != in_zone(off[i - 1], site):
            moved += 1
            assert carried == [], f"t={a.t}: the zone changed but the detector was skipped"
    assert moved >= 2  # in, and out at the end of the hold


@pytest.mark.slow
def test_still_scene_is_gated(parking_runs: dict[str, tuple[list[FrameRecord], Any, Replay]]) -> None:
    """>= 80 % of the frames while the car stands still carry the detections (a re-check every 10 s), and the
    replay's rule states say which frames were gated; the gate-off run has no such key."""
    records, _, rp = parking_runs["on"]
    still = [r for r in records if HOLD[0] + 1.5 <= r.t <= HOLD[1] - 0.5]
    gated = [r for r in still if r.rules[0]["detections_carried"] == ["vehicles"]]
    assert len(still) >= 15
    assert len(gated) >= 0.8 * len(still), [(r.t, r.rules[0]["detections_carried"]) for r in still]
    gate = rp.analyzer.motion_gate
    assert gate is not None and gate.frames_gated >= len(gated)
    assert gate.frames_gated + gate.frames_detected == len(records)
    assert "detections_carried" not in parking_runs["off"][0][0].rules[0]


# -- clutter: a left bag alerts on time with the gate on -------------------------------------------------------------


def clutter_site(gate: MotionGateConfig) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
            {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}],
        "cameras": [{"id": "corridor-1", "url": "x.mp4", "grid": "G", "motion_gate": gate.model_dump(),
                     "zones": [{"id": "floor", "kind": "corridor", "polygon": FLOOR}]}],
        "hazards": {"clutter": {"classes": ["bicycle", "motorcycle", "suitcase", "chair", "couch", "bench"],
                                "dwell_seconds": 30, "clear_seconds": 60, "update_interval_seconds": 1e9,
                                "analysis_interval_seconds": 1.0}},
        "detectors": {"coco": {"model": "coco"}}})


def run_analyzer(site: SiteConfig, frames: list[np.ndarray], dets: list[Detections]) -> tuple[list[Incident],
                                                                                             CameraAnalyzer]:
    """Drive the analyzer as the worker does: ``frame_requests``, then the detector (its boxes on that frame,
    computed beforehand) only where requested, then ``analyze``."""
    analyzer = CameraAnalyzer(site, site.cameras[0])
    events: list[Incident] = []
    for i, (img, d) in enumerate(zip(frames, dets, strict=True)):
        frame = Frame("corridor-1", img, ts=T0 + i, pts=float(i), seq=i * 25, keyframe=True)
        asked = {r.detector for r in analyzer.frame_requests(frame)}
        events += analyzer.analyze(frame, {"coco": d} if "coco" in asked else {})
    return events, analyzer


@pytest.mark.slow
def test_left_bag_alerts_on_time_with_the_gate_on(shared_dir: Path) -> None:
    from pipeline.detect.yolo import YoloDetector

    model = shared_dir / "models" / "yolo11n-coco.onnx"
    if not model.is_file():
        pytest.skip(f"{model} missing")
    coco = YoloDetector(str(model), threads=1)
    appear, dwell = 25, 30.0
    clean = shared_clip_at_1fps(shared_dir, CORRIDOR)[:int(appear + dwell) + 8]  # to just past the alert
    frames, dets = scene(clean, [coco.detect(f) for f in clean], coco,
                         [Paste(cut(shared_dir, "leftobj", *WHITE_BAG), (600, 420), 60, appear)])
    off, _ = run_analyzer(clutter_site(MotionGateConfig()), frames, dets)
    on, analyzer = run_analyzer(clutter_site(GATE_ON), frames, dets)
    assert [e.event for e in off] == [IncidentEvent.OPENED], [(e.event, e.ts - T0) for e in off]
    assert [(e.event, e.ts, e.started_at) for e in on] == [(e.event, e.ts, e.started_at) for e in off]
    assert abs(on[0].ts - (T0 + appear + dwell)) <= 1.0 + 1e-6
    gate = analyzer.motion_gate
    assert gate is not None
    assert gate.frames_gated > 0, gate.counts()


# -- fire and the gate's own logic on a real frame ----------------------------------------------------------------


@pytest.fixture(scope="module")
def corridor_frame(shared_dir: Path) -> np.ndarray:
    first: np.ndarray = shared_clip_at_1fps(shared_dir, CORRIDOR)[0]
    return first


def fire_site() -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
            {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}],
        "cameras": [{"id": "corridor-1", "url": "x.mp4", "grid": "G", "hazards": ["fire"],
                     "zones": [{"id": "floor", "kind": "corridor", "polygon": FLOOR}]}],
        "hazards": {"fire": {"detector": "fire", "confirm_model": None}, "clutter": {}},
        "detectors": {"coco": {"model": "coco"}, "fire": {"model": "fire"}},
        "worker": {"motion_gate": {"enabled": True}}})


def test_fire_is_never_gated(corridor_frame: np.ndarray) -> None:
    """A still corridor for 30 s: the fire detector is asked for on every frame; the clutter zone's COCO only
    on the first frame and the 10 s re-checks."""
    analyzer = CameraAnalyzer(fire_site(), fire_site().cameras[0])
    asked: list[set[str]] = []
    for i in range(0, 31, 2):
        frame = Frame("corridor-1", corridor_frame.copy(), ts=T0 + i, pts=float(i), seq=i, keyframe=True)
        asked.append({r.detector for r in analyzer.frame_requests(frame)})
        analyzer.analyze(frame, {n: Detections.empty() for n in asked[-1]})
    assert all("fire" in a for a in asked), asked
    coco_at = [2 * i for i, a in enumerate(asked) if "coco" in a]
    assert coco_at == [0, 10, 20, 30], asked
    gate = analyzer.motion_gate
    assert gate is not None and gate.never_gated == frozenset({"fire"})
    assert gate.counts() == {"frames_gated": 12, "frames_detected": 4}


def test_change_inside_a_zone_runs_the_detector_outside_does_not(corridor_frame: np.ndarray) -> None:
    gate = MotionGate(GATE_ON, {"coco": [FLOOR]})
    h, w = corridor_frame.shape[:2]

    def step(img: np.ndarray, i: int) -> bool:
        frame = Frame("c", img, ts=T0 + i, pts=float(i), seq=i, keyframe=True)
        ran = bool(gate.decide(frame, [DetectRequest("coco", None)]))
        gate.merge(frame, {"coco": Detections.empty()} if ran else {})
        return ran

    assert step(corridor_frame, 0)
    noisy = np.clip(corridor_frame + np.random.default_rng(1).normal(0, 3, corridor_frame.shape), 0, 255)
    assert not step(noisy.astype(np.uint8), 1), "sensor noise is no change"
    above = corridor_frame.copy()
    above[: int(0.4 * h), : w // 3] = 255  # something in the upper part (no zone there)
    assert not step(above, 2)
    person = corridor_frame.copy()
    person[int(0.65 * h): int(0.95 * h), w // 2: w // 2 + 40] = 20  # a dark figure on the floor
    assert step(person, 3)
    assert not step(person, 4), "compared with the frame the detector last ran on"
    assert gate.counts() == {"frames_gated": 3, "frames_detected": 2}
    assert small_grey(corridor_frame, 64).shape == (round(h * 64 / w), 64)


def test_gate_counts_reach_the_metrics() -> None:
    m = WorkerMetrics("w1")
    m.update([{"camera_id": "c1", "state": "streaming", "frames_gated": 7, "frames_detected": 3}], {})
    assert m.registry.get_sample_value("gridwatch_camera_frames_gated", {"worker": "w1", "camera": "c1"}) == 7.0
    assert m.registry.get_sample_value("gridwatch_camera_frames_detected", {"worker": "w1", "camera": "c1"}) == 3.0


def test_frames_further_apart_than_the_recheck_are_still_gated(corridor_frame: np.ndarray) -> None:
    """A worker that falls behind analyses frames 12 s apart: the re-check is due only after a skipped frame,
    so every other still frame is still gated (not every frame a re-check)."""
    gate = MotionGate(GATE_ON, {"coco": [FLOOR]})
    ran = []
    for i in range(6):
        frame = Frame("c", corridor_frame, ts=T0 + 12 * i, pts=12.0 * i, seq=i, keyframe=True)
        ran.append(bool(gate.decide(frame, [DetectRequest("coco", None)])))
        gate.merge(frame, {"coco": Detections.empty()} if ran[-1] else {})
    assert ran == [True, False, True, False, True, False]
