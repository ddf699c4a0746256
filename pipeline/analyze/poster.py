"""Poster / small-ad rule (小广告, 牛皮癣): flyers stuck on a wall zone, read with OCR.

Unlike the YOLO rules, :class:`PosterRule` reads no detector output: it looks at the frame image of the
:class:`~pipeline.analyze.rules.FrameView` and runs a :class:`~pipeline.detect.ocr.TextDetector` on the
zone's crop.

How it works:

1. **Learning** (first ``learn_frames`` analysed frames): :class:`WallReference` stacks the zone crops;
   the per-pixel median is the clean wall (people walking by are voted out). OCR of that median gives
   the *reference text* - house numbers, permanent signs - which never alerts.
2. **Each later judged frame** (the analyzer judges it every ``rule.analysis_interval_seconds``, 5 s by
   default; posters are slow):

   * cheap pass: DB text detection only (no recognition) on the crop;
   * a text box is a *candidate* when its centre is in the zone, it does not overlap reference text, and
     a good share of its pixels changed against the reference (gain-compensated, so a global lighting
     change is not a change);
   * nearby candidate lines are grouped into one flyer, grown to the changed blob around them (the
     paper), and tracked over frames by IoU; a flyer counts as present when seen in at least k of the
     last n analysed frames (``max(rule.confirm_k/n, min_confirm)``, so a passer-by's T-shirt does not
     alert);
   * confirmed flyers are read (full OCR of the flyer's box) once, and again every ``reread_seconds``:
     texts, phone numbers, ad keywords and categories go into the incident's ``details``.
3. The background keeps adapting slowly (running median, ``adapt_step`` grey levels a frame) outside
   candidate flyers, so dirt and slow lighting drift do not pile up, but a flyer is never learned away.

One incident per zone (all flyers on it), lifecycle from :class:`~pipeline.analyze.rules.IncidentLifecycle`:
``opened`` when the first flyer is confirmed, ``updated`` (rate-limited), ``cleared`` after
``rule.clear_seconds`` without a flyer. A flyer pasted *over* reference text is not detected (limitation);
call :meth:`PosterRule.reset` to re-learn a wall after it was repainted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.analyze.incident import Hazard, Incident
from pipeline.analyze.rules import TIME_EPS, FrameView, IncidentLifecycle, Observation, normalised_box
from pipeline.analyze.text_extract import analyze_text
from pipeline.analyze.zones import ZoneGeometry
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.ocr import TextBox, TextDetector

Box = tuple[float, float, float, float]


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _cover(a: Box, b: Box) -> float:
    """Share of box ``a`` covered by box ``b``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if area > 0 else 0.0


def _union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


