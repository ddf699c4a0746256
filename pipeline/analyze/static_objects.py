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
   ``grace_seconds`` (noise). A pixel counts as changed only when it lies outside the range of the
   background in its ``jitter_px`` neighbourhood (camera shake moves edges by a pixel or two).
3. **Blobs in pixels**: connected static (or occluded, timer running) pixels of at least
   ``min_object_px`` working pixels; the blob's age is the median over its pixels of the time since
   each joined an object blob (a patch of flicker below the size does not pass its age on).
4. **Ghost test** (after Connell et al., "Detection and tracking in the IBM PeopleVision system", 2004:
   an object's boundary is an edge in the image that contains it). For each blob compare, in the current
   frame against the long-term background, (a) the colour gradient energy on its contour band and (b)
   the contrast *across* the contour (each pixel just inside against the unchanged pixels just outside
   it, which are the same in both images). A left object brings its outline with it (current >
   background); where something was taken away the background holds the outline and the current frame
   shows the floor running on into its surroundings (current < background). The *object score* is the
   mean of ``cur / (cur + bg)`` over (a) and (b). At most ``removal_score`` it is a removal: after
   ``ghost_confirm_frames`` such analysed frames the current frame is copied into both backgrounds
   there and the timers are cleared, so a removal never ages into an alert. Measured on the shared
   clips (docs/detectors.md): removals score 0.01-0.27, left objects 0.54-0.75 on open floor and
   0.37-0.5 in front of a salient fixture, hence ``removal_score`` 0.35, not 0.5.

Example:
    >>> det = StaticObjectDetector(work_width=40, learn_frames=2, min_object_px=20)
    >>> floor = np.full((40, 40, 3), 120, np.uint8); bag = floor.copy(); bag[10:30, 10:30] = 20
    >>> no = np.zeros((40, 40), bool)
    >>> [det.update(t, floor, no).learning for t in (1.8e9, 1.8e9 + 1)]   # the empty zone, learned
    [True, True]
    >>> scene = [det.update(1.8e9 + t, bag, no) for t in range(2, 9)][-1]
    >>> [(b.age, b.object_score > det.removal_score) for b in scene.blobs]   # appeared at +2 s, now +8 s
    [(6.0, True)]
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from pipeline.analyze.rules import TIME_EPS

Box = tuple[float, float, float, float]
_K3 = np.ones((3, 3), np.uint8)
_K5 = np.ones((5, 5), np.uint8)


@dataclass(frozen=True)
class StaticBlob:
    """One static-foreground blob.

    Attributes:
        box: (x1, y1, x2, y2) in pixels of the crop given to :meth:`StaticObjectDetector.update`.
        area_px: area in working pixels.
        since: Unix seconds since when it has stood there (median over its pixels).
        age: seconds it has stood there.
        object_score: 0..1: ~1 the current frame holds the blob's outline (an object), ~0 the background
            does (a removal); the mean of ``edge_score`` and ``contrast_score``.
        edge_score: share of the gradient energy on the blob's contour that the current frame has.
        contrast_score: share of the contrast across the contour (just inside vs just outside) that the
            current frame has.
        latched: it was judged an object on a quiet frame (the scores above may now be blind: a person in
            front of it).
        mask: bool, working resolution: the blob's pixels.
    """

    box: Box
    area_px: int
    since: float
    age: float
    object_score: float
    edge_score: float
    contrast_score: float
    latched: bool = False
    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool), repr=False, compare=False)



class _Masks(NamedTuple):
    """Per-pixel masks of one frame (working resolution)."""

    static: np.ndarray
    changed: np.ndarray
    disturbed: np.ndarray
    """moving or hidden by a person."""
    visible: np.ndarray


