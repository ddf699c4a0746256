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
b. **Model-free stationary change** (:class:`StationaryChange`): a long-term background of the empty zone
   (median of the first frames, then a slow exponential average updated only where nothing differs,
   nothing moves and no person is) is compared with the current frame; pixels that differ from it but
   not from a short-term background (so they are not moving) and lie outside person boxes are *static
   foreground*. Each pixel remembers since when it has been static foreground; blobs of pixels older
   than ``rule.dwell_seconds`` and at least ``min_blob_share`` of the zone are *unknown objects*.
   Blobs mostly covered by a detected object are attributed to it instead.

Details of an event: ``objects`` (labels, ``"unknown object"`` for (b)), ``labels``, ``blocked_share``
(0..1 share of the zone area covered by offending boxes and blobs), ``unknown_objects``, ``ebike`` and
``dwell_seconds``. A bicycle or motorcycle (an e-bike: a top cause of residential fires when parked or
charged indoors) in a ``corridor`` or ``stairwell`` sets ``ebike: true`` and raises the severity to at
least 4. Limitation: an object present while the background is learned is part of the background; when
it is taken away the revealed floor looks like a new object (call :meth:`ClutterRule.reset`).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from pipeline.analyze.incident import Hazard, Incident
from pipeline.analyze.rules import TIME_EPS, FrameView, IncidentLifecycle, Observation, normalised_box
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


