"""pipeline.evaluation.fire_stage: the fire rule's per-frame box logic (hand-computed cases) and
``scripts/evaluate.py --confirm`` on a few real val frames with the real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation.fire_stage import (
    FrameBoxes,
    StageRule,
    frame_channels,
    stage_operating_point,
    threshold_1pct,
)
from tests.scripts_loader import load_script

REPO = Path(__file__).resolve().parents[2]
RULE = StageRule(fire_floor=0.4, gate=0.6, smoke_floor=0.1, smoke_min_score=0.5)


def _frame(scores: list[float], classes: list[int], probs: list[list[float]]) -> FrameBoxes:
    return FrameBoxes(np.array(scores, float), np.array(classes, int), np.array(probs, float).reshape(-1, 3))


def test_a_box_the_stage_rejects_does_not_count() -> None:
    f = _frame([0.9], [0], [[0.1, 0.1, 0.8]])  # p(fire) + p(smoke) 0.2 < gate
    assert frame_channels(f, RULE) == (0.0, 0.0, 0.0, 0.0)


def test_low_smoke_box_counts_only_by_p_smoke() -> None:
    low_smoke = _frame([0.2], [1], [[0.0, 0.75, 0.25]])
    assert frame_channels(low_smoke, RULE) == pytest.approx((1.5, 0.0, 1.5, 1.5))
    below_floor = _frame([0.05], [1], [[0.0, 0.9, 0.1]])  # under smoke_floor: only the fire channel, < 1
    assert frame_channels(below_floor, RULE) == pytest.approx((0.125, 0.0, 0.125, 0.0))
    no_proposals = StageRule(0.4, 0.6, 0.1, None)
    assert frame_channels(low_smoke, no_proposals)[0] == pytest.approx(0.5)  # the rule would not count it
    low_fire = _frame([0.2], [0], [[0.9, 0.0, 0.1]])  # fire boxes keep the 0.4 floor
    assert frame_channels(low_fire, RULE) == pytest.approx((0.5, 0.5, 0.0, 0.0))


def test_one_percent_point_and_per_class_frames() -> None:
    negatives = [_frame([0.4 + 0.004 * k], [0], [[0.9, 0.0, 0.1]]) for k in range(100)]  # 1.0 .. 1.99 units
    fire = _frame([0.9], [0], [[0.9, 0.0, 0.1]])        # 2.25 units: alarms at the 1 % point
    weak_fire = _frame([0.5], [0], [[0.9, 0.0, 0.1]])   # 1.25: alarms at the rule, not at the 1 % point
    smoke = _frame([0.15], [1], [[0.0, 0.95, 0.05]])    # 1.9: smoke proposal
    gts = [np.zeros(0, int)] * 100 + [np.array([0]), np.array([0]), np.array([1])]
    res = stage_operating_point([*negatives, fire, weak_fire, smoke], gts, RULE)
    at = res["at_rule"]
    assert at["false_alarm_rate"] == 1.0 and at["frames_alarmed"] == 1.0
    op = res["operating_point"]
    assert op["scale"] == pytest.approx(threshold_1pct(np.array([frame_channels(n, RULE)[0] for n in negatives])))
    assert op["false_alarm_rate"] == 0.01
    assert op["classes"]["fire"] == {"frames": 2, "frames_alarmed": 0.5, "any_alarm": 0.5}
    assert op["classes"]["smoke"]["frames_alarmed"] == 0.0  # 1.9 < 1.98: the 1 % point is above it
    assert op["smoke_only"] == {"frames": 1, "frames_alarmed": 0.0}


def test_evaluate_script_reports_the_stage_on_real_frames(shared_dir: Path, tmp_path: Path) -> None:
    """Two CCTV smoke frames of fire2 val and three negatives: with smoke proposals the smoke frames alarm
    at the rule's thresholds, without them they do not (fire.onnx scores that smoke below 0.4)."""
    for f in ("fire.onnx", "fire-confirm.onnx"):
        if not (REPO / "models" / f).is_file():
            pytest.skip(f"models/{f} missing")
    data = shared_dir / "datasets" / "fire2" / "data.yaml"
    neg_src = shared_dir / "datasets" / "vehicles" / "images" / "val"
    if not data.is_file() or not neg_src.is_dir():
        pytest.skip("shared fire2 / vehicles data sets missing")
    negs = tmp_path / "neg"
    negs.mkdir()
    for name in ("yuskun__3429c6851095a4c3.jpg", "yuskun__1d3c0507e127f1ea.jpg", "yuskun__72e16f7160358c50.jpg"):
        (negs / name).symlink_to(neg_src / name)  # a link, not a copy of the shared data
    out = tmp_path / "r.json"
    ev = load_script("evaluate")
    rc = ev.main(["--model", str(REPO / "models" / "fire.onnx"), "--data", str(data), "--name", "fire",
                  "--imgsz", "416", "--conf", "0.64", "--extra-negatives", str(negs), "--only",
                  "krcctv__C097105_001_39[47]5.jpg", "--confirm", str(REPO / "models" / "fire-confirm.onnx"),
                  "--time-n", "1", "--sweep", "--json", str(out)])
    assert rc == 0
    st = json.loads(out.read_text())["fp32"]["second_stage"]
    assert st["at_rule"]["positive_frames"] == 2 and st["at_rule"]["negative_frames"] == 3
    assert st["at_rule"]["classes"]["smoke"]["frames_alarmed"] == 1.0
    assert st["at_rule"]["false_alarm_rate"] == 0.0
    assert st["without_smoke_proposals"]["at_rule"]["classes"]["smoke"]["frames_alarmed"] == 0.0
