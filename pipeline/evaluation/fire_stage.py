"""Frame-level operating point of the fire rule's box logic: detector + second stage + smoke proposals.

``scripts/evaluate.py --confirm MODEL`` uses this to report, per val split, what the fire rule
(:class:`pipeline.analyze.fire.FireRule`) would alarm on per frame, per class:

- a box of either class counts at detector score >= ``fire_floor`` (the rule's ``min_confidence``) when
  the classifier gives its crop p(fire) + p(smoke) >= ``gate`` (``confirm_min_score``);
- a ``smoke`` box also counts from ``smoke_floor`` (``smoke_min_confidence``) up when p(smoke) >=
  ``smoke_min_score`` (None: no smoke proposals).

A frame's score is ``max(fire channel / fire_floor, smoke channel / smoke_min_score)`` (fire channel: the
highest detector score of a counted box; smoke channel: the highest p(smoke) of a smoke proposal), so the
rule alarms at 1.0, and the operating point scales both thresholds together to the 1 % point of the
negative frames. Per class, a class's frames count as alarmed by a box of that class; ``smoke_only`` frames
are those whose labels are all smoke. Flicker, colour, person cover and k-of-n are not applied (single
frames).

Example:
    >>> fr = FrameBoxes(np.array([0.5, 0.2]), np.array([0, 1]), np.array([[.9, 0, .1], [0, .8, .2]]))
    >>> frame_channels(fr, StageRule(smoke_min_score=0.5))
    (1.6, 1.25, 1.6, 1.6)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

FIRE, SMOKE, NEITHER = 0, 1, 2


@dataclass(frozen=True)
class StageRule:
    """The rule's per-box thresholds (defaults: hazards.fire's)."""

    fire_floor: float = 0.4
    gate: float = 0.6
    smoke_floor: float = 0.1
    smoke_min_score: float | None = None


@dataclass(frozen=True)
class FrameBoxes:
    """One frame's detector boxes: scores, data class ids (0 fire, 1 smoke) and classifier probabilities."""

    scores: np.ndarray
    classes: np.ndarray
    probs: np.ndarray


def frame_channels(f: FrameBoxes, rule: StageRule) -> tuple[float, float, float, float]:
    """(frame score, score from fire boxes, score from smoke boxes, smoke channel / smoke_min_score), all in
    units of the rule's thresholds (>= 1.0: the rule counts a box). The fire channel is the highest detector
    score / ``fire_floor`` of the boxes the stage passes."""
    # boxes below the fire floor stay in, in units below 1.0, so that the 1 % point may lie under the rule's
    ok = 1.0 - f.probs[:, NEITHER] >= rule.gate if len(f.scores) else np.zeros(0, bool)

    def top(m: np.ndarray, v: np.ndarray) -> float:
        return float(v[m].max()) if m.any() else 0.0

    fire_any = top(ok, f.scores) / rule.fire_floor
    fire_fire = top(ok & (f.classes == FIRE), f.scores) / rule.fire_floor
    fire_smoke = top(ok & (f.classes == SMOKE), f.scores) / rule.fire_floor
    smoke = 0.0
    if rule.smoke_min_score is not None and len(f.scores):
        m = (f.classes == SMOKE) & (f.scores >= rule.smoke_floor)
        smoke = top(m, f.probs[:, SMOKE]) / rule.smoke_min_score
    return max(fire_any, smoke), fire_fire, max(fire_smoke, smoke), smoke


def threshold_1pct(neg: np.ndarray) -> float:
    """Lowest value at which at most 1 % of ``neg`` reach it (as scripts/evaluate.py)."""
    srt = np.sort(neg)[::-1]
    allowed = int(np.floor(0.01 * len(srt)))
    return float(np.nextafter(srt[allowed], np.inf)) if allowed < len(srt) else 0.0