class StationaryChange:
    """Static-foreground detector of one zone crop (model-free path of :class:`ClutterRule`).

    Works on the zone's bounding crop scaled so its longer side is ``size`` pixels.

    Args:
        size: longer side of the working image (pixels).
        learn_frames: frames whose (person-masked) median is the empty zone.
        threshold: per-pixel difference (grey levels, max over channels, after gain compensation) that
            counts as changed.
        alpha_long: per-frame weight of the current frame in the long-term background (where unchanged).
        alpha_short: per-frame weight of the current frame in the short-term background.
        grace_seconds: a pixel that shows the background again keeps its timer this long (noise).
        hold_seconds: a static pixel hidden by a person or by something moving in front of it keeps its
            timer this long.

    Example:
        >>> sc = StationaryChange(size=40, learn_frames=2)
        >>> empty = np.full((40, 40, 3), 120, np.uint8); full = empty.copy(); full[10:30, 10:30] = 20
        >>> no = np.zeros((40, 40), bool)
        >>> [sc.update(float(t), empty, no) for t in range(2)][-1] is None
        True
        >>> ages = [sc.update(float(t), full, no) for t in range(2, 8)]
        >>> float(ages[-1][20, 20]), float(ages[-1][2, 2])   # seconds static, NaN = background
        (3.0, nan)
    """

    def __init__(self, size: int = 160, learn_frames: int = 5, threshold: float = 30.0, alpha_long: float = 0.05,
                 alpha_short: float = 0.5, grace_seconds: float = 3.0, hold_seconds: float = 60.0) -> None:
        self.size = int(size)
        self.learn_frames = int(learn_frames)
        self.threshold = float(threshold)
        self.alpha_long = float(alpha_long)
        self.alpha_short = float(alpha_short)
        self.grace_seconds = float(grace_seconds)
        self.hold_seconds = float(hold_seconds)
        self.long_bg: np.ndarray | None = None
        self.short_bg: np.ndarray | None = None
        self.since: np.ndarray | None = None
        self.last_static: np.ndarray | None = None
        self._samples: list[np.ndarray] = []
        self.static_mask: np.ndarray | None = None
        """bool: static foreground of the last frame."""

    @property
    def ready(self) -> bool:
        return self.long_bg is not None

    def reset(self) -> None:
        self.long_bg = self.short_bg = self.since = self.last_static = self.static_mask = None
        self._samples = []

    def prepare(self, crop_bgr: np.ndarray) -> np.ndarray:
        """Scale and blur a crop into the float32 working image."""
        h, w = crop_bgr.shape[:2]
        s = self.size / max(h, w)
        small = cv2.resize(crop_bgr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        out: np.ndarray = cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)
        return out

    def update(self, ts: float, crop_bgr: np.ndarray, hidden: np.ndarray) -> np.ndarray | None:
        """Feed one crop; ``hidden`` (bool, crop size) marks person pixels.

        Returns:
            float64 (working size) seconds each pixel has been static foreground (NaN where it is not),
            or None while learning.
        """
        cur = self.prepare(crop_bgr)
        hid = cv2.resize(hidden.astype(np.uint8), (cur.shape[1], cur.shape[0]),
                         interpolation=cv2.INTER_NEAREST).astype(bool)
        if self.long_bg is not None and self.long_bg.shape != cur.shape:
            self.reset()
        if self.long_bg is None:
            masked = cur.copy()
            masked[hid] = np.nan
            self._samples.append(masked)
            if len(self._samples) < self.learn_frames:
                return None
            stack = np.stack(self._samples)
            bg = np.nanmedian(stack, axis=0) if not np.isnan(stack).all(axis=0).any() else np.median(
                np.nan_to_num(stack, nan=float(np.nanmedian(stack))), axis=0)
            self.long_bg = np.nan_to_num(bg, nan=float(np.nanmedian(bg))).astype(np.float32)
            self.short_bg = cur.copy()
            # float64: Unix timestamps (~1.8e9) in float32 are multiples of 128 s
            self.since = np.full(cur.shape[:2], np.nan, np.float64)
            self.last_static = np.full(cur.shape[:2], -np.inf, np.float64)
            self._samples = []
            return None
        assert self.short_bg is not None and self.since is not None and self.last_static is not None
        sel = ~hid
        if not sel.any():
            sel = np.ones(hid.shape, bool)
        gains = np.array([float(np.median(self.long_bg[:, :, c][sel])) / max(1.0, float(np.median(cur[:, :, c][sel])))
                          for c in range(3)], np.float32)
        comp = cur * np.clip(gains, 0.5, 2.0)
        changed = np.abs(comp - self.long_bg).max(axis=2) > self.threshold
        moving = np.abs(cur - self.short_bg).max(axis=2) > self.threshold
        static = changed & ~moving & ~hid
        self.static_mask = static
        self.since[static & np.isnan(self.since)] = ts
        self.last_static[static] = ts
        keep = hid | (changed & moving)  # hidden behind a person or something passing: keep the timer
        gone = ts - self.last_static
        expired = ~static & ((keep & (gone > self.hold_seconds + TIME_EPS))
                             | (~keep & (gone > self.grace_seconds + TIME_EPS)))
        self.since[expired] = np.nan
        quiet = ~changed & ~moving & ~hid
        self.long_bg[quiet] += self.alpha_long * (comp[quiet] - self.long_bg[quiet])
        self.short_bg += self.alpha_short * (cur - self.short_bg)
        age: np.ndarray = np.where(np.isnan(self.since), np.nan, float(ts) - self.since)
        return age


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
        model_free: run the stationary-change path (b).
        min_blob_share: smallest unknown blob, as a share of the zone area.
        stationary_tolerance: as in :class:`~pipeline.analyze.tracking.IoUTracker`.
        change: the :class:`StationaryChange` to use (default settings).
    """

    hazard: Hazard = Hazard.CLUTTER

    def __init__(self, camera_id: str, zone: ZoneConfig, rule: HazardRule, *, clutter_detector: str = "clutter",
                 person_detector: str = "coco", person_cover: float = 0.6, model_free: bool = True,
                 min_blob_share: float = 0.01,
                 stationary_tolerance: float = 0.15, change: StationaryChange | None = None) -> None:
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
        self.min_blob_share = float(min_blob_share)
        self.tracker = IoUTracker(match_iou=rule.match_iou, max_missing_seconds=rule.clear_seconds,
                                  stationary_tolerance=stationary_tolerance)
        self.change = change or StationaryChange()
        self.lifecycle = IncidentLifecycle(camera_id, zone.id, Hazard.CLUTTER, rule)
        self.ebike_zone = zone.kind in EBIKE_ZONES
        self.unknown_since: float | None = None
        self._geometry: ZoneGeometry | None = None

    def geometry(self, width: int, height: int) -> ZoneGeometry:
        g = self._geometry
        if g is None or (g.width, g.height) != (width, height):
            g = self._geometry = ZoneGeometry(self.zone, width, height)
            self.change.reset()
        return g

    def reset(self) -> None:
        """Re-learn the empty zone (after the scene changed for good)."""
        self.change.reset()

    def state(self) -> dict[str, object]:
        """Rule internals now (JSON-able): tracked objects, the last observation's details (blocked share,
        unknown objects, dwell) and the lifecycle."""
        obs = self.lifecycle.last_observation
        return {
            "dwell_seconds": self.rule.dwell_seconds,
            "tracks": [t.state() for t in self.tracker.tracks],
            "last_observation": dict(obs.details) if obs is not None else None,
            "lifecycle": self.lifecycle.state(),
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
        """Unknown-object blobs (full-frame pixel boxes), their max age, and their mask (crop size)."""
        x1, y1, x2, y2 = g.bbox_px
        crop = image[y1:y2, x1:x2]
        ch, cw = crop.shape[:2]
        hidden = np.zeros((ch, cw), bool)
        for b in self._persons(detections).xyxy:
            px1, py1, px2, py2 = (float(v) for v in b)
            pad_x, pad_y = 0.1 * (px2 - px1), 0.05 * (py2 - py1)
            hidden[max(0, int(py1 - pad_y) - y1):max(0, int(py2 + pad_y) - y1),
                   max(0, int(px1 - pad_x) - x1):max(0, int(px2 + pad_x) - x1)] = True
        age = self.change.update(ts, crop, hidden)
        empty = np.zeros((ch, cw), bool)
        if age is None:
            return [], 0.0, empty
        ripe = (np.nan_to_num(age, nan=-1.0) + TIME_EPS >= self.rule.dwell_seconds).astype(np.uint8)
        ripe = cv2.morphologyEx(ripe, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        ah, aw = ripe.shape
        small_zone = cv2.resize(g.mask[y1:y2, x1:x2], (aw, ah), interpolation=cv2.INTER_NEAREST) > 0
        ripe[~small_zone] = 0
        n, labels, stats, _ = cv2.connectedComponentsWithStats(ripe, connectivity=8)
        min_area = self.min_blob_share * max(1, int(np.count_nonzero(small_zone)))
        sx, sy = cw / aw, ch / ah
        known = np.concatenate([d.xyxy for d in detections.values()] or [np.zeros((0, 4))]).reshape(-1, 4)
        out: list[tuple[float, float, float, float]] = []
        keep = np.zeros((ah, aw), bool)
        oldest = 0.0
        for i in range(1, n):
            bx, by, bw, bh, area = (int(v) for v in stats[i])
            if area < min_area:
                continue
            box = (x1 + bx * sx, y1 + by * sy, x1 + (bx + bw) * sx, y1 + (by + bh) * sy)
            if max_cover(np.array(box), known)[0] >= 0.5:
                continue  # a detected thing (clutter -> path a; a bin, a person -> not clutter)
            out.append(box)
            keep |= labels == i
            oldest = max(oldest, float(np.nanmax(np.where(labels == i, age, np.nan))))
        mask = cv2.resize(keep.astype(np.uint8), (cw, ch), interpolation=cv2.INTER_NEAREST) > 0
        return out, oldest, mask

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


