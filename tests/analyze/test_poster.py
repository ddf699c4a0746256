"""PosterRule on sequences of real corridor frames with synthetic flyers and signs composited on the wall."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import av
import numpy as np
import pytest

from pipeline.analyze.incident import Hazard, Incident, IncidentEvent
from pipeline.analyze.poster import PosterRule, WallReference
from pipeline.analyze.rules import FrameView
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.ocr import TextDetector
from tests.detect.test_ocr import load_make_flyers

pytest.importorskip("rapidocr_onnxruntime")

STEP = 10.0
"""Seconds between analysed frames of a sequence (posters are judged slowly)."""
T0 = 1_796_000_000.25
"""Time of the first frame: a real Unix time (float32 would hold only multiples of 128 s here)."""


@pytest.fixture(scope="module")
def mf() -> ModuleType:
    mod = load_make_flyers()
    if mod.find_cjk_font() is None:
        pytest.skip("no CJK font (apt-get install fonts-droid-fallback or fonts-noto-cjk)")
    return mod


@pytest.fixture(scope="module")
def corridor(shared_dir: Path) -> list[np.ndarray]:
    """24 frames of the corridor clip, 2 s apart (people walk through some of them)."""
    clip = shared_dir / "clips" / "one-by-one-person-detection.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} missing")
    frames: list[np.ndarray] = []
    with av.open(str(clip)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i % 20 == 0:
                frames.append(fr.to_ndarray(format="bgr24"))
            if len(frames) == 24:
                break
    return frames


@pytest.fixture(scope="module")
def ocr() -> TextDetector:
    return TextDetector(threads=1)


def wall_zone(mf: ModuleType, w: int = 768, h: int = 432) -> ZoneConfig:
    x1, y1, x2, y2 = mf.CORRIDOR_WALL
    return ZoneConfig(id="wall1", kind="wall",
                      polygon=[[x1 / w, y1 / h], [x2 / w, y1 / h], [x2 / w, y2 / h], [x1 / w, y2 / h]])


def new_rule(mf: ModuleType, ocr: TextDetector, **kw: float) -> PosterRule:
    rule = HazardRule(detector="ocr", dwell_seconds=0, clear_seconds=kw.pop("clear_seconds", 60),
                      update_interval_seconds=1e9, severity=2)
    return PosterRule("cam1", wall_zone(mf), rule, ocr, learn_frames=5, **kw)  # type: ignore[arg-type]


def run(rule: PosterRule, frames: list[np.ndarray]) -> list[Incident]:
    events: list[Incident] = []
    for i, f in enumerate(frames):
        events += rule.judge(FrameView(T0 + i * STEP, f.shape[1], f.shape[0], f))
    return events


def flyer_on(mf: ModuleType, seed: int, width: float = 125,
             **kw: object) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    rng = np.random.default_rng(seed)
    flyer, truth = mf.make_flyer(rng, width=300, **kw)
    quad = mf.random_quad(rng, mf.CORRIDOR_WALL, flyer.shape[1] / flyer.shape[0], width)
    return flyer, quad, truth


def test_clean_wall_no_incident(mf: ModuleType, corridor: list[np.ndarray], ocr: TextDetector) -> None:
    rule = new_rule(mf, ocr)
    assert run(rule, corridor) == []
    assert rule.reference.ready
    assert rule.flyers == []


def test_flyer_opens_one_incident(mf: ModuleType, corridor: list[np.ndarray], ocr: TextDetector) -> None:
    flyer, quad, truth = flyer_on(mf, 11, category="locksmith", phone=("13812345678", "138-1234-5678"),
                                  qr=False)
    k = 9
    frames = [f if i < k else mf.composite(f, flyer, quad, seed=i) for i, f in enumerate(corridor)]
    events = run(new_rule(mf, ocr), frames)
    assert [e.event for e in events] == [IncidentEvent.OPENED]
    e = events[0]
    assert e.hazard is Hazard.POSTER and e.camera_id == "cam1" and e.zone_id == "wall1"
    assert e.severity == 2
    assert e.ts >= T0 + k * STEP
    assert e.started_at == T0 + k * STEP  # first seen on the first frame with the flyer (exact at Unix time)
    assert e.ts == T0 + (k + 1) * STEP     # confirmed 2 of 3 on the next judged frame
    assert e.details["phones"] == ["13812345678"]
    assert "locksmith" in e.details["categories"]  # type: ignore[operator]
    assert any("开锁" in str(t) for t in e.details["texts"])  # type: ignore[attr-defined]
    assert 0 < float(e.details["area_share"]) < 0.6  # type: ignore[arg-type]
    (box,) = e.boxes
    qx1, qy1 = quad.min(0)
    qx2, qy2 = quad.max(0)
    fx1, fy1, fx2, fy2 = qx1 / 768, qy1 / 432, qx2 / 768, qy2 / 432
    inter = max(0, min(box.x2, fx2) - max(box.x1, fx1)) * max(0, min(box.y2, fy2) - max(box.y1, fy1))
    assert inter / ((fx2 - fx1) * (fy2 - fy1)) > 0.5  # the box covers most of the flyer
    assert box.label == "poster"


def test_flyer_removed_clears(mf: ModuleType, corridor: list[np.ndarray], ocr: TextDetector) -> None:
    flyer, quad, _ = flyer_on(mf, 5, category="jobs", qr=False)
    frames = [mf.composite(f, flyer, quad, seed=i) if 6 <= i < 12 else f for i, f in enumerate(corridor)]
    events = run(new_rule(mf, ocr, clear_seconds=40), frames)
    assert [e.event for e in events] == [IncidentEvent.OPENED, IncidentEvent.CLEARED]
    assert events[0].id == events[1].id
    # seen 6..11, still confirmed (2 of 3) on 12, cleared clear_seconds (40 s) later
    assert [e.ts for e in events] == [T0 + 7 * STEP, T0 + 16 * STEP]
    assert events[1].details["duration_seconds"] == pytest.approx(10 * STEP, abs=1e-3)


def test_permanent_sign_never_alerts(mf: ModuleType, corridor: list[np.ndarray], ocr: TextDetector) -> None:
    sign = mf.make_sign(["3号楼 2单元", "消防通道 禁止堆放"], width=150)
    quad = np.array([[140, 40], [290, 40], [290, 40 + sign.shape[0] / 2], [140, 40 + sign.shape[0] / 2]],
                    np.float32)
    frames = [mf.composite(f, sign, quad, seed=i) for i, f in enumerate(corridor)]
    rule = new_rule(mf, ocr)
    assert run(rule, frames) == []
    ref_text = "".join(t.text for t in rule.reference.text_boxes)
    assert "号楼" in ref_text or "消防" in ref_text


def test_sign_and_new_flyer(mf: ModuleType, corridor: list[np.ndarray], ocr: TextDetector) -> None:
    sign = mf.make_sign(["幸福小区 8栋"], width=110)
    sq = np.array([[130, 25], [240, 25], [240, 25 + sign.shape[0]], [130, 25 + sign.shape[0]]], np.float32)
    flyer, _, _ = flyer_on(mf, 3, category="loans", phone=("400-123-4567", "400-123-4567"), qr=True)
    fq = np.array([[250, 70], [370, 74], [368, 222], [252, 218]], np.float32)
    frames = []
    for i, f in enumerate(corridor):
        f = mf.composite(f, sign, sq, seed=i)
        frames.append(mf.composite(f, flyer, fq, seed=i) if i >= 8 else f)
    events = run(new_rule(mf, ocr), frames)
    assert [e.event for e in events] == [IncidentEvent.OPENED]
    assert events[0].details["phones"] == ["400-123-4567"]
    assert not any("幸福" in str(t) for t in events[0].details["texts"])  # type: ignore[attr-defined]


def test_lighting_change_no_incident(mf: ModuleType, corridor: list[np.ndarray], ocr: TextDetector) -> None:
    frames = [f if i < 8 else mf.adjust_lighting(f, 0.75 if i % 2 else 1.15, 0) for i, f in enumerate(corridor)]
    assert run(new_rule(mf, ocr), frames) == []


def test_transient_flyer_not_confirmed(mf: ModuleType, corridor: list[np.ndarray], ocr: TextDetector) -> None:
    """Text seen on one analysed frame only (a passer-by's printed bag) does not alert (k-of-n)."""
    flyer, quad, _ = flyer_on(mf, 8, qr=False)
    frames = [mf.composite(f, flyer, quad, seed=i) if i == 10 else f for i, f in enumerate(corridor[:16])]
    assert run(new_rule(mf, ocr), frames) == []


def test_confirmation_floor() -> None:
    zone = ZoneConfig(id="w", kind="wall", polygon=[[0, 0], [1, 0], [1, 1]])
    r = PosterRule("c", zone, HazardRule(confirm_k=1, confirm_n=1), TextDetector())
    assert (r.k, r.n) == (2, 3)
    r = PosterRule("c", zone, HazardRule(confirm_k=4, confirm_n=6), TextDetector())
    assert (r.k, r.n) == (4, 6)
    assert r.lifecycle.rule.confirm_k == 1  # confirmation happens per flyer, not again in the lifecycle


def test_wall_reference_learning_and_adaptation() -> None:
    ref = WallReference(learn_frames=3, adapt_step=2.0)
    wall = np.full((30, 40, 3), 100, np.uint8)
    person = wall.copy()
    person[5:25, 10:20] = 20
    assert [ref.add_sample(x) for x in (wall, person, wall)] == [False, False, True]
    assert not ref.change_mask(wall).any()  # the passer-by was voted out by the median
    brighter = np.full_like(wall, 120)
    frozen = np.zeros((30, 40), bool)
    frozen[:, :20] = True
    ref.adapt(brighter, frozen)
    assert ref.background is not None
    assert ref.background[0, 0, 0] == pytest.approx(100, abs=0.5)
    assert ref.background[0, 30, 0] == pytest.approx(102, abs=0.5)
    ref.reset()
    assert not ref.ready