def frame_report(channels: np.ndarray, gt_classes: list[np.ndarray], scale: float) -> dict[str, Any]:
    """Frame numbers at ``scale`` (1.0 = the rule's thresholds) from rows of :func:`frame_channels`."""
    pos = np.array([len(g) > 0 for g in gt_classes], bool)
    alarm = channels[:, 0] >= scale

    def rate(a: np.ndarray, m: np.ndarray) -> float | None:
        return round(float(a[m].mean()), 4) if m.any() else None

    out: dict[str, Any] = {"scale": round(scale, 4), "negative_frames": int((~pos).sum()),
                           "false_alarm_rate": rate(alarm, ~pos), "positive_frames": int(pos.sum()),
                           "frames_alarmed": rate(alarm, pos), "classes": {}}
    for k, name, col in ((FIRE, "fire", 1), (SMOKE, "smoke", 2)):
        m = np.array([(g == k).any() for g in gt_classes], bool)
        if m.any():
            out["classes"][name] = {"frames": int(m.sum()), "frames_alarmed": rate(channels[:, col] >= scale, m),
                                    "any_alarm": rate(alarm, m)}
    only = np.array([len(g) > 0 and bool((g == SMOKE).all()) for g in gt_classes], bool)
    out["smoke_only"] = {"frames": int(only.sum()), "frames_alarmed": rate(alarm, only)}
    return out


def stage_operating_point(frames: list[FrameBoxes], gt_classes: list[np.ndarray], rule: StageRule
                          ) -> dict[str, Any]:
    """At the rule's thresholds and at the negatives' 1 % point (both thresholds scaled together)."""
    ch = np.array([frame_channels(f, rule) for f in frames], float).reshape(-1, 4)
    neg = np.array([not len(g) for g in gt_classes], bool)
    scale = threshold_1pct(ch[neg, 0]) if neg.any() else 1.0
    return {"rule": asdict(rule), "at_rule": frame_report(ch, gt_classes, 1.0),
            "operating_point": frame_report(ch, gt_classes, scale)}


def evaluate_with_stage(model: Path, confirm: Path, names: list[str], items: list[tuple[Path, np.ndarray]],
                        negatives: list[Path], rule: StageRule, imgsz: int, nms_iou: float = 0.45
                        ) -> dict[str, Any]:
    """Runs ``model`` (floor 0.01) and the classifier ``confirm`` on every box of ``items`` + ``negatives``.

    Raises:
        SystemExit: the data set has no ``fire``/``smoke`` class or an image cannot be read.
    """
    from pipeline.detect.fire_confirm import FireConfirmClassifier
    from pipeline.detect.yolo import YoloDetector
    from pipeline.evaluation.frames import read_image

    if "fire" not in names or "smoke" not in names:
        raise SystemExit(f"--confirm needs a data set with fire and smoke classes, not {names}")
    det = YoloDetector(model, input_size=imgsz, threads=1, nms_iou=nms_iou, min_confidence=0.01)
    clf = FireConfirmClassifier(confirm, threads=1)
    to_data = {int(k): {"fire": FIRE, "smoke": SMOKE}.get(v, -1) for k, v in det.class_names.items()}
    data_of = {names.index("fire"): FIRE, names.index("smoke"): SMOKE}
    frames: list[FrameBoxes] = []
    gts: list[np.ndarray] = []
    for p, rows in [*items, *((n, np.zeros((0, 5))) for n in negatives)]:
        img = read_image(p)
        d = det.detect(img)
        cls = np.array([to_data.get(int(c), -1) for c in d.class_id], int)
        ok = cls >= 0
        boxes = d.xyxy[ok].astype(float)
        frames.append(FrameBoxes(d.confidence[ok].astype(float), cls[ok], clf.score_boxes(img, boxes)))
        gts.append(np.array([data_of.get(int(c), -1) for c in rows[:, 0]], int))
    res = stage_operating_point(frames, gts, rule)
    res["confirm"] = str(confirm)
    if rule.smoke_min_score is not None:  # the same split without smoke proposals, for before/after
        res["without_smoke_proposals"] = stage_operating_point(
            frames, gts, StageRule(rule.fire_floor, rule.gate, rule.smoke_floor, None))
    return res


__all__ = ["FrameBoxes", "StageRule", "evaluate_with_stage", "frame_channels", "frame_report",
           "stage_operating_point", "threshold_1pct"]