@dataclass(frozen=True)
class StaticScene:
    """What :meth:`StaticObjectDetector.update` saw on one frame.

    Attributes:
        blobs: static blobs that score as objects (a blob scoring as a removal is never listed; it is
            healed after ``ghost_confirm_frames``).
        removals: blobs healed as removals (ghosts) on this frame.
        learning: True while the empty zone is still being learned.
        scale: working pixels per crop pixel.
    """

    blobs: tuple[StaticBlob, ...] = ()
    removals: tuple[StaticBlob, ...] = ()
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
        removal_score: a blob whose object score is at most this is a removal (ghost); above, an object.
            Below 0.5 on purpose: only clear evidence of a removal may heal a blob (a bag set down in front
            of a salient fixture scores about 0.4).
        jitter_px: camera shake tolerated, in working pixels: a pixel is changed only when it lies outside
            the range of the long-term background in its neighbourhood of this radius.
    """

    def __init__(self, work_width: int = 320, learn_frames: int = 5, threshold: float = 30.0,
                 alpha_long: float = 0.05, alpha_short: float = 0.5, settle_frames: int = 4,
                 grace_seconds: float = 3.0, hold_seconds: float = 60.0, min_object_px: int = 40,
                 ghost_confirm_frames: int = 2, removal_score: float = 0.35, jitter_px: int = 1) -> None:
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
        self.jitter_px = int(jitter_px)
        self.removal_score = float(removal_score)
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
        self.blob_since: np.ndarray | None = None
        """float64 Unix seconds since when each pixel belongs to an object blob (see :meth:`_blob_since`)."""
        self.last_static: np.ndarray | None = None
        self.ghost_votes: np.ndarray | None = None
        self.latched: np.ndarray | None = None
        """bool: pixels of a blob judged an object on a quiet frame (never healed while their timer runs)."""
        self.static_mask: np.ndarray | None = None
        """bool: static foreground of the last frame (working resolution)."""
        self.last_scene = StaticScene(learning=True)
        """What the last :meth:`update` saw."""
        self._samples: list[np.ndarray] = []
        self._recent_ts: deque[float] = deque(maxlen=2 * self.settle_frames + 1)

    def state(self) -> dict[str, object]:
        """JSON-able internals for replay and the debug view."""
        return {
            "ready": self.ready,
            "learned_frames": self.learn_frames if self.ready else len(self._samples),
            "static_px": int(np.count_nonzero(self.static_mask)) if self.static_mask is not None else 0,
            "removals_healed": self.removals_healed,
            "blobs": [{"box": [round(v, 1) for v in b.box], "px": b.area_px, "age_s": round(b.age, 1),
                       "object_score": round(b.object_score, 3)} for b in self.last_scene.blobs],
            "removals": [{"box": [round(v, 1) for v in b.box], "object_score": round(b.object_score, 3)}
                         for b in self.last_scene.removals],
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
            self.last_scene = StaticScene(learning=True, scale=scale)
            return self.last_scene
        assert self.short_bg is not None and self.since is not None and self.run_start is not None
        assert self.last_static is not None and self.ghost_votes is not None and self.blob_since is not None
        assert self.latched is not None
        visible = ~hid
        sel = visible if visible.any() else np.ones(hid.shape, bool)
        gains = [float(np.median(self.long_bg[:, :, c][sel])) / max(1.0, float(np.median(cur[:, :, c][sel])))
                 for c in range(3)]
        comp = cur * np.clip(np.array(gains, np.float32), 0.5, 2.0)
        changed = self._off_background(comp) > self.threshold
        moving = np.abs(cur - self.short_bg).max(axis=2) > self.threshold
        static = changed & ~moving & visible
        self.static_mask = static
        self._recent_ts.append(ts)
        self.run_start[~changed & visible] = np.nan
        self.run_start[changed & visible & np.isnan(self.run_start)] = ts
        first = static & np.isnan(self.since)
        self.since[first] = np.fmax(self.run_start[first], self._ts_back(self.settle_frames))
        self.last_static[static] = ts
        held = hid | (changed & moving)  # a person or a passer-by in front: keep the timer
        gone = ts - self.last_static
        expired = ~static & ((held & (gone > self.hold_seconds + TIME_EPS))
                             | (~held & (gone > self.grace_seconds + TIME_EPS)))
        self.since[expired] = np.nan
        self.blob_since[np.isnan(self.since)] = np.nan
        self.latched[np.isnan(self.since)] = False
        self.ghost_votes[~changed & visible] = 0
        alive = ~np.isnan(self.since) & (static | held)
        blobs, removals = self._blobs(ts, alive, _Masks(static, changed, moving | hid, visible), comp, cur, scale)
        quiet = ~changed & ~moving & visible
        self.long_bg[quiet] += self.alpha_long * (comp[quiet] - self.long_bg[quiet])
        self.short_bg += self.alpha_short * (cur - self.short_bg)
        self.last_scene = StaticScene(blobs=tuple(blobs), removals=tuple(removals), scale=scale)
        return self.last_scene

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
        self.blob_since = np.full(shape, np.nan, np.float64)
        self.last_static = np.full(shape, -np.inf, np.float64)
        self.ghost_votes = np.zeros(shape, np.uint8)
        self.latched = np.zeros(shape, bool)
        self._samples = []

    def _blobs(self, ts: float, alive: np.ndarray, m: _Masks, comp: np.ndarray, cur: np.ndarray,
               scale: float) -> tuple[list[StaticBlob], list[StaticBlob]]:
        assert self.long_bg is not None and self.ghost_votes is not None and self.latched is not None
        mask = cv2.morphologyEx(alive.astype(np.uint8), cv2.MORPH_OPEN, _K3)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return [], []
        grad_cur, grad_bg = _gradient(comp), _gradient(self.long_bg)
        blobs: list[StaticBlob] = []
        removals: list[StaticBlob] = []
        for i in range(1, n):
            bx, by, bw, bh, area = (int(v) for v in stats[i])
            if area < self.min_object_px:
                continue
            # a window around the blob (its contour bands reach 3 px out)
            x0, y0 = max(0, bx - 4), max(0, by - 4)
            x1, y1 = min(mask.shape[1], bx + bw + 4), min(mask.shape[0], by + bh + 4)
            win = np.s_[y0:y1, x0:x1]
            blob = labels[win] == i
            edge = _band_share(blob, m.visible[win], grad_cur[win], grad_bg[win], _K3)
            contrast = _contour_contrast(blob, m.changed[win] | ~m.visible[win], comp[win], self.long_bg[win])
            score = 0.5 * (edge + contrast)
            box = (bx / scale, by / scale, (bx + bw) / scale, (by + bh) / scale)
            removal = score <= self.removal_score
            votes, latched = self.ghost_votes[win], self.latched[win]
            is_latched = bool(np.count_nonzero(latched[blob]) * 2 >= np.count_nonzero(blob))
            ring = cv2.dilate(blob.astype(np.uint8), _K5).astype(bool) & ~blob
            quiet = (np.count_nonzero(m.disturbed[win][ring]) <= 0.1 * np.count_nonzero(ring)
                     and np.count_nonzero(m.static[win][blob]) >= 0.9 * np.count_nonzero(blob))
            if not is_latched and not _contour_in_view(blob, m.visible[win]):
                continue  # no evidence either way (a person stands in front): neither listed nor healed
            if quiet:  # only a frame with the whole contour in view and nothing moving next to it votes
                if not removal:
                    votes[blob] = 0
                    latched[blob] = True
                    is_latched = True
                elif not is_latched:
                    votes[blob] = np.minimum(votes[blob], 254) + 1
            if removal and not is_latched:
                if np.median(votes[blob]) >= self.ghost_confirm_frames:
                    removals.append(self._blob(ts, win, blob, box, area, (score, edge, contrast), False, mask.shape))
                    self._heal(win, blob, comp, cur)
                continue  # not (yet) an object
            blobs.append(self._blob(ts, win, blob, box, area, (score, edge, contrast), is_latched, mask.shape))
        return blobs, removals

    def _blob(self, ts: float, win: tuple[slice, slice], blob: np.ndarray, box: Box, area: int,
              scores: tuple[float, float, float], latched: bool, shape: tuple[int, ...]) -> StaticBlob:
        ages = ts - self._blob_since(ts, win, blob)
        age = float(np.median(ages)) if ages.size else 0.0
        full = np.zeros(shape, bool)
        full[win] = blob
        return StaticBlob(box=box, area_px=area, since=ts - age, age=age, object_score=scores[0],
                          edge_score=scores[1], contrast_score=scores[2], latched=latched, mask=full)

    def _ts_back(self, frames: int) -> float:
        """Timestamp of the analysed frame ``frames`` frames back (the oldest one remembered if fewer)."""
        return self._recent_ts[max(0, len(self._recent_ts) - 1 - frames)]

    def _off_background(self, comp: np.ndarray) -> np.ndarray:
        """Per pixel: how far (grey levels, max over channels) ``comp`` lies outside the range of the
        long-term background in the pixel's ``jitter_px`` neighbourhood (a shaking camera moves edges by
        a pixel or two; a new object lies outside the local range of what was there)."""
        assert self.long_bg is not None
        if self.jitter_px <= 0:
            out: np.ndarray = np.abs(comp - self.long_bg).max(axis=2)
            return out
        k = np.ones((2 * self.jitter_px + 1, 2 * self.jitter_px + 1), np.uint8)
        lo, hi = cv2.erode(self.long_bg, k), cv2.dilate(self.long_bg, k)
        out = np.maximum(lo - comp, comp - hi).clip(0).max(axis=2)
        return out

    def _blob_since(self, ts: float, win: tuple[slice, slice], blob: np.ndarray) -> np.ndarray:
        """Since when each pixel of an object blob belongs to one, set the first time it does: its static
        timer if that began within the last ``2 * settle_frames`` frames (a new object), else now (a patch of
        flicker that was static on and off below ``min_object_px`` does not pass its age on to a blob it
        grows into)."""
        assert self.since is not None and self.blob_since is not None
        since, blob_since = self.since[win], self.blob_since[win]
        new = blob & np.isnan(blob_since) & ~np.isnan(since)
        fresh = since >= self._ts_back(2 * self.settle_frames) - TIME_EPS
        blob_since[new] = np.where(fresh[new], since[new], ts)
        out: np.ndarray = blob_since[blob]
        kept: np.ndarray = out[~np.isnan(out)]
        return kept

    def _heal(self, win: tuple[slice, slice], blob: np.ndarray, comp: np.ndarray, cur: np.ndarray) -> None:
        """A removal: the current frame becomes the background there; its timers are cleared."""
        assert self.long_bg is not None and self.short_bg is not None and self.since is not None
        assert self.run_start is not None and self.ghost_votes is not None and self.blob_since is not None
        assert self.latched is not None
        region = cv2.dilate(blob.astype(np.uint8), _K3, iterations=2).astype(bool)
        self.long_bg[win][region] = comp[win][region]
        self.short_bg[win][region] = cur[win][region]
        self.since[win][region] = np.nan
        self.blob_since[win][region] = np.nan
        self.run_start[win][region] = np.nan
        self.ghost_votes[win][region] = 0
        self.latched[win][region] = False
        self.removals_healed += 1


def _gradient(img: np.ndarray) -> np.ndarray:
    """Colour gradient magnitude (max over channels of the Sobel magnitude)."""
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    out: np.ndarray = np.sqrt(gx * gx + gy * gy).max(axis=2)
    return out


def _share(cur: float, bg: float) -> float:
    """cur / (cur + bg), 0.5 when both are ~0 (no evidence either way)."""
    total = cur + bg
    return 0.5 if total < 1e-3 else cur / total


def _band_share(blob: np.ndarray, visible: np.ndarray, grad_cur: np.ndarray, grad_bg: np.ndarray,
                kernel: np.ndarray) -> float:
    """Share of the gradient energy on the blob's contour band (``kernel`` wide) that the current frame has."""
    b8 = blob.astype(np.uint8)
    band = cv2.dilate(b8, kernel).astype(bool) & ~cv2.erode(b8, kernel).astype(bool) & visible
    if not band.any():
        return 0.5
    return _share(float(grad_cur[band].mean()), float(grad_bg[band].mean()))