class WallReference:
    """The clean wall of one zone crop: a background image and the text that belongs there.

    Args:
        learn_frames: crops stacked before the median background is ready.
        change_threshold: per-pixel difference (grey levels, after gain compensation) that counts as
            changed.
        adapt_step: running-median step (grey levels per analysed frame) of background adaptation.

    Example:
        >>> ref = WallReference(learn_frames=3)
        >>> wall = np.full((40, 60, 3), 200, np.uint8)
        >>> [ref.add_sample(wall) for _ in range(3)]
        [False, False, True]
        >>> dark = (wall * 0.7).astype(np.uint8); dark[10:20, 10:30] = 0   # darker light + a new patch
        >>> m = ref.change_mask(dark)
        >>> bool(m[15, 20]), bool(m[30, 50])
        (True, False)
    """

    def __init__(self, learn_frames: int = 5, change_threshold: float = 28.0, adapt_step: float = 1.0) -> None:
        if learn_frames < 1:
            raise ValueError("learn_frames must be >= 1")
        self.learn_frames = int(learn_frames)
        self.change_threshold = float(change_threshold)
        self.adapt_step = float(adapt_step)
        self._samples: list[np.ndarray] = []
        self.background: np.ndarray | None = None
        """float32 (h, w, 3) clean-wall crop, once learned."""
        self.text_boxes: list[TextBox] = []
        """Reference text (crop coordinates): present on the clean wall, never a flyer."""
        self.mask: np.ndarray | None = None
        """Optional bool (h, w) zone mask of the crop; gain is measured inside it."""

    @property
    def ready(self) -> bool:
        return self.background is not None

    def add_sample(self, crop_bgr: np.ndarray) -> bool:
        """Add one learning crop; True once the background is ready."""
        if self.background is not None:
            return True
        if self._samples and self._samples[0].shape != crop_bgr.shape:
            self._samples.clear()  # the frame size changed: start over
        self._samples.append(cv2.GaussianBlur(crop_bgr, (3, 3), 0).astype(np.float32))
        if len(self._samples) >= self.learn_frames:
            self.background = np.median(np.stack(self._samples), axis=0).astype(np.float32)
            self._samples.clear()
        return self.background is not None

    def background_bgr(self) -> np.ndarray:
        """The learned background as a BGR uint8 image."""
        if self.background is None:
            raise RuntimeError("reference not learned yet")
        out: np.ndarray = np.clip(self.background + 0.5, 0, 255).astype(np.uint8)
        return out

    def change_mask(self, crop_bgr: np.ndarray) -> np.ndarray:
        """bool (h, w): pixels that differ from the background after per-channel gain compensation."""
        if self.background is None:
            raise RuntimeError("reference not learned yet")
        cur = cv2.GaussianBlur(crop_bgr, (3, 3), 0).astype(np.float32)
        bg = self.background
        sel = self.mask if self.mask is not None and self.mask.any() else np.ones(bg.shape[:2], bool)
        gains = []
        for c in range(3):
            cm = float(np.median(cur[:, :, c][sel]))
            gains.append(float(np.median(bg[:, :, c][sel])) / cm if cm > 1 else 1.0)
        diff = np.abs(cur * np.array(gains, np.float32) - bg).max(axis=2)
        changed = (diff > self.change_threshold).astype(np.uint8)
        out: np.ndarray = cv2.dilate(changed, np.ones((3, 3), np.uint8)).astype(bool)
        return out

    def adapt(self, crop_bgr: np.ndarray, frozen: np.ndarray | None = None) -> None:
        """Running-median step towards ``crop_bgr`` except where ``frozen`` (bool h, w) is True."""
        if self.background is None or self.adapt_step <= 0:
            return
        cur = cv2.GaussianBlur(crop_bgr, (3, 3), 0).astype(np.float32)
        step = np.sign(cur - self.background) * self.adapt_step
        if frozen is not None:
            step[frozen] = 0.0
        self.background += step

    def overlaps_text(self, box: Box, min_cover: float = 0.3) -> bool:
        """Whether ``box`` (crop coordinates) overlaps reference text."""
        return any(_cover(box, t.xyxy) >= min_cover or _cover(t.xyxy, box) >= min_cover
                   for t in self.text_boxes)

    def reset(self) -> None:
        self._samples.clear()
        self.background = None
        self.text_boxes = []


@dataclass
class _Flyer:
    box: Box  # crop coordinates
    first_seen: float
    hits: deque[bool]
    lines: list[TextBox] = field(default_factory=list)
    det_score: float = 0.0
    read_at: float | None = None
    texts: list[TextBox] = field(default_factory=list)


