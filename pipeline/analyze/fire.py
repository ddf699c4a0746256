"""Fire / smoke rule: a flame that flickers and persists, not one bright frame.

:class:`FireRule` judges the boxes of a fire detector (classes ``fire`` and ``smoke`` by default) on the
whole frame (camera ``hazards: [fire]``) or in one zone. A box counts in a frame only when it passes
every *suppressor* (each is measurable, see :class:`FireBoxCheck` and docs/rules.md):

1. **confidence**: ``>= rule.min_confidence``;
2. **person overlap**: a box mostly covered (``person_cover``) by a ``person`` box of the COCO detector,
   when its output is there, is ignored (orange clothing, a red helmet);
3. **colour** (``fire`` only): the share of fire-coloured pixels in the box (HSV red..yellow, saturated
   and bright, or near-white flame cores) must reach ``min_fire_colour`` (a blue or grey object that the
   model calls fire is dropped);
4. **flicker**: boxes are tracked over analysed frames (IoU); a track counts only when its recent samples
   *vary*: the coefficient of variation of box area or mean brightness, or the mean change of the box
   content resampled to a small patch in box coordinates (which a rigidly moving object - a car's
   tail light, an orange jacket walking by - does not show) reaches ``min_flicker``. A red lamp or a
   sunset is static and never counts. The first frame of a track has no flicker yet;
5. **second stage** (optional, ``confirm``): a small crop classifier
   (:class:`~pipeline.detect.fire_confirm.FireConfirmClassifier`) must give the box's crop
   ``p(fire) + p(smoke) >= confirm_min_score`` (a red room, a lamp, a sunset sky that the detector calls
   fire is dropped). Checked after the colour test, so it runs only on boxes that are still candidates.
   **Smoke proposals** (``smoke_min_score``): the detector scores real smoke low (it had few smoke boxes
   to learn from), so ``smoke`` boxes are also taken from the lower floor ``smoke_min_confidence``; such a
   box counts when the classifier gives its crop ``p(smoke) >= smoke_min_score`` (a smoke box at or above
   ``min_confidence`` counts by either test). Both thresholds were calibrated on training frames
   (docs/detectors.md, "Smoke proposals").
   **Smoke tiles** (``smoke_tiles``): a tile classifier (same contract as the second stage, trained on
   frame tiles by ``scripts/train_smoke_tiles.py``) scores fixed overlapping tiles of the frame
   (:func:`~pipeline.analyze.smoke_tiles.frame_tiles`); a tile with ``p(smoke) >= smoke_tile_min_score``
   is a ``smoke`` candidate like a detector box (person cover, flicker and k-of-n apply; the box checks of
   the second stage do not: the tile classifier is its own confirmation).

Presence is confirmed over time: at least ``rule.confirm_k`` of the last ``rule.confirm_n`` analysed
frames that lie within ``window_seconds`` (default 3 of 5 within 10 s). The incident opens at once after
that (``rule.dwell_seconds``, counted from confirmation, is 0 by default), severity ``rule.severity`` (5 by
default); its ``started_at`` is the first counted frame of the confirming run.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.analyze.incident import Hazard, Incident
from pipeline.analyze.rules import (
    TIME_EPS,
    FrameView,
    IncidentLifecycle,
    Observation,
    PresenceTimer,
    normalised_box,
)
from pipeline.analyze.smoke_tiles import frame_tiles
from pipeline.analyze.tracking import IoUTracker, max_cover
from pipeline.analyze.zones import ZoneGeometry, ZoneGeometryCache
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.detections import Detections
from pipeline.detect.fire_confirm import NEITHER, SMOKE, FireConfirmClassifier

DEFAULT_CLASSES = ("fire", "smoke")
PERSON_DETECTOR = "coco"
PATCH = 16
"""Side of the box-coordinate patch the flicker measure compares (pixels)."""


def fire_colour_share(image_bgr: np.ndarray, box: np.ndarray | tuple[float, ...]) -> float:
    """Share (0..1) of fire-coloured pixels in a pixel box of a BGR image.

    Fire-coloured: hue red..yellow (OpenCV H <= 35 or >= 170), saturation >= 80 and value >= 130, or a
    near-white flame core (value >= 230, saturation <= 60, red >= blue).

    Example:
        >>> img = np.zeros((20, 20, 3), np.uint8); img[:, :10] = (0, 128, 255)   # orange left half
        >>> round(fire_colour_share(img, (0, 0, 20, 20)), 2)
        0.5
    """
    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    crop = image_bgr[y1:y2, x1:x2]
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    hue, sat, val = hsv[:, :, 0], hsv[:, :, 1], hsv[:, :, 2]
    warm = ((hue <= 35) | (hue >= 170)) & (sat >= 80) & (val >= 130)
    core = (val >= 230) & (sat <= 60) & (crop[:, :, 2] >= crop[:, :, 0])
    return float(np.count_nonzero(warm | core)) / float(hue.size)


def box_patch(image_bgr: np.ndarray, box: np.ndarray | tuple[float, ...]) -> np.ndarray | None:
    """The box's grey content resampled to ``PATCH`` x ``PATCH`` float32 (None for an empty box)."""
    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    grey = cv2.cvtColor(image_bgr[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    out: np.ndarray = cv2.resize(grey, (PATCH, PATCH), interpolation=cv2.INTER_AREA).astype(np.float32)
    return out


@dataclass
class _Sample:
    area: float
    brightness: float
    patch: np.ndarray | None


@dataclass
class _History:
    samples: deque[_Sample] = field(default_factory=lambda: deque(maxlen=6))


def flicker_score(samples: list[_Sample]) -> float:
    """How much a tracked box varies over its samples (0 = perfectly static).

    The maximum of: coefficient of variation of the box area, that of the mean brightness, and the mean
    absolute change between consecutive box patches relative to their mean brightness. Needs >= 2 samples
    (returns 0 otherwise).
    """
    if len(samples) < 2:
        return 0.0
    areas = np.array([s.area for s in samples])
    bright = np.array([s.brightness for s in samples])
    area_cv = float(areas.std() / max(areas.mean(), 1e-6))
    bright_cv = float(bright.std() / max(bright.mean(), 1e-6))
    changes = []
    for a, b in zip(samples, samples[1:], strict=False):
        if a.patch is not None and b.patch is not None:
            ref = max(1.0, float((a.patch.mean() + b.patch.mean()) / 2.0))
            changes.append(float(np.abs(a.patch - b.patch).mean()) / ref)
    patch_change = float(np.mean(changes)) if changes else 0.0
    return max(area_cv, bright_cv, patch_change)


@dataclass(frozen=True)
class FireBoxCheck:
    """Why one fire/smoke box did or did not count in a frame (for tests and tuning)."""

    label: str
    confidence: float
    box: tuple[float, float, float, float]
    person_cover: float
    fire_colour: float
    flicker: float
    counted: bool
    reason: str = "counted"
    """``counted`` or the first suppressor that dropped the box: ``person``, ``colour``, ``confirm``,
    ``flicker``."""
    confirm_score: float | None = None
    """The second stage's p(fire) + p(smoke) of the box crop (None: no classifier, no image, or not reached)."""
    smoke_score: float | None = None
    """The second stage's p(smoke) of a ``smoke`` box crop, or the tile classifier's for a tile (None: smoke
    proposals off or not reached)."""
    source: str = "detector"
    """``detector`` (a box of ``rule.detector``) or ``tile`` (a smoke tile)."""


class FireRule:
    """Alerts on flickering, persistent fire or smoke, on the whole frame or in one zone.

    Args:
        camera_id: camera id.
        zone: the zone, or None for the whole frame (a box counts in a zone when its centre is inside).
        rule: the effective FIRE rule: ``classes`` (default fire, smoke), ``min_confidence``,
            ``confirm_k/n`` (default 3 of 5), ``dwell_seconds`` (default 0), ``clear_seconds``,
            ``update_interval_seconds``, ``cooldown_seconds``, ``match_iou``, ``severity`` (default 5).
        window_seconds: the k-of-n frames must lie within this many seconds.
        min_flicker: variation a track needs (see :func:`flicker_score`); 0 turns the check off.
        min_fire_colour: fire-colour share a ``fire`` box needs (see :func:`fire_colour_share`); 0 = off.
        person_cover: a box covered by a person box at least this much is ignored; > 1 turns it off.
        person_detector: detector whose ``person`` boxes are used when present in the frame's detections.
        person_min_confidence: person boxes below this confidence hide nothing.
        confirm: second-stage crop classifier that must confirm each box; None = off.
        confirm_min_score: p(fire) + p(smoke) a box crop needs from ``confirm``.
        smoke_min_confidence: detector floor of ``smoke`` boxes (below ``rule.min_confidence``) when smoke
            proposals are on; None = ``smoke_min_confidence`` of ``rule`` when it is a
            :class:`~pipeline.config_hazards.FireRuleConfig`, else ``rule.min_confidence``.
        smoke_min_score: p(smoke) from ``confirm`` with which a ``smoke`` box counts (needs ``confirm``);
            None = that of a ``FireRuleConfig`` ``rule``, else off.
        smoke_tiles: tile classifier whose confident smoke tiles are candidates; None = off.
        smoke_tile_min_score: p(smoke) a tile needs from ``smoke_tiles``.

    Example:
        >>> from pipeline.detect.detections import Detections
        >>> rule = FireRule("cam1", None, HazardRule(detector="fire", classes=["fire"], confirm_k=2,
        ...                 confirm_n=3, dwell_seconds=0), min_fire_colour=0)
        >>> img = np.zeros((100, 100, 3), np.uint8)
        >>> events = []
        >>> for t, x2 in enumerate([60, 70, 55, 75]):
        ...     img[:] = 0; img[40:80, 40:x2] = (0, 140, 255)
        ...     d = Detections.from_arrays([[40, 40, x2, 80]], [0.8], [0], {0: "fire"})
        ...     events += rule.judge(FrameView(float(t), 100, 100, img.copy(), {"fire": d}))
        >>> [(e.event.value, e.severity) for e in events]
        [('opened', 3)]
    """

    hazard: Hazard = Hazard.FIRE

    def __init__(self, camera_id: str, zone: ZoneConfig | None, rule: HazardRule, *,
                 window_seconds: float = 10.0, min_flicker: float = 0.04, min_fire_colour: float = 0.05,
                 person_cover: float = 0.5, person_detector: str = PERSON_DETECTOR,
                 person_min_confidence: float = 0.35, confirm: FireConfirmClassifier | None = None,
                 confirm_min_score: float = 0.6, smoke_min_confidence: float | None = None,
                 smoke_min_score: float | None = None, smoke_tiles: FireConfirmClassifier | None = None,
                 smoke_tile_min_score: float = 0.9) -> None:
        self.camera_id = camera_id
        self.zone = zone
        self.zone_id: str | None = zone.id if zone is not None else None
        self.rule = rule
        self.classes = frozenset(rule.classes or DEFAULT_CLASSES)
        self.window_seconds = float(window_seconds)
        self.min_flicker = float(min_flicker)
        self.min_fire_colour = float(min_fire_colour)
        self.person_cover = float(person_cover)
        self.person_detector = person_detector
        self.person_min_confidence = float(person_min_confidence)
        self.confirm = confirm
        self.confirm_min_score = float(confirm_min_score)
        # the site YAML's knobs ride on the rule config (hazards.fire.smoke_*), explicit arguments win
        if smoke_min_score is None:
            smoke_min_score = getattr(rule, "smoke_min_score", None)
        if smoke_min_confidence is None:
            smoke_min_confidence = getattr(rule, "smoke_min_confidence", None)
        self.smoke_min_score: float | None = None if confirm is None or smoke_min_score is None \
            else float(smoke_min_score)
        """p(smoke) a ``smoke`` box needs (None: smoke proposals off)."""
        self.smoke_min_confidence = float(rule.min_confidence) if self.smoke_min_score is None \
            or smoke_min_confidence is None else min(float(rule.min_confidence), float(smoke_min_confidence))
        """Detector floor of ``smoke`` boxes (``rule.min_confidence`` when smoke proposals are off)."""
        self.smoke_tiles = smoke_tiles
        self.smoke_tile_min_score = float(smoke_tile_min_score)
        self.detectors: tuple[str, ...] = (rule.detector,)
        """Detectors the analyzer must run for this rule (persons are used only when present)."""
        self.interval_seconds = rule.analysis_interval_seconds
        self.tracker = IoUTracker(match_iou=min(rule.match_iou, 0.2), max_missing_seconds=self.window_seconds,
                                  stationary_tolerance=1e9)
        self.history: dict[int, _History] = {}
        self.hits: deque[tuple[float, bool]] = deque(maxlen=rule.confirm_n)
        self.presence = PresenceTimer(grace_seconds=self.window_seconds)
        # Confirmation (k of n within the window) is done here; the lifecycle takes the result as is.
        self.lifecycle = IncidentLifecycle(camera_id, self.zone_id, Hazard.FIRE,
                                           rule.model_copy(update={"confirm_k": 1, "confirm_n": 1}))
        self.last_checks: list[FireBoxCheck] = []
        """Per-box verdicts of the last frame."""
        self._geometry = ZoneGeometryCache(zone) if zone is not None else None
        self.last_ts: float | None = None
        self.first_seen: float | None = None
        """Time of the first counted frame of the current confirmed run (the incident's ``started_at``)."""

    def geometry(self, width: int, height: int) -> ZoneGeometry | None:
        return None if self._geometry is None else self._geometry.get(width, height)

    def state(self) -> dict[str, object]:
        """Rule internals now (JSON-able): k-of-n within the window, presence, per-box verdicts of the last
        frame (with the suppressor that dropped a box) and the lifecycle."""
        ts = self.last_ts
        recent = 0 if ts is None else sum(1 for t, seen in self.hits
                                          if seen and ts - t <= self.window_seconds + TIME_EPS)
        return {
            "ts": ts,
            "confirm": {"k": self.rule.confirm_k, "n": self.rule.confirm_n, "hits": recent,
                        "window_seconds": self.window_seconds},
            "presence": self.presence.state(),
            "first_seen": self.first_seen,
            "boxes": [dataclasses.asdict(c) | {"box": [round(v, 1) for v in c.box]} for c in self.last_checks],
            "tracks": len(self.tracker.tracks),
            "lifecycle": self.lifecycle.state(),
        }

    def judge(self, view: FrameView) -> list[Incident]:
        """Judge one analysed frame; returns 0 or 1 incident events.

        Reads ``rule.detector`` and, when present, the person detector's ``person`` boxes. Without an
        image (``view.image`` None) the colour and patch checks are skipped (area flicker only).
        """
        ts, image, width, height = view.ts, view.image, view.width, view.height
        self.last_ts = ts
        found = view.detections_of(self.rule.detector)
        cand = found.with_classes(self.classes).with_min_confidence(
            min(self.rule.min_confidence, self.smoke_min_confidence))
        if self.smoke_min_confidence < self.rule.min_confidence and len(cand):
            keep = (cand.confidence >= self.rule.min_confidence) | (np.asarray(cand.labels) == "smoke")
            cand = cand[np.flatnonzero(keep)]
        n_det = len(cand)
        tiles = self._smoke_tile_boxes(image, found.class_names)
        if len(tiles):
            cand = Detections.merge([cand, tiles])
        from_tile = np.arange(len(cand)) >= n_det
        g = self.geometry(width, height)
        if g is not None and len(cand):
            centres = np.stack([(cand.xyxy[:, 0] + cand.xyxy[:, 2]) / 2, (cand.xyxy[:, 1] + cand.xyxy[:, 3]) / 2], 1)
            inside = np.flatnonzero(g.contains_points(centres))
            cand, from_tile = cand[inside], from_tile[inside]
        persons = view.detections_of(self.person_detector)
        persons = persons.with_classes(frozenset({"person"})).with_min_confidence(self.person_min_confidence)
        cover = max_cover(cand.xyxy, persons.xyxy)
        tracks = self.tracker.update(ts, cand.xyxy, cand.confidence, cand.labels)
        live = {t.id for t in tracks}
        self.history = {k: v for k, v in self.history.items() if k in live}
        checks: list[FireBoxCheck] = []
        counted: list[tuple[np.ndarray, str, float]] = []
        for t in tracks:
            if not t.seen_at(ts):
                continue
            i = _index_of(cand.xyxy, t.box)
            box = tuple(float(v) for v in t.box)
            area = max(0.0, (box[2] - box[0]) * (box[3] - box[1]))
            patch = box_patch(image, t.box) if image is not None else None
            bright = float(patch.mean()) if patch is not None else 0.0
            hist = self.history.setdefault(t.id, _History())
            hist.samples.append(_Sample(area, bright, patch))
            label = cand.labels[i] if i is not None else t.label
            colour = fire_colour_share(image, t.box) if image is not None else 1.0
            flick = flicker_score(list(hist.samples)[-self.rule.confirm_n:])
            pc = float(cover[i]) if i is not None and len(cover) else 0.0
            conf = float(cand.confidence[i]) if i is not None else t.confidence
            tile = i is not None and bool(from_tile[i])
            probs: np.ndarray | None = None
            if pc >= self.person_cover:
                reason = "person"
            elif tile:  # the tile classifier is its own confirmation; only flicker is left
                reason = "flicker" if self.min_flicker > 0 and flick < self.min_flicker else "counted"
            elif label == "fire" and image is not None and colour < self.min_fire_colour:
                reason = "colour"
            elif (probs := self._confirm_probs(image, t.box)) is not None and not self._confirmed(label, conf, probs):
                reason = "confirm"
            elif probs is None and conf < self.rule.min_confidence:
                reason = "confirm"  # a low-floor smoke proposal that no classifier could look at
            elif self.min_flicker > 0 and flick < self.min_flicker:
                reason = "flicker"
            else:
                reason = "counted"
            confirm_score = None if probs is None else float(1.0 - probs[NEITHER])
            smoke_score = float(probs[SMOKE]) if probs is not None and label == "smoke" \
                and self.smoke_min_score is not None else (conf if tile else None)
            ok = reason == "counted"
            checks.append(FireBoxCheck(label, t.confidence, (box[0], box[1], box[2], box[3]), round(pc, 3),
                                       round(colour, 3), round(flick, 4), ok, reason,
                                       None if confirm_score is None else round(confirm_score, 4),
                                       None if smoke_score is None else round(smoke_score, 4),
                                       "tile" if tile else "detector"))
            if ok:
                counted.append((t.box, label, t.confidence))
        self.last_checks = checks
        obs = self._confirm(ts, counted, width, height)
        event = self.lifecycle.step(ts, obs)
        return [event] if event is not None else []

    def _smoke_tile_boxes(self, image: np.ndarray | None, names: Mapping[int, str]) -> Detections:
        """The frame tiles that ``smoke_tiles`` calls smoke (confidence = p(smoke)), as ``smoke`` detections
        (the detector's class id of ``smoke`` when it has one)."""
        if self.smoke_tiles is None or image is None:
            return Detections.empty()
        boxes = frame_tiles(image.shape[1], image.shape[0])
        p_smoke = self.smoke_tiles.score_boxes(image, boxes)[:, SMOKE]
        keep = p_smoke >= self.smoke_tile_min_score
        cid = next((k for k, v in names.items() if v == "smoke"), -1)
        return Detections.from_arrays(boxes[keep], p_smoke[keep], [cid] * int(keep.sum()), {cid: "smoke"})

    def _confirm_probs(self, image: np.ndarray | None, box: np.ndarray) -> np.ndarray | None:
        """The second stage's (p(fire), p(smoke), p(neither)) of a box crop; None without a classifier or
        an image."""
        if self.confirm is None or image is None:
            return None
        probs: np.ndarray = self.confirm.score_boxes(image, np.asarray(box, np.float64).reshape(1, 4))[0]
        return probs

    def _confirmed(self, label: str, confidence: float, probs: np.ndarray) -> bool:
        """Whether the second stage lets a box count: p(fire) + p(smoke) >= ``confirm_min_score`` for a box at
        or above ``min_confidence``; a ``smoke`` box also (and below that floor, only) by its p(smoke)."""
        smoke = label == "smoke" and self.smoke_min_score is not None and float(probs[SMOKE]) >= self.smoke_min_score
        if confidence < self.rule.min_confidence:
            return smoke
        return smoke or float(1.0 - probs[NEITHER]) >= self.confirm_min_score

    def _confirm(self, ts: float, counted: list[tuple[np.ndarray, str, float]], width: int,
                 height: int) -> Observation | None:
        self.hits.append((ts, bool(counted)))
        in_window = [t for t, seen in self.hits if seen and ts - t <= self.window_seconds + TIME_EPS]
        recent = len(in_window)
        was_present = self.presence.since is not None
        since = self.presence.update(ts, recent >= self.rule.confirm_k)
        if since is None:
            self.first_seen = None
        elif not was_present:
            self.first_seen = min(in_window)  # the fire began at the first frame of the confirming run
        if since is None or recent < self.rule.confirm_k or not counted:
            return None
        if ts - since + TIME_EPS < self.rule.dwell_seconds:
            return None
        labels = sorted({lab for _, lab, _ in counted})
        conf = max(c for _, _, c in counted)
        boxes = tuple(normalised_box(b, width, height, lab, c) for b, lab, c in counted)
        shown = [c for c in self.last_checks if c.counted]
        details: dict[str, object] = {
            "labels": labels,
            "boxes": len(counted),
            "confirmed_frames": recent,
            "flicker": max(c.flicker for c in shown) if shown else 0.0,
            "fire_colour": max(c.fire_colour for c in shown) if shown else 0.0,
            "smoke_only": labels == ["smoke"],
        }
        started = self.first_seen if self.first_seen is not None else since
        return Observation(started_at=started, confidence=float(conf), boxes=boxes, details=details)


def _index_of(boxes: np.ndarray, box: np.ndarray) -> int | None:
    """Index of the row of ``boxes`` equal to ``box`` (the detection a track matched this frame)."""
    if not len(boxes):
        return None
    d = np.abs(boxes - box.reshape(1, 4)).sum(axis=1)
    i = int(np.argmin(d))
    return i if d[i] < 1e-6 else None


__all__ = ["FireBoxCheck", "FireRule", "box_patch", "fire_colour_share", "flicker_score"]
