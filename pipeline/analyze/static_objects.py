"""Model-free static-object (left object) detector: dual background, blobs sized in pixels, ghost test.

The model-free path of :class:`~pipeline.analyze.clutter.ClutterRule`. It finds things that were not
there when the zone was learned and now stand still, whatever they are (a bag, a box, a pile of boards),
and tells them apart from *removals* (something that was there is gone: the revealed floor differs from
the background just as much).

Method (per analysed frame, on the zone's bounding crop scaled so the *frame* is ``work_width`` px wide,
so an object has the same size in working pixels whatever the size of the zone):

1. **Dual background** (Porikli et al., "Robust abandoned object detection using dual foregrounds",
   2008): a long-term background (person-masked median of the first ``learn_frames`` frames, then an
   exponential average with weight ``alpha_long`` updated only where nothing differs, nothing moves and
   no person is) and a short-term background (exponential average, weight ``alpha_short``, everywhere).
   A pixel that differs from the long-term model (after global gain compensation) but not from the
   short-term one is *static foreground*; one that differs from both is moving.
2. **Timers in float64 Unix seconds.** A static pixel's timer starts when its current run of change
   began (at most ``settle_frames`` frames back: the frames the short-term model needs to take in a step,
   so the timer starts when the object appeared, not when the model settled). It survives a person or a
   passer-by in front of it for ``hold_seconds`` and the background showing through for
   ``grace_seconds`` (noise).
3. **Blobs in pixels**: connected static (or occluded, timer running) pixels of at least
   ``min_object_px`` working pixels; the blob's age is the median age of its pixels.
4. **Ghost test** (after Connell et al., "Detection and tracking in the IBM PeopleVision system", 2004:
   an object's boundary is an edge in the image that contains it). For each blob compare (a) the
   gradient energy along its contour and (b) the colour contrast between its inside and the unchanged
   ring around it, in the current frame against the long-term background. A left object brings its
   edges and contrast with it (current > background); where something was removed the background holds
   them and the current frame shows plain floor continuing into the ring (current < background). The
   *object score* is the mean of ``cur / (cur + bg)`` over (a) and (b): above 0.5 an object. A blob that
   scores as a removal on ``ghost_confirm_frames`` analysed frames is healed: the current frame is
   copied into both backgrounds there and its timers are cleared, so a removal never ages into an
   alert.

Example:
    >>> det = StaticObjectDetector(work_width=40, learn_frames=2, min_object_px=20)
    >>> floor = np.full((40, 40, 3), 120, np.uint8); bag = floor.copy(); bag[10:30, 10:30] = 20
    >>> no = np.zeros((40, 40), bool)
    >>> [det.update(t, floor, no).learning for t in (1.8e9, 1.8e9 + 1)]   # the empty zone, learned
    [True, True]
    >>> scene = [det.update(1.8e9 + t, bag, no) for t in range(2, 9)][-1]
    >>> [(b.age, b.is_object) for b in scene.blobs]   # appeared at +2 s, now +8 s
    [(6.0, True)]
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.analyze.rules import TIME_EPS
from pipeline.analyze.tracking import iou_matrix

Box = tuple[float, float, float, float]
_K3 = np.ones((3, 3), np.uint8)
_K7 = np.ones((7, 7), np.uint8)


@dataclass(frozen=True)
class StaticBlob:
    """One static-foreground blob.

    Attributes:
        box: (x1, y1, x2, y2) in pixels of the crop given to :meth:`StaticObjectDetector.update`.
        area_px: area in working pixels.
        since: Unix seconds since when it has stood there (median over its pixels).
        age: seconds it has stood there.
        object_score: 0..1; above 0.5 it is an object, below a removal (ghost).
        edge_score: the contour-gradient part of ``object_score``.
        contrast_score: the inside/ring colour-contrast part of ``object_score``.
        mask: bool, working resolution: the blob's pixels.
    """

    box: Box
    area_px: int
    since: float
    age: float
    object_score: float
    edge_score: float
    contrast_score: float
    mask: np.ndarray = field(repr=False, compare=False)

    @property
    def is_object(self) -> bool:
        return self.object_score > 0.5


@dataclass(frozen=True)
class StaticScene:
    """What :meth:`StaticObjectDetector.update` saw on one frame.

    Attributes:
        blobs: static blobs that score as objects (a blob scoring as a removal is never listed; it is
            healed after ``ghost_confirm_frames``).
        removals: boxes (crop pixels) healed as removals on this frame.
        learning: True while the empty zone is still being learned.
        scale: working pixels per crop pixel.
    """

    blobs: tuple[StaticBlob, ...] = ()
    removals: tuple[Box, ...] = ()
    learning: bool = False
    scale: float = 1.0


class StaticObjectDetector:
    """Static-object detector of one zone crop (see the module docstring for the method).

    Args:
        work_width: the *frame* is scaled to this width (px) for the working images (never up-scaled).
        learn_frames: frames whose person-masked median is the empty zone.
        threshold: per-pixel difference (grey levels, max over channels) that counts as changed.
        alpha_long: per-frame weight of the current frame in the long-term background (where quiet).
        alpha_short: per-frame weight of the current frame in the short-term background.
        settle_frames: how many frames back a static pixel's timer may start (the run of change before
            the short-term model took the object in).
        grace_seconds: a static pixel that shows the background again keeps its timer this long.
        hold_seconds: a static pixel hidden by a person or by something moving in front keeps its timer
            this long.
        min_object_px: smallest blob, in working pixels (at the default 320 px frame width, 40 px is a
            ~13x13 px object on a 640 px wide frame).
        ghost_confirm_frames: analysed frames a blob must score as a removal before it is healed.
    """

    def __init__(self, work_width: int = 320, learn_frames: int = 5, threshold: float = 30.0,
                 alpha_long: float = 0.05, alpha_short: float = 0.5, settle_frames: int = 4,
                 grace_seconds: float = 3.0, hold_seconds: float = 60.0, min_object_px: int = 40,
                 ghost_confirm_frames: int = 2) -> None:
        if work_width < 8 or learn_frames < 1 or min_object_px < 1 or settle_frames < 1:
            raise ValueError("work_width >= 8, learn_frames >= 1, settle_frames >= 1, min_object_px >= 1")
        self.work_width = int(work_width)
        self.learn_frames = int(learn_frames)
        self.threshold = float(threshold)
        self.alpha_long = float(alpha_long)
        self.alpha_short = float(alpha_short)
        self.settle_frames = int(settle_frames)
        self.grace_seconds = float(grace_seconds)
        self.hold_seconds = float(hold_seconds)
        self.min_object_px = int(min_object_px)
        self.ghost_confirm_frames = int(ghost_confirm_frames)
        self.removals_healed = 0
        """Removals (ghosts) healed since creation (a counter for metrics and the debug view)."""
        self.reset()

    @property
    def ready(self) -> bool:
        """True once the empty zone is learned."""
        return self.long_bg is not None

    def reset(self) -> None:
        """Forget the learned zone (it is learned again from the next frames)."""
        self.long_bg: np.ndarray | None = None
        self.short_bg: np.ndarray | None = None
        self.since: np.ndarray | None = None
        """float64 Unix seconds since when each pixel is static (NaN: it is not)."""
        self.run_start: np.ndarray | None = None
        self.last_static: np.ndarray | None = None
        self.ghost_votes: np.ndarray | None = None
        self.static_mask: np.ndarray | None = None
        """bool: static foreground of the last frame (working resolution)."""
        self._samples: list[np.ndarray] = []
        self._recent_ts: deque[float] = deque(maxlen=self.settle_frames)

    def state(self) -> dict[str, object]:
        """JSON-able internals for replay and the debug view."""
        return {
            "ready": self.ready,
            "learned_frames": self.learn_frames if self.ready else len(self._samples),
            "static_px": int(np.count_nonzero(self.static_mask)) if self.static_mask is not None else 0,
            "removals_healed": self.removals_healed,
        }

    def scale_for(self, crop_shape: tuple[int, ...], frame_width: int | None) -> float:
        """Working pixels per crop pixel for a crop of a frame ``frame_width`` wide (default: the crop)."""
        width = frame_width or crop_shape[1]
        return min(1.0, self.work_width / max(1, width))

    def prepare(self, crop_bgr: np.ndarray, scale: float) -> np.ndarray:
        """Scale and blur a crop into the float32 working image."""
        h, w = crop_bgr.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(crop_bgr, size, interpolation=cv2.INTER_AREA) if size != (w, h) else crop_bgr
        out: np.ndarray = cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)
        return out

    def update(self, ts: float, crop_bgr: np.ndarray, hidden: np.ndarray,
               frame_width: int | None = None) -> StaticScene:
        """Feed one crop (BGR) with ``hidden`` (bool, crop size: person pixels); see the module docstring."""
        ts = float(ts)
        scale = self.scale_for(crop_bgr.shape, frame_width)
        cur = self.prepare(crop_bgr, scale)
        hid = cv2.resize(hidden.astype(np.uint8), (cur.shape[1], cur.shape[0]),
                         interpolation=cv2.INTER_NEAREST).astype(bool)
        if self.long_bg is not None and self.long_bg.shape != cur.shape:
            self.reset()
        if self.long_bg is None:
            self._learn(cur, hid)
            return StaticScene(learning=True, scale=scale)
        assert self.short_bg is not None and self.since is not None and self.run_start is not None
        assert self.last_static is not None and self.ghost_votes is not None
        visible = ~hid
        sel = visible if visible.any() else np.ones(hid.shape, bool)
        gains = [float(np.median(self.long_bg[:, :, c][sel])) / max(1.0, float(np.median(cur[:, :, c][sel])))
                 for c in range(3)]
        comp = cur * np.clip(np.array(gains, np.float32), 0.5, 2.0)
        changed = np.abs(comp - self.long_bg).max(axis=2) > self.threshold
        moving = np.abs(cur - self.short_bg).max(axis=2) > self.threshold
        static = changed & ~moving & visible
        self.static_mask = static
        self._recent_ts.append(ts)
        self.run_start[~changed & visible] = np.nan
        self.run_start[changed & visible & np.isnan(self.run_start)] = ts
        first = static & np.isnan(self.since)
        self.since[first] = np.fmax(self.run_start[first], self._recent_ts[0])
        self.last_static[static] = ts
        held = hid | (changed & moving)  # a person or a passer-by in front: keep the timer
        gone = ts - self.last_static
        expired = ~static & ((held & (gone > self.hold_seconds + TIME_EPS))
                             | (~held & (gone > self.grace_seconds + TIME_EPS)))
        self.since[expired] = np.nan
        self.ghost_votes[~changed & visible] = 0
        alive = ~np.isnan(self.since) & (static | held)
        blobs, removals = self._blobs(ts, alive, static, changed, visible, comp, cur, scale)
        quiet = ~changed & ~moving & visible
        self.long_bg[quiet] += self.alpha_long * (comp[quiet] - self.long_bg[quiet])
        self.short_bg += self.alpha_short * (cur - self.short_bg)
        return StaticScene(blobs=tuple(blobs), removals=tuple(removals), scale=scale)

    def _learn(self, cur: np.ndarray, hid: np.ndarray) -> None:
        masked = cur.copy()
        masked[hid] = np.nan
        self._samples.append(masked)
        if len(self._samples) < self.learn_frames:
            return
        stack = np.stack(self._samples)
        never_seen = np.isnan(stack).all(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: filled below
            bg = np.nanmedian(stack, axis=0)
        bg[never_seen] = np.median(np.nan_to_num(stack, nan=0.0), axis=0)[never_seen]
        shape = cur.shape[:2]
        self.long_bg = bg.astype(np.float32)
        self.short_bg = cur.copy()
        self.since = np.full(shape, np.nan, np.float64)  # float64: Unix seconds (float32: 128 s steps)
        self.run_start = np.full(shape, np.nan, np.float64)
        self.last_static = np.full(shape, -np.inf, np.float64)
        self.ghost_votes = np.zeros(shape, np.uint8)
        self._samples = []

    def _blobs(self, ts: float, alive: np.ndarray, static: np.ndarray, changed: np.ndarray, visible: np.ndarray,
               comp: np.ndarray, cur: np.ndarray, scale: float) -> tuple[list[StaticBlob], list[Box]]:
        assert self.long_bg is not None and self.since is not None and self.ghost_votes is not None
        mask = cv2.morphologyEx(alive.astype(np.uint8), cv2.MORPH_OPEN, _K3)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return [], []
        grad_cur = _gradient(comp)
        grad_bg = _gradient(self.long_bg)
        blobs: list[StaticBlob] = []
        removals: list[Box] = []
        for i in range(1, n):
            bx, by, bw, bh, area = (int(v) for v in stats[i])
            if area < self.min_object_px:
                continue
            # work on a window around the blob (the ring reaches 3 px out)
            x0, y0 = max(0, bx - 4), max(0, by - 4)
            x1, y1 = min(mask.shape[1], bx + bw + 4), min(mask.shape[0], by + bh + 4)
            win = np.s_[y0:y1, x0:x1]
            blob = labels[win] == i
            edge, contrast = _scores(blob, changed[win], visible[win], comp[win], self.long_bg[win],
                                     grad_cur[win], grad_bg[win])
            score = 0.5 * (edge + contrast)
            box = (bx / scale, by / scale, (bx + bw) / scale, (by + bh) / scale)
            judged = blob & static[win]
            votes = self.ghost_votes[win]
            if np.count_nonzero(judged) * 2 >= self.min_object_px:
                if score > 0.5:
                    votes[blob] = 0
                else:
                    votes[blob] = np.minimum(votes[blob], 254) + 1
            if score <= 0.5:
                if np.median(votes[blob]) >= self.ghost_confirm_frames:
                    self._heal(win, blob, comp, cur)
                    removals.append(box)
                continue  # not (yet) an object
            ages = ts - self.since[win][blob]
            ages = ages[~np.isnan(ages)]
            age = float(np.median(ages)) if ages.size else 0.0
            full = np.zeros(mask.shape, bool)
            full[win] = blob
            blobs.append(StaticBlob(box=box, area_px=area, since=ts - age, age=age, object_score=score,
                                    edge_score=edge, contrast_score=contrast, mask=full))
        return blobs, removals

    def _heal(self, win: tuple[slice, slice], blob: np.ndarray, comp: np.ndarray, cur: np.ndarray) -> None:
        """A removal: the current frame becomes the background there; its timers are cleared."""
        assert self.long_bg is not None and self.short_bg is not None and self.since is not None
        assert self.run_start is not None and self.ghost_votes is not None
        region = cv2.dilate(blob.astype(np.uint8), _K3, iterations=2).astype(bool)
        self.long_bg[win][region] = comp[win][region]
        self.short_bg[win][region] = cur[win][region]
        self.since[win][region] = np.nan
        self.run_start[win][region] = np.nan
        self.ghost_votes[win][region] = 0
        self.removals_healed += 1


def _gradient(img: np.ndarray) -> np.ndarray:
    grey = img.mean(axis=2).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    out: np.ndarray = cv2.magnitude(gx, gy)
    return out


def _share(cur: float, bg: float) -> float:
    """cur / (cur + bg), 0.5 when both are ~0 (no evidence either way)."""
    total = cur + bg
    return 0.5 if total < 1e-3 else cur / total


def _scores(blob: np.ndarray, changed: np.ndarray, visible: np.ndarray, comp: np.ndarray, bg: np.ndarray,
            grad_cur: np.ndarray, grad_bg: np.ndarray) -> tuple[float, float]:
    """(edge, contrast) object scores of one blob (window arrays): > 0.5 the current frame holds it."""
    b8 = blob.astype(np.uint8)
    grown = cv2.dilate(b8, _K3).astype(bool)
    band = grown & ~cv2.erode(b8, _K3).astype(bool) & visible
    edge = _share(float(grad_cur[band].mean()), float(grad_bg[band].mean())) if band.any() else 0.5
    ring = cv2.dilate(b8, _K7).astype(bool) & ~grown & ~changed & visible
    inside = blob & visible
    if not ring.any() or not inside.any():
        return edge, 0.5
    c_cur = float(np.linalg.norm(comp[inside].mean(axis=0) - comp[ring].mean(axis=0)))
    c_bg = float(np.linalg.norm(bg[inside].mean(axis=0) - bg[ring].mean(axis=0)))
    return edge, _share(c_cur, c_bg)


class FurnitureMemory:
    """Detector boxes that stood in the zone while its background was learned (cabinets, bins, a table).

    Such a box is scene furniture: it was there before anything was left, so it can never explain a new
    static blob (a bag set down in front of a cabinet that the clutter model reads as a ``bin``).

    Args:
        match_iou: a box is the same furniture as a learned one at this IoU or more.
        min_frames: learning frames a box must be seen on to count (a car driving through does not);
            capped at the number of learning frames seen.

    Example:
        >>> mem = FurnitureMemory()
        >>> mem.learn(np.array([[10, 10, 50, 90]])); mem.learn(np.array([[11, 10, 51, 91], [200, 0, 260, 40]]))
        >>> mem.is_furniture(np.array([[12, 11, 50, 90], [200, 0, 260, 40]])).tolist()
        [True, False]
    """

    def __init__(self, match_iou: float = 0.5, min_frames: int = 2) -> None:
        self.match_iou = float(match_iou)
        self.min_frames = int(min_frames)
        self.reset()

    def reset(self) -> None:
        self._boxes = np.zeros((0, 4))
        self._counts = np.zeros(0, np.int64)
        self._frames = 0

    def learn(self, xyxy: np.ndarray) -> None:
        """Record the (non-person) detector boxes of one learning frame."""
        self._frames += 1
        seen = np.zeros(len(self._boxes), bool)
        for box in np.asarray(xyxy, np.float64).reshape(-1, 4):
            ious = iou_matrix(box[None], self._boxes)[0] if len(self._boxes) else np.zeros(0)
            ious[seen] = 0.0  # one match per learned box per frame
            j = int(np.argmax(ious)) if ious.size else -1
            if j >= 0 and ious[j] >= self.match_iou:
                seen[j] = True
                self._counts[j] += 1
            else:
                self._boxes = np.vstack([self._boxes, box[None]])
                self._counts = np.append(self._counts, 1)
                seen = np.append(seen, True)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) the furniture boxes (pixels)."""
        out: np.ndarray = self._boxes[self._counts >= max(1, min(self.min_frames, self._frames))]
        return out

    def is_furniture(self, xyxy: np.ndarray) -> np.ndarray:
        """bool per box of ``xyxy`` (N, 4): it is a learned furniture box."""
        xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
        furniture = self.boxes
        if not len(xyxy) or not len(furniture):
            return np.zeros(len(xyxy), bool)
        out: np.ndarray = iou_matrix(xyxy, furniture).max(axis=1) >= self.match_iou
        return out