class PosterRule:
    """Alerts on new flyers / small ads on a wall zone.

    Args:
        camera_id: camera id.
        zone: the wall zone (normalised polygon).
        rule: the effective POSTER rule: ``confirm_k/n``, ``clear_seconds``, ``update_interval_seconds``,
            ``cooldown_seconds``, ``severity``; ``min_confidence`` is the DB box score a text line needs.
        detector: the OCR engine (default: a new 1-thread :class:`TextDetector`; share one per worker).
        learn_frames: judged frames whose median is the clean wall.
        min_confirm: lower bound (k, n) for the per-flyer k-of-n confirmation.
        min_changed: share of a text box's pixels that must differ from the reference.
        reread_seconds: how often a confirmed flyer is read again with full OCR.
        change_threshold: per-pixel change threshold (grey levels), see :class:`WallReference`.
        adapt_step: background adaptation step (grey levels per judged frame), see :class:`WallReference`.
    """

    hazard: Hazard = Hazard.POSTER

    def __init__(self, camera_id: str, zone: ZoneConfig, rule: HazardRule, detector: TextDetector | None = None,
                 *, learn_frames: int = 5, min_confirm: tuple[int, int] = (2, 3),
                 min_changed: float = 0.2, reread_seconds: float = 600.0, change_threshold: float = 28.0,
                 adapt_step: float = 1.0) -> None:
        self.camera_id = camera_id
        self.zone = zone
        self.zone_id: str | None = zone.id
        self.rule = rule
        self.detector = detector or TextDetector(threads=1)
        self.reference = WallReference(learn_frames, change_threshold, adapt_step)
        self.detectors: tuple[str, ...] = ()
        """No detector output is read (OCR runs inside the rule)."""
        self.interval_seconds = rule.analysis_interval_seconds
        self.k = max(rule.confirm_k, min_confirm[0])
        self.n = max(rule.confirm_n, min_confirm[1], self.k)
        self.min_changed = float(min_changed)
        self.reread_seconds = float(reread_seconds)
        # Flyers are confirmed here, per flyer; the lifecycle takes the result as is.
        self.lifecycle = IncidentLifecycle(camera_id, zone.id, Hazard.POSTER,
                                           rule.model_copy(update={"confirm_k": 1, "confirm_n": 1}))
        self.flyers: list[_Flyer] = []
        self.last_ts: float | None = None
        self.last_rejects: dict[str, int] = {}
        """Text boxes of the last judged frame that were not candidates, by reason."""
        self._geometry: ZoneGeometry | None = None

    def geometry(self, width: int, height: int) -> ZoneGeometry:
        g = self._geometry
        if g is None or (g.width, g.height) != (width, height):
            g = self._geometry = ZoneGeometry(self.zone, width, height)
            self.reset()
        return g

    def state(self) -> dict[str, object]:
        """Rule internals now (JSON-able): wall learning, tracked flyers with their k-of-n hits, why text
        boxes of the last judged frame were rejected, and the lifecycle."""
        return {
            "ts": self.last_ts,
            "reference": {"ready": self.reference.ready, "learned_frames": len(self.reference._samples),
                          "learn_frames": self.reference.learn_frames,
                          "reference_texts": len(self.reference.text_boxes)},
            "confirm": {"k": self.k, "n": self.n},
            "flyers": [{"box_crop": [round(v, 1) for v in f.box], "first_seen": f.first_seen, "hits": sum(f.hits),
                        "frames": len(f.hits), "confirmed": sum(f.hits) >= self.k, "read_at": f.read_at,
                        "texts": [t.text for t in f.texts]} for f in self.flyers],
            "rejected": dict(self.last_rejects),
            "lifecycle": self.lifecycle.state(),
        }

    def reset(self) -> None:
        """Forget the learned wall (and tracked flyers); the next frames learn it again."""
        self.reference.reset()
        self.flyers = []

    def judge(self, view: FrameView) -> list[Incident]:
        """Judge one frame (its image; nothing without one); returns 0 or 1 incident events."""
        if view.image is None:
            return []
        ts, frame_bgr, width, height = view.ts, view.image, view.width, view.height
        self.last_ts = ts
        g = self.geometry(width, height)
        x1, y1, x2, y2 = g.bbox_px
        crop = frame_bgr[y1:y2, x1:x2]
        zmask = g.mask[y1:y2, x1:x2] > 0
        if not self.reference.ready:
            self.reference.mask = zmask
            if self.reference.add_sample(crop):
                self.reference.text_boxes = self.detector.detect_text(self.reference.background_bgr())
            return []
        changed = self.reference.change_mask(crop)
        candidates = self._candidates(crop, changed, zmask)
        self._track(ts, self._group(candidates, changed))
        frozen = np.zeros(changed.shape, bool)
        for f in self.flyers:
            fx1, fy1, fx2, fy2 = (int(round(v)) for v in f.box)
            frozen[max(0, fy1):fy2, max(0, fx1):fx2] = True
        self.reference.adapt(crop, frozen)
        confirmed = [f for f in self.flyers if sum(f.hits) >= self.k]
        obs = self._observe(ts, crop, confirmed, (x1, y1), g) if confirmed else None
        event = self.lifecycle.step(ts, obs)
        return [event] if event is not None else []

    def _candidates(self, crop: np.ndarray, changed: np.ndarray, zmask: np.ndarray) -> list[TextBox]:
        out = []
        h, w = changed.shape
        rejects = self.last_rejects = {"low_score": 0, "outside_zone": 0, "reference_text": 0, "unchanged": 0}
        for b in self.detector.detect_boxes_only(crop):
            if b.score < self.rule.min_confidence:
                rejects["low_score"] += 1
                continue
            bx1, by1, bx2, by2 = b.xyxy
            cx, cy = int((bx1 + bx2) / 2), int((by1 + by2) / 2)
            if not (0 <= cx < w and 0 <= cy < h and zmask[cy, cx]):
                rejects["outside_zone"] += 1
                continue
            if self.reference.overlaps_text(b.xyxy):
                rejects["reference_text"] += 1
                continue
            region = changed[int(by1):max(int(by1) + 1, int(np.ceil(by2))),
                             int(bx1):max(int(bx1) + 1, int(np.ceil(bx2)))]
            if region.size and float(region.mean()) >= self.min_changed:
                out.append(b)
            else:
                rejects["unchanged"] += 1
        return out

    @staticmethod
    def _group(lines: list[TextBox], changed: np.ndarray) -> list[tuple[Box, list[TextBox]]]:
        """Group text lines of one flyer; grow each group to the changed blob (the paper) around it."""
        groups: list[tuple[Box, list[TextBox]]] = []
        for line in sorted(lines, key=lambda t: t.xyxy[1]):
            lx1, ly1, lx2, ly2 = line.xyxy
            pad = 0.8 * (ly2 - ly1)
            grown = (lx1 - pad, ly1 - pad, lx2 + pad, ly2 + pad)
            for i, (box, members) in enumerate(groups):
                if _iou(grown, box) > 0 or _cover(grown, box) > 0:
                    groups[i] = (_union([box, line.xyxy]), [*members, line])
                    break
            else:
                groups.append((line.xyxy, [line]))
        if not groups:
            return []
        h, w = changed.shape
        closed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
        out = []
        for box, members in groups:
            bx1, by1, bx2, by2 = (int(v) for v in box)
            ids = set(np.unique(labels[max(0, by1):max(by1 + 1, by2), max(0, bx1):max(bx1 + 1, bx2)]))
            parts = [box]
            for i in ids - {0}:
                sx, sy, sw, sh, area = (int(v) for v in stats[i])
                if sw * sh <= 0.5 * w * h and sw <= 4 * (box[2] - box[0]) and sh <= 4 * (box[3] - box[1]):
                    parts.append((float(sx), float(sy), float(sx + sw), float(sy + sh)))
            out.append((_union(parts), members))
        return out

    def _track(self, ts: float, groups: list[tuple[Box, list[TextBox]]]) -> None:
        matched: set[int] = set()
        for box, lines in groups:
            best, best_iou = None, 0.2
            for i, f in enumerate(self.flyers):
                iou = _iou(box, f.box)
                if i not in matched and iou > best_iou:
                    best, best_iou = i, iou
            if best is None:
                f = _Flyer(box, ts, deque(maxlen=self.n))
                self.flyers.append(f)
                best = len(self.flyers) - 1
            f = self.flyers[best]
            f.box, f.lines = box, lines
            f.det_score = max(t.score for t in lines)
            f.hits.append(True)
            matched.add(best)
        for i, f in enumerate(self.flyers):
            if i not in matched:
                f.hits.append(False)
        self.flyers = [f for f in self.flyers if any(f.hits)]

    def _observe(self, ts: float, crop: np.ndarray, flyers: list[_Flyer], offset: tuple[int, int],
                 g: ZoneGeometry) -> Observation:
        ox, oy = offset
        h, w = crop.shape[:2]
        for f in flyers:
            if f.read_at is None or ts - f.read_at + TIME_EPS >= self.reread_seconds:
                bx1, by1, bx2, by2 = f.box
                pad = 0.1 * max(bx2 - bx1, by2 - by1)
                region = (max(0.0, bx1 - pad), max(0.0, by1 - pad), min(float(w), bx2 + pad),
                          min(float(h), by2 + pad))
                texts = self.detector.detect_text(crop, region)
                if texts or f.read_at is None:
                    f.texts, f.read_at = texts, ts
        texts = [t for f in flyers for t in f.texts]
        findings = analyze_text([t.text for t in texts])
        boxes = tuple(normalised_box((f.box[0] + ox, f.box[1] + oy, f.box[2] + ox, f.box[3] + oy),
                                     g.width, g.height, "poster", f.det_score) for f in flyers)
        zone_area = max(1.0, float(np.count_nonzero(g.mask)))
        area = sum((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in flyers)
        details: dict[str, object] = {
            "flyers": len(flyers),
            "texts": [t.text for t in texts],
            **findings.to_details(),
            "area_share": round(min(1.0, area / zone_area), 4),
        }
        conf = max([t.score for t in texts] or [f.det_score for f in flyers])
        return Observation(started_at=min(f.first_seen for f in flyers), confidence=float(conf),
                           boxes=boxes, details=details)
