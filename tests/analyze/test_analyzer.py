"""CameraAnalyzer: rule building from the site config, detect requests, routing."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.analyze.analyzer import RULE_FACTORIES, CameraAnalyzer, DetectRequest, merge_overlapping
from pipeline.analyze.clutter import ClutterRule
from pipeline.analyze.fire import FireRule
from pipeline.analyze.incident import Hazard, IncidentEvent
from pipeline.analyze.parking import NoParkingRule
from pipeline.analyze.poster import PosterRule
from pipeline.analyze.rules import FrameView
from pipeline.config import SiteConfig
from pipeline.detect.detections import Detections
from pipeline.ingest.frame import Frame

GRID = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
    {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]
LEFT = [[0.0, 0.5], [0.2, 0.5], [0.2, 0.9], [0.0, 0.9]]
RIGHT = [[0.8, 0.5], [1.0, 0.5], [1.0, 0.9], [0.8, 0.9]]


def site(zones: list[dict[str, Any]], hazards: dict[str, Any] | None = None,
         cam_hazards: list[str] | None = None) -> SiteConfig:
    cam = {"id": "cam1", "url": "x.mp4", "grid": "G", "zones": zones, "hazards": cam_hazards or []}
    cfg: dict[str, Any] = {"grid": GRID, "cameras": [cam]}
    if hazards is not None:
        cfg["hazards"] = hazards
    if cam_hazards and "fire" in cam_hazards:
        cfg["detectors"] = {"coco": {"model": "m.onnx"}, "fire": {"model": "f.onnx"}}
    return SiteConfig.model_validate(cfg)


def analyzer(cfg: SiteConfig) -> CameraAnalyzer:
    return CameraAnalyzer(cfg, cfg.cameras[0])


def frame(ts: float, w: int = 1000, h: int = 500) -> Frame:
    return Frame("cam1", np.zeros((h, w, 3), np.uint8), ts=ts, pts=ts, seq=int(ts), keyframe=True)


def test_builds_parking_rules_with_merged_overrides() -> None:
    cfg = site([{"id": "a", "kind": "no_parking", "polygon": LEFT,
                 "overrides": {"parking": {"dwell_seconds": 15, "classes": ["truck"]}}},
                {"id": "b", "kind": "fire_lane", "polygon": RIGHT},
                {"id": "c", "kind": "parking", "polygon": LEFT}])   # a parking area: no hazards
    a = analyzer(cfg)
    assert [(r.zone_id, r.hazard) for r in a.rules] == [("a", Hazard.PARKING), ("b", Hazard.PARKING),
                                                        ("b", Hazard.CLUTTER)]
    ra, rb, rc = a.rules
    assert isinstance(ra, NoParkingRule) and isinstance(rb, NoParkingRule) and isinstance(rc, ClutterRule)
    assert ra.rule.dwell_seconds == 15 and ra.classes == {"truck"}
    assert rb.rule.dwell_seconds == 120 and "car" in rb.classes  # site default
    assert a.skipped == set()
    assert a.counters == []  # a parking zone without capacity: no occupancy


def test_unimplemented_hazards_logged_once_not_crash(caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(RULE_FACTORIES, Hazard.CLUTTER)
    monkeypatch.delitem(RULE_FACTORIES, Hazard.FIRE)
    zones = [{"id": f"z{i}", "kind": "corridor", "polygon": LEFT} for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="pipeline.analyze.analyzer"):
        a = analyzer(site(zones, cam_hazards=["fire"]))
    assert a.rules == [] and a.skipped == {Hazard.CLUTTER, Hazard.FIRE}
    assert sum("clutter" in r.getMessage() for r in caplog.records) == 1
    assert a.requests(640, 480) == []
    assert a.analyze(frame(0.0), {}) == []


def test_disabled_hazard_skipped() -> None:
    cfg = site([{"id": "a", "kind": "no_parking", "polygon": LEFT}], hazards={"parking": {"enabled": False}})
    a = analyzer(cfg)
    assert a.rules == [] and a.skipped == set()


@pytest.mark.parametrize(("crops", "expected"), [
    ((False, False), [DetectRequest("coco", None)]),
    ((True, False), [DetectRequest("coco", None)]),          # one full-frame zone: the whole frame anyway
    ((True, True), [DetectRequest("coco", (0, 180, 320, 500)), DetectRequest("coco", (680, 180, 1000, 500))]),
])
def test_requests(crops: tuple[bool, bool], expected: list[DetectRequest]) -> None:
    cfg = site([{"id": "a", "kind": "no_parking", "polygon": LEFT, "crop": crops[0]},
                {"id": "b", "kind": "no_parking", "polygon": RIGHT, "crop": crops[1]}])
    assert analyzer(cfg).requests(1000, 500) == expected


def test_requests_merge_overlapping_crop_zones() -> None:
    cfg = site([{"id": "a", "kind": "no_parking", "polygon": LEFT, "crop": True},
                {"id": "b", "kind": "no_parking", "polygon": [[0.1, 0.6], [0.3, 0.6], [0.3, 0.8]],
                 "crop": True}])
    [req] = analyzer(cfg).requests(1000, 500)
    assert req.detector == "coco" and req.region is not None
    x1, y1, x2, y2 = req.region
    assert x1 == 0 and x2 >= 300 and y1 <= 250 and y2 >= 450


def test_merge_overlapping() -> None:
    assert merge_overlapping([(0, 0, 10, 10), (20, 0, 30, 10), (5, 5, 25, 8)]) == [(0, 0, 30, 10)]
    assert merge_overlapping([]) == []


def test_analyze_routes_detections_to_the_right_zone() -> None:
    cfg = site([{"id": "a", "kind": "no_parking", "polygon": LEFT,
                 "overrides": {"parking": {"dwell_seconds": 5}}},
                {"id": "b", "kind": "no_parking", "polygon": RIGHT,
                 "overrides": {"parking": {"dwell_seconds": 5}}}])
    a = analyzer(cfg)
    car_right = Detections.from_arrays([[850, 300, 950, 400]], [0.9], [2], {2: "car"})
    events = [e for t in range(10) for e in a.analyze(frame(100.0 + t), {"coco": car_right})]
    assert [(e.event, e.zone_id, e.ts) for e in events] == [(IncidentEvent.OPENED, "b", 105.0)]
    # Missing detector output counts as "nothing seen": the incident can clear.
    later = [e for t in range(10, 45) for e in a.analyze(frame(100.0 + t), {})]
    assert [(e.event, e.zone_id) for e in later] == [(IncidentEvent.CLEARED, "b")]


def test_zone_polygons_px() -> None:
    a = analyzer(site([{"id": "a", "kind": "no_parking", "polygon": LEFT}]))
    polys = a.zone_polygons_px(1000, 500)
    assert list(polys) == ["a"]
    assert polys["a"].dtype == np.int32 and polys["a"].reshape(-1, 2).tolist() == [
        [0, 250], [200, 250], [200, 450], [0, 450]]


FIRE_DETECTORS = {"coco": {"model": "m.onnx"}, "fire": {"model": "f.onnx"}}


def test_builds_fire_clutter_poster_rules() -> None:
    cfg = SiteConfig.model_validate({"grid": GRID, "detectors": FIRE_DETECTORS, "cameras": [{
        "id": "cam1", "url": "x.mp4", "grid": "G", "hazards": ["fire"], "zones": [
            {"id": "hall", "kind": "corridor", "polygon": LEFT, "crop": True},
            {"id": "wall", "kind": "wall", "polygon": RIGHT},
            {"id": "store", "kind": "area", "polygon": RIGHT, "hazards": ["fire"]}]}]})
    a = analyzer(cfg)
    kinds = [(type(r).__name__, r.hazard, r.zone_id) for r in a.rules]
    assert kinds == [("ClutterRule", Hazard.CLUTTER, "hall"), ("PosterRule", Hazard.POSTER, "wall"),
                     ("FireRule", Hazard.FIRE, "store"), ("FireRule", Hazard.FIRE, None)]
    fire = a.rules[3]
    assert isinstance(fire, FireRule) and fire.rule.severity == 5 and fire.rule.confirm_k == 3
    poster = a.rules[1]
    assert isinstance(poster, PosterRule) and poster.detector is a.text_detector
    assert not a.text_detector.loaded  # lazy: nothing loaded until a poster frame is judged
    reqs = a.requests(1000, 500)
    assert "ocr" not in {r.detector for r in reqs} and "ocr" not in a.detectors
    # clutter reads coco (objects, persons); fire needs the whole frame
    assert reqs == [DetectRequest("coco", (0, 180, 320, 500)), DetectRequest("fire", None)]


def test_poster_shares_one_text_detector() -> None:
    cfg = site([{"id": "w1", "kind": "wall", "polygon": LEFT}, {"id": "w2", "kind": "wall", "polygon": RIGHT}])
    a = analyzer(cfg)
    p1, p2 = a.rules
    assert isinstance(p1, PosterRule) and isinstance(p2, PosterRule)
    assert p1.detector is p2.detector is a.text_detector
    assert a.requests(640, 480) == []


class _Boom:
    hazard = Hazard.FIRE
    camera_id = "cam1"
    zone_id = None
    detectors = ("coco",)
    interval_seconds = 0.0

    def __init__(self) -> None:
        from pipeline.config import HazardRule
        self.rule = HazardRule()
        self.calls = 0

    def judge(self, view: FrameView) -> list[object]:
        self.calls += 1
        raise RuntimeError("boom")

    def state(self) -> dict[str, object]:
        raise RuntimeError("no state either")


def test_one_failing_rule_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    cfg = site([{"id": "b", "kind": "no_parking", "polygon": RIGHT, "overrides": {"parking": {"dwell_seconds": 2}}}])
    a = analyzer(cfg)
    boom = _Boom()
    a.rules.insert(0, boom)  # type: ignore[arg-type]
    car = Detections.from_arrays([[850, 300, 950, 400]], [0.9], [2], {2: "car"})
    with caplog.at_level(logging.ERROR, logger="pipeline.analyze.analyzer"):
        events = [e for t in range(5) for e in a.analyze(frame(float(t)), {"coco": car})]
    assert [(e.event, e.hazard) for e in events] == [(IncidentEvent.OPENED, Hazard.PARKING)]
    assert boom.calls == 5 and a.errors == {0: 5}
    assert sum("boom" in (r.exc_text or "") or "failed" in r.getMessage() for r in caplog.records) == 1
    states = a.rule_states()
    assert states[0]["state"] == {"error": "RuntimeError('no state either')"} and states[0]["errors"] == 5


@pytest.mark.parametrize(("counts", "expected_used"), [
    ([2, 2, 0, 2, 2], 2),     # one missed frame does not change the count
    ([1, 3, 3, 3, 1], 3),
    ([0, 0, 0, 5, 5], 0),     # median of the last 5
])
def test_occupancy(counts: list[int], expected_used: int) -> None:
    bays = [[0.0, 0.0], [1.0, 0.0], [1.0, 0.5], [0.0, 0.5]]
    cfg = site([{"id": "bays", "kind": "parking", "capacity": 4, "polygon": bays}])
    a = analyzer(cfg)
    assert a.rules == [] and a.occupancy() == {}
    assert a.requests(1000, 500) == [DetectRequest("coco", None)]
    for t, n in enumerate(counts):
        boxes = [[100 * i, 100, 100 * i + 80, 200] for i in range(n)]      # anchors at y=200, inside
        boxes += [[500, 300, 600, 400]]                                    # anchor outside the zone
        d = Detections.from_arrays(boxes, [0.9] * (n + 1), [2] * (n + 1), {2: "car"})
        assert a.analyze(frame(float(t)), {"coco": d}) == []
    assert a.occupancy() == {"bays": {"used": expected_used, "free": max(0, 4 - expected_used), "capacity": 4,
                                      "ts": float(len(counts) - 1)}}


def test_poster_through_analyze(shared_dir: Path) -> None:
    """A wall zone on real corridor frames, a synthetic flyer from frame 12 on: one poster incident via
    ``analyze()``, and OCR only every ``analysis_interval_seconds`` (5 s by default; frames come 2.5 s
    apart, the rule judges every other one)."""
    pytest.importorskip("rapidocr_onnxruntime")
    from tests.detect.test_ocr import load_make_flyers

    mf = load_make_flyers()
    if mf.find_cjk_font() is None:
        pytest.skip("no CJK font")
    clip = shared_dir / "clips" / "one-by-one-person-detection.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} missing")
    x1, y1, x2, y2 = mf.CORRIDOR_WALL
    wall = [[x1 / 768, y1 / 432], [x2 / 768, y1 / 432], [x2 / 768, y2 / 432], [x1 / 768, y2 / 432]]
    a = analyzer(site([{"id": "wall1", "kind": "wall", "polygon": wall}],
                      hazards={"poster": {"clear_seconds": 600, "update_interval_seconds": 1e9}}))
    rng = np.random.default_rng(11)
    flyer, _ = mf.make_flyer(rng, width=300, category="locksmith", qr=False)
    quad = mf.random_quad(rng, mf.CORRIDOR_WALL, flyer.shape[1] / flyer.shape[0], 125)
    calls = 0
    ocr = a.text_detector
    real = ocr.detect_boxes_only

    def counting(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kw)

    ocr.detect_boxes_only = counting  # type: ignore[method-assign]
    events = []
    for i in range(24):
        img = mf.read_frame(clip, 2.0 * i)
        if i >= 12:
            img = mf.composite(img, flyer, quad, seed=i)
        f = Frame("cam1", img, ts=1000.0 + 2.5 * i, pts=2.5 * i, seq=i, keyframe=True)
        events += a.analyze(f, {})
    assert [(e.event, e.hazard, e.zone_id) for e in events] == [(IncidentEvent.OPENED, Hazard.POSTER, "wall1")]
    assert events[0].ts >= 1000.0 + 2.5 * 12
    assert calls == 12 - 5  # 12 judged frames, the first 5 learn the wall (no DB pass)


def test_each_hazard_is_judged_at_its_own_interval() -> None:
    """Fire (interval 0) sees every analysed frame; parking (3 s) every third, and its detector is only
    requested on the frames where it is due."""
    cfg = site([{"id": "a", "kind": "no_parking", "polygon": LEFT}],
               hazards={"parking": {"analysis_interval_seconds": 3.0, "dwell_seconds": 0},
                        "fire": {"detector": "fire"}},
               cam_hazards=["fire"])
    a = analyzer(cfg)
    seen: dict[Hazard, list[float]] = {Hazard.PARKING: [], Hazard.FIRE: []}
    for r in a.rules:
        def spy(view: FrameView, _judge: Any = r.judge, _h: Hazard = r.hazard) -> Any:
            seen[_h].append(view.ts)
            return _judge(view)

        r.judge = spy  # type: ignore[method-assign]
    requested = []
    for t in range(8):
        requested.append(sorted({q.detector for q in a.requests(1000, 500, float(t))}))
        a.analyze(frame(float(t)), {})
    assert seen[Hazard.FIRE] == [float(t) for t in range(8)]
    assert seen[Hazard.PARKING] == [0.0, 3.0, 6.0]
    assert requested == [["coco", "fire"], ["fire"], ["fire"], ["coco", "fire"], ["fire"], ["fire"],
                         ["coco", "fire"], ["fire"]]
    # without a time every rule's detectors are listed (start-up model loading)
    assert sorted(a.detectors) == ["coco", "fire"]


def test_poster_interval_comes_from_the_site_rule() -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    cfg = site([{"id": "w", "kind": "wall", "polygon": LEFT}], hazards={"poster": {"analysis_interval_seconds": 30}})
    (r,) = analyzer(cfg).rules
    assert r.interval_seconds == 30.0
    assert SiteConfig.model_validate({"grid": GRID, "cameras": []}).hazards[Hazard.POSTER] \
        .analysis_interval_seconds == 5.0


def test_rule_states_are_json_and_say_why_nothing_alerted() -> None:
    cfg = SiteConfig.model_validate({"grid": GRID, "detectors": FIRE_DETECTORS, "cameras": [{
        "id": "cam1", "url": "x.mp4", "grid": "G", "hazards": ["fire"], "zones": [
            {"id": "lane", "kind": "no_parking", "polygon": RIGHT, "overrides": {"parking": {"dwell_seconds": 5}}},
            {"id": "hall", "kind": "corridor", "polygon": LEFT},
            {"id": "wall", "kind": "wall", "polygon": LEFT}]}]})
    a = analyzer(cfg)
    car = Detections.from_arrays([[850, 300, 950, 400]], [0.9], [2], {2: "car"})
    t0 = 1_796_000_000.25
    for k in range(3):
        a.analyze(frame(t0 + k * 0.5), {"coco": car, "fire": Detections.empty()})
    states = a.rule_states()
    assert json.loads(json.dumps(states)) == states  # plain JSON types only (no numpy, no inf)
    assert [(s["hazard"], s["zone"], s["rule"]) for s in states] == [
        ("parking", "lane", "NoParkingRule"), ("clutter", "hall", "ClutterRule"),
        ("poster", "wall", "PosterRule"), ("fire", None, "FireRule")]
    park = states[0]["state"]
    assert isinstance(park, dict)
    (track,) = park["tracks"]
    assert track["stationary_since"] == t0 and track["dwell_seconds"] == 1.0
    assert track["verdict"] == "dwell 1.0 s < 5 s"
    assert park["lifecycle"]["incident_id"] is None
    for k in range(3, 12):
        a.analyze(frame(t0 + k * 0.5), {"coco": car, "fire": Detections.empty()})
    park = a.rule_states()[0]["state"]
    assert isinstance(park, dict) and park["tracks"][0]["verdict"] == "parked"
    assert park["lifecycle"]["incident_id"] == f"cam1-lane-parking-{int(t0)}-1"
    assert park["lifecycle"]["opened_at"] == t0 + 5.0
