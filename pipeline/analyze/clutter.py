"""Clutter rule: things left standing in a fire lane, corridor or stairwell (消防通道堆物, 楼道停放电动车).

:class:`ClutterRule` combines two paths and opens **one incident per zone**:

a. **Detected objects** of ``rule.classes`` (COCO bicycle, motorcycle, suitcase, chair, couch, bench ...)
   and, from a dedicated ``clutter`` detector when configured, ``garbage`` / ``overflowing_bin`` (never
   plain ``bin``: a bin in its place is not clutter). They are tracked by IoU like parked cars
   (:class:`~pipeline.analyze.tracking.IoUTracker`) and count once their box has stood still for
   ``rule.dwell_seconds`` with the bottom-centre (or centre) inside the zone. A box mostly covered
   (``person_cover``) by a ``person`` box is ignored: someone standing still in a dark coat read as an
   ``overflowing_bin`` to clutter model v1 (46 of 139 frames of the shared corridor clip), and a bag
   someone carries is not clutter.
b. **Model-free static objects** (:class:`~pipeline.analyze.static_objects.StaticObjectDetector`: dual
   long-/short-term background, person boxes masked, blobs of at least ``min_object_px`` working pixels,
   a ghost test that heals removals): a blob that has stood for ``rule.dwell_seconds`` is an *unknown
   object*. A blob mostly covered by a tracked clutter object belongs to path (a); one covered by a
   confident detection of a class that is never clutter (``not_clutter``: person, bin, car, truck, bus)
   is not clutter. Boxes recorded while the zone was learned are scene furniture
   (:class:`~pipeline.analyze.furniture.FurnitureMemory`) and never hide a blob; boxes of other
   classes (a bag read as ``handbag`` or ``cat``) never hide one either.

Details of an event: ``objects`` (labels, ``"unknown object"`` for (b)), ``labels``, ``blocked_share``
(0..1 share of the zone area covered by offending boxes and blobs), ``unknown_objects``, ``ebike`` and
``dwell_seconds``. A bicycle or motorcycle (an e-bike: a top cause of residential fires when parked or
charged indoors) in a ``corridor`` or ``stairwell`` sets ``ebike: true`` and raises the severity to at
least 4. An object present while the background is learned is part of the background; when it is taken
away, the revealed floor is a *removal*: the ghost test heals it and it never alerts.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from pipeline.analyze.furniture import FurnitureMemory
from pipeline.analyze.incident import Hazard, Incident
from pipeline.analyze.rules import TIME_EPS, FrameView, IncidentLifecycle, Observation, normalised_box
from pipeline.analyze.static_objects import StaticObjectDetector
from pipeline.analyze.tracking import IoUTracker, Track, max_cover
from pipeline.analyze.zones import ZoneGeometry
from pipeline.config import HazardRule, ZoneConfig, ZoneKind
from pipeline.detect.detections import Detections

DEFAULT_CLASSES = ("bicycle", "motorcycle", "suitcase", "chair", "couch", "bench", "garbage", "overflowing_bin")
CLUTTER_MODEL_CLASSES = ("garbage", "overflowing_bin")
"""Classes of the dedicated clutter detector that always count (its ``bin`` never does)."""
NEVER = frozenset({"bin", "person"})
EBIKE_LABELS = frozenset({"bicycle", "motorcycle", "ebike", "e-bike", "electric_bike"})
EBIKE_ZONES = frozenset({ZoneKind.CORRIDOR, ZoneKind.STAIRWELL})
EBIKE_SEVERITY = 4
UNKNOWN = "unknown object"
NOT_CLUTTER = frozenset({"person", "bin", "car", "truck", "bus"})
"""Classes whose confident box explains a static blob as not clutter (parked cars are the parking rule's)."""


class ClutterRule:
    """Alerts on objects left in a fire lane, corridor or stairwell zone.

    Args:
        camera_id: camera id.
        zone: the zone.
        rule: the effective CLUTTER rule: ``classes``, ``min_confidence``, ``dwell_seconds``, ``match_iou``,
            ``clear_seconds``, ``update_interval_seconds``, ``cooldown_seconds``, ``confirm_k/n``, ``severity``.
        clutter_detector: name of a dedicated clutter detector whose garbage / overflowing_bin count too.
        person_detector: detector whose ``person`` boxes are masked out of the change path and hide the
            detected objects they cover.
        person_cover: a detected object covered by one person box at least this much is ignored; > 1 turns
            it off.
        model_free: run the static-object path (b).
        stationary_tolerance: as in :class:`~pipeline.analyze.tracking.IoUTracker`.
        change: the :class:`~pipeline.analyze.static_objects.StaticObjectDetector` to use (default settings:
            ``min_object_px`` and the other sizes are set there).
        furniture: record detector boxes while the zone is learned and never let them hide a blob.
        not_clutter: classes whose confident (``rule.min_confidence``) box hides a static blob.
    """

    hazard: Hazard = Hazard.CLUTTER

    def __init__(self, camera_id: str, zone: ZoneConfig, rule: HazardRule, *, clutter_detector: str = "clutter",
                 person_detector: str = "coco", person_cover: float = 0.6, model_free: bool = True,
                 stationary_tolerance: float = 0.15, change: StaticObjectDetector | None = None,
                 furniture: bool = True, not_clutter: frozenset[str] = NOT_CLUTTER) -> None:
        self.camera_id = camera_id
        self.zone = zone
        self.zone_id: str | None = zone.id
        self.rule = rule
        self.classes = frozenset(rule.classes or DEFAULT_CLASSES) - NEVER
        self.clutter_detector = clutter_detector
        self.person_detector = person_detector
        self.person_cover = float(person_cover)
        self.detectors: tuple[str, ...] = tuple(dict.fromkeys((rule.detector, clutter_detector, person_detector)))
        """Detectors whose output this rule reads (the analyzer runs those the site defines)."""
        self.interval_seconds = rule.analysis_interval_seconds
        self.model_free = model_free
        self.use_furniture = furniture
        self.furniture = FurnitureMemory()
        self.not_clutter = frozenset(not_clutter)
        self.tracker = IoUTracker(match_iou=rule.match_iou, max_missing_seconds=rule.clear_seconds,
                                  stationary_tolerance=stationary_tolerance)
        self.change = change or StaticObjectDetector()
        self.lifecycle = IncidentLifecycle(camera_id, zone.id, Hazard.CLUTTER, rule)
        self.ebike_zone = zone.kind in EBIKE_ZONES
        self._geometry: ZoneGeometry | None = None

    def geometry(self, width: int, height: int) -> ZoneGeometry:
        g = self._geometry
        if g is None or (g.width, g.height) != (width, height):
            g = self._geometry = ZoneGeometry(self.zone, width, height)
            self.reset()
        return g

    def reset(self) -> None:
        """Re-learn the empty zone and its furniture (after the scene changed for good)."""
        self.change.reset()
        self.furniture.reset()

    def state(self) -> dict[str, object]:
        """Rule internals now (JSON-able): tracked objects, the last observation's details (blocked share,
        unknown objects, dwell), the lifecycle and the static-object detector (learning, blobs with age and
        object score, removals healed, furniture boxes)."""
        obs = self.lifecycle.last_observation
        return {
            "dwell_seconds": self.rule.dwell_seconds,
            "tracks": [t.state() for t in self.tracker.tracks],
            "last_observation": dict(obs.details) if obs is not None else None,
            "lifecycle": self.lifecycle.state(),
            "static_objects": {**self.change.state(), "furniture_boxes": len(self.furniture.boxes)},
        }

    def objects(self, detections: dict[str, Detections]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The detections that count as clutter, from every detector read: (xyxy, confidence, labels).

        Kept apart per detector and joined as plain arrays (class ids of different models collide).
        """
        parts = [detections.get(self.rule.detector, Detections.empty()).with_classes(self.classes)]
        if self.clutter_detector != self.rule.detector and self.clutter_detector in detections:
            names = self.classes | set(CLUTTER_MODEL_CLASSES)
            parts.append(detections[self.clutter_detector].with_classes(names - NEVER))
        parts = [p.with_min_confidence(self.rule.min_confidence) for p in parts]
        xyxy = np.concatenate([p.xyxy for p in parts]).reshape(-1, 4)
        conf = np.concatenate([p.confidence for p in parts]).reshape(-1)
        labels = [lab for p in parts for lab in p.labels]
        keep = max_cover(xyxy, self._persons(detections).xyxy) < self.person_cover
        return xyxy[keep], conf[keep], [lab for lab, k in zip(labels, keep, strict=True) if k]

    def _persons(self, detections: dict[str, Detections]) -> Detections:
        persons = detections.get(self.person_detector, Detections.empty())
        return persons.with_classes(frozenset({"person"})).with_min_confidence(0.3)

    def judge(self, view: FrameView) -> list[Incident]:
        """Judge one analysed frame (image + every detector's output); returns 0 or 1 incident events.

        Without an image (``view.image`` None) only the detected-object path runs.
        """
        return self._judge(view.ts, view.image, dict(view.detections), view.width, view.height)

    def update(self, ts: float, detections: Detections, width: int, height: int) -> list[Incident]:
        """Detector path only (no image): see :meth:`update_image`. Prefer :meth:`judge`."""
        return self._judge(ts, None, {self.rule.detector: detections}, width, height)

    def update_image(self, ts: float, frame_bgr: np.ndarray, detections: dict[str, Detections], width: int,
                     height: int) -> list[Incident]:
        """Judge one analysed frame (image + every detector's output); returns 0 or 1 events.

        Kept for callers not yet on :meth:`judge` (the analyzer calls only :meth:`judge`)."""
        return self._judge(ts, frame_bgr, detections, width, height)

    def _judge(self, ts: float, image: np.ndarray | None, detections: dict[str, Detections], width: int,
               height: int) -> list[Incident]:
        g = self.geometry(width, height)
        self.tracker.update(ts, *self.objects(detections))
        found = self._offenders(ts, g)
        x1, y1, x2, y2 = g.bbox_px
        zmask = g.mask[y1:y2, x1:x2] > 0
        blocked = np.zeros(zmask.shape, bool)
        for t in found:
            bx1, by1, bx2, by2 = (int(round(float(v))) for v in t.box)
            blocked[max(0, by1 - y1):max(0, by2 - y1), max(0, bx1 - x1):max(0, bx2 - x1)] = True
        unknown: list[tuple[float, float, float, float]] = []
        unknown_age = 0.0
        if image is not None and self.model_free:
            unknown, unknown_age, blob_mask = self._unknown(ts, image, detections, g)
            blocked |= blob_mask
        blocked &= zmask
        share = float(np.count_nonzero(blocked)) / max(1, int(np.count_nonzero(zmask)))
        obs = self._observe(ts, found, unknown, unknown_age, share, width, height) if found or unknown else None
        event = self.lifecycle.step(ts, obs)
        if event is None:
            return []
        if event.details.get("ebike"):
            event = dataclasses.replace(event, severity=max(event.severity, EBIKE_SEVERITY))
        return [event]

    def _offenders(self, ts: float, g: ZoneGeometry) -> list[Track]:
        live = [t for t in self.tracker.tracks if t.seen_at(ts)]
        if not live:
            return []
        bottoms = g.contains_points(np.array([t.bottom_centre for t in live]))
        centres = g.contains_points(np.array([t.centre for t in live]))
        return [t for t, b, c in zip(live, bottoms, centres, strict=True)
                if (b or c) and t.stationary_seconds(ts) + TIME_EPS >= self.rule.dwell_seconds]

    def _unknown(self, ts: float, image: np.ndarray, detections: dict[str, Detections],
                 g: ZoneGeometry) -> tuple[list[tuple[float, float, float, float]], float, np.ndarray]:
        """Unknown-object blobs that have stood ``dwell_seconds`` (full-frame pixel boxes), their max age,
        and their mask (crop size)."""
        x1, y1, x2, y2 = g.bbox_px
        crop = image[y1:y2, x1:x2]
        ch, cw = crop.shape[:2]
        hidden = np.zeros((ch, cw), bool)
        for b in self._persons(detections).xyxy:
            px1, py1, px2, py2 = (float(v) for v in b)
            pad_x, pad_y = 0.1 * (px2 - px1), 0.05 * (py2 - py1)
            hidden[max(0, int(py1 - pad_y) - y1):max(0, int(py2 + pad_y) - y1),
                   max(0, int(px1 - pad_x) - x1):max(0, int(px2 + pad_x) - x1)] = True
        others = self._non_person_boxes(detections)
        if not self.change.ready and self.use_furniture:
            self.furniture.learn(np.concatenate([d.xyxy for d in others] or [np.zeros((0, 4))]).reshape(-1, 4))
        scene = self.change.update(ts, crop, hidden, frame_width=g.width)
        empty = np.zeros((ch, cw), bool)
        if scene.learning or not scene.blobs:
            return [], 0.0, empty
        hiding = self._hiding_boxes(detections, others, persons=True)
        behind = self._hiding_boxes(detections, others, persons=False)
        zone_small = cv2.resize(g.mask[y1:y2, x1:x2], scene.blobs[0].mask.shape[::-1],
                                interpolation=cv2.INTER_NEAREST) > 0
        out: list[tuple[float, float, float, float]] = []
        keep = np.zeros(zone_small.shape, bool)
        oldest = 0.0
        for blob in scene.blobs:
            if blob.age + TIME_EPS < self.rule.dwell_seconds:
                continue
            if np.count_nonzero(blob.mask & zone_small) < self.change.min_object_px:
                continue  # (mostly) outside the zone
            box = (x1 + blob.box[0], y1 + blob.box[1], x1 + blob.box[2], y1 + blob.box[3])
            # an object seen before a person stepped in front of it is not that person
            explaining = behind if blob.latched else hiding
            if len(explaining) and max_cover(np.array(box), explaining)[0] >= 0.5:
                continue  # a tracked clutter object (path a), or a person, bin, car ...
            out.append(box)
            keep |= blob.mask
            oldest = max(oldest, blob.age)
        mask = cv2.resize(keep.astype(np.uint8), (cw, ch), interpolation=cv2.INTER_NEAREST) > 0
        return out, oldest, mask

    def _non_person_boxes(self, detections: dict[str, Detections]) -> list[Detections]:
        return [d.with_classes(frozenset(d.labels) - {"person"}) for name, d in detections.items()
                if name in self.detectors]

    def _hiding_boxes(self, detections: dict[str, Detections], others: list[Detections], *,
                      persons: bool) -> np.ndarray:
        """Boxes that explain a static blob: tracked clutter objects and confident ``not_clutter`` detections
        (with ``persons``, person boxes too), never learned furniture."""
        parts = [np.array([t.box for t in self.tracker.tracks]).reshape(-1, 4)]
        parts += [d.with_classes(self.not_clutter).with_min_confidence(self.rule.min_confidence).xyxy
                  for d in [*others, *([self._persons(detections)] if persons else [])]]
        boxes = np.concatenate(parts).reshape(-1, 4)
        if self.use_furniture and len(boxes):
            boxes = boxes[~self.furniture.is_furniture(boxes)]
        return boxes

    def _observe(self, ts: float, found: list[Track], unknown: list[tuple[float, float, float, float]],
                 unknown_age: float, share: float, width: int, height: int) -> Observation:
        labels = [t.label for t in found] + [UNKNOWN] * len(unknown)
        boxes = [normalised_box(t.box, width, height, t.label, t.confidence) for t in found]
        boxes += [normalised_box(b, width, height, UNKNOWN, 0.0) for b in unknown]
        starts = [t.stationary_since for t in found] + ([ts - unknown_age] if unknown else [])
        started = min(starts)
        ebike = self.ebike_zone and any(t.label in EBIKE_LABELS for t in found)
        details: dict[str, object] = {
            "objects": sorted(set(labels)),
            "labels": labels,
            "blocked_share": round(min(1.0, share), 4),
            "unknown_objects": len(unknown),
            "detected_objects": len(found),
            "ebike": ebike,
            "dwell_seconds": round(ts - started, 1),
            "zone_kind": self.zone.kind.value,
        }
        conf = max([t.best_confidence for t in found] or [0.0])
        return Observation(started_at=started, confidence=float(conf), boxes=tuple(boxes), details=details)