def _contour_in_view(blob: np.ndarray, visible: np.ndarray) -> bool:
    """At least half of the blob's contour band is visible (not behind a person box)."""
    b8 = blob.astype(np.uint8)
    band = cv2.dilate(b8, _K3).astype(bool) & ~cv2.erode(b8, _K3).astype(bool)
    return bool(np.count_nonzero(band & visible) * 2 >= np.count_nonzero(band))


def _contour_contrast(blob: np.ndarray, excluded: np.ndarray, comp: np.ndarray, bg: np.ndarray) -> float:
    """Share of the contrast across the blob's contour that the current frame has.

    Each pixel just inside the contour (2 px) is compared with the mean of the unchanged pixels just
    outside it (2 px, within 3 px): in the current frame and in the background. Only the change *across*
    the contour counts (texture running along it does not), and the outside is the same in both images.
    """
    b8 = blob.astype(np.uint8)
    inner = blob & ~cv2.erode(b8, _K5).astype(bool)
    outer = (cv2.dilate(b8, _K5).astype(bool) & ~blob & ~excluded).astype(np.float32)
    weight = cv2.boxFilter(outer, -1, (7, 7), normalize=False)
    near = inner & (weight > 0)
    if not near.any():
        return 0.5
    local = cv2.boxFilter(comp * outer[:, :, None], -1, (7, 7), normalize=False)[near] / weight[near][:, None]
    d_cur = float(np.abs(comp[near] - local).max(axis=1).mean())
    d_bg = float(np.abs(bg[near] - local).max(axis=1).mean())
    return _share(d_cur, d_bg)
