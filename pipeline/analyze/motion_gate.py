"""Motion-gated detection: a camera's detectors skip frames in which nothing changed in their zones.

Most frames of a town's cameras are the same as the last analysed one. Per detector the gate keeps the
small grey picture (``work_width`` px wide, e.g. 64x36 for 1080p) of the frame that detector last ran on
and its output. On the next frame it compares the zones that detector serves (the zones of the rules and
occupancy counters that read it; a whole-frame rule: the whole frame): when no zone has at least
``min_changed_cells`` (and ``min_changed_fraction`` of its cells) differing by more than
``pixel_threshold`` grey levels, the detector is skipped and its last output is handed to the rules again,
marked carried (``FrameView.carried``). Rules still judge every frame with the image, so dwell timers
(parking, clutter) keep running on a still scene; a full re-check runs at least every ``recheck_seconds`` (on
the first frame after that, once the detector has been skipped at least once since it last ran).
The detectors of ``fire`` rules are never gated (flames change every frame, and a missed fire costs most).

The analyzer calls :meth:`MotionGate.decide` where detection is requested
(:meth:`~pipeline.analyze.analyzer.CameraAnalyzer.frame_requests`) and :meth:`MotionGate.merge` when the
detections come back (:meth:`~pipeline.analyze.analyzer.CameraAnalyzer.analyze`).

Example:
    >>> import numpy as np
    >>> from pipeline.analyze.analyzer import DetectRequest
    >>> from pipeline.config_motion import MotionGateConfig
    >>> from pipeline.detect.detections import Detections
    >>> from pipeline.ingest.frame import Frame
    >>> gate = MotionGate(MotionGateConfig(enabled=True), {"coco": [[[0, .5], [1, .5], [1, 1], [0, 1]]]})
    >>> still = np.full((360, 640, 3), 90, np.uint8)
    >>> f0 = Frame("c", still, ts=1.8e9, pts=0.0, seq=0, keyframe=True)
    >>> [r.detector for r in gate.decide(f0, [DetectRequest("coco", None)])]
    ['coco']
    >>> _ = gate.merge(f0, {"coco": Detections.empty()})
    >>> f1 = Frame("c", still.copy(), ts=1.8e9 + 2, pts=2.0, seq=50, keyframe=True)
    >>> gate.decide(f1, [DetectRequest("coco", None)]), sorted(gate.merge(f1, {})[1])
    ([], ['coco'])
    >>> gate.frames_gated, gate.frames_detected
    (1, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.analyze.incident import Hazard
from pipeline.analyze.rules import TIME_EPS
from pipeline.config_motion import MotionGateConfig
from pipeline.detect.detections import Detections
from pipeline.ingest.frame import Frame

if TYPE_CHECKING:
    from pipeline.analyze.analyzer import CameraAnalyzer, DetectRequest

Polygon = Sequence[Sequence[float]]
"""A zone polygon in normalised 0..1 coordinates."""


@dataclass
class _Memory:
    """What a detector saw on the frame it last ran on."""

    reference: np.ndarray
    detections: Detections
    ts: float
    carried: int = 0
    """Frames it was skipped on since (a re-check is due only after at least one)."""


@dataclass
class _Decision:
    """The gate's verdict on one frame (matched to the frame by ``seq`` and ``ts``)."""

    seq: int
    ts: float
    small: np.ndarray | None
    ran: list[str] = field(default_factory=list)
    carried: dict[str, Detections] = field(default_factory=dict)
    changed: dict[str, float] = field(default_factory=dict)


def small_grey(image: np.ndarray, work_width: int) -> np.ndarray:
    """``image`` (BGR or grey) as a grey uint8 picture ``work_width`` px wide (area-averaged, so sensor noise
    and compression artefacts average out; rows and columns are first strided down to ~4x the target, which
    costs ~0.1 ms on 1080p instead of averaging 2 M pixels).

    Example:
        >>> small_grey(np.zeros((1080, 1920, 3), np.uint8), 64).shape
        (36, 64)
    """
    h, w = image.shape[:2]
    width = min(work_width, w)
    height = max(1, round(h * width / w))
    step = max(1, w // (width * 4))
    sub = image[::step, ::step]
    small = cv2.resize(sub, (width, height), interpolation=cv2.INTER_AREA)
    return small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)


class MotionGate:
    """One camera's motion gate.

    Args:
        config: the effective settings (camera's or worker's).
        zones: detector name -> the polygons it serves (None in the list: the whole frame).
        never_gated: detectors that always run (those of fire rules).
    """

    def __init__(self, config: MotionGateConfig, zones: dict[str, list[Polygon | None]],
                 never_gated: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.zones = zones
        self.never_gated = never_gated
        self.frames_gated = 0
        """Frames on which at least one detector was skipped and its last output carried forward."""
        self.frames_detected = 0
        """Frames on which every requested detector ran."""
        self.last_carried: dict[str, Detections] = {}
        """Detector name -> the output carried forward on the last merged frame (not run on it)."""
        self.last_changed: dict[str, float] = {}
        """Per gated detector on the last frame: the largest changed share of its zones (0..1)."""
        self._memory: dict[str, _Memory] = {}
        self._masks: dict[tuple[int, int], dict[str, list[np.ndarray]]] = {}
        self._decision: _Decision | None = None

    def _masks_for(self, width: int, height: int) -> dict[str, list[np.ndarray]]:
        """Per detector, one boolean mask per zone at the small size (dilated by a cell: a box that reaches
        into the zone changes cells at its edge)."""
        key = (width, height)
        if key not in self._masks:
            kernel = np.ones((3, 3), np.uint8)
            out: dict[str, list[np.ndarray]] = {}
            for name, polys in self.zones.items():
                masks = []
                for poly in polys:
                    m: np.ndarray = np.zeros((height, width), np.uint8)
                    if poly is None:
                        m[:] = 1
                    else:
                        pts = np.round(np.asarray(poly, np.float64) * [width - 1, height - 1]).astype(np.int32)
                        cv2.fillPoly(m, [pts.reshape(-1, 1, 2)], 1)
                        m = cv2.dilate(m, kernel)
                    masks.append(m.astype(bool))
                out[name] = masks
            self._masks[key] = out
        return self._masks[key]

    def changed_share(self, name: str, small: np.ndarray, reference: np.ndarray) -> float:
        """The largest share of changed cells over detector ``name``'s zones; 1.0 when one counts as changed."""
        moved = cv2.absdiff(small, reference) > self.config.pixel_threshold
        best = 0.0
        for mask in self._masks_for(small.shape[1], small.shape[0]).get(name, []):
            cells = int(mask.sum())
            hits = int(np.count_nonzero(moved & mask))
            if cells and hits >= self.config.min_changed_cells and hits >= self.config.min_changed_fraction * cells:
                return 1.0
            best = max(best, hits / cells if cells else 0.0)
        return best

    def decide(self, frame: Frame, requests: Sequence[DetectRequest]) -> list[DetectRequest]:
        """The requests to run on ``frame``: ``requests`` less those of detectors skipped because nothing
        changed in their zones since they last ran (and their last run is under ``recheck_seconds`` old, or
        they have not been skipped since)."""
        names = list(dict.fromkeys(r.detector for r in requests))
        gateable = [n for n in names if n not in self.never_gated]
        small = small_grey(frame.image, self.config.work_width) if gateable else None
        decision = _Decision(frame.seq, frame.ts, small)
        for name in names:
            mem = self._memory.get(name)
            # A re-check needs a skipped frame since the last run: when analysis falls behind and frames come
            # more than recheck_seconds apart, every frame would be a re-check and the gate would stop helping
            # exactly when the worker needs it.
            if (name in self.never_gated or small is None or mem is None or mem.reference.shape != small.shape
                    or (mem.carried and frame.ts - mem.ts + TIME_EPS >= self.config.recheck_seconds)):
                decision.ran.append(name)
                continue
            share = self.changed_share(name, small, mem.reference)
            decision.changed[name] = round(share, 4)
            if share >= 1.0:
                decision.ran.append(name)
            else:
                decision.carried[name] = mem.detections
                mem.carried += 1
        self._decision = decision
        return [r for r in requests if r.detector not in decision.carried]

    def merge(self, frame: Frame, detections: dict[str, Detections]) -> tuple[dict[str, Detections],
                                                                              dict[str, Detections]]:
        """After detection: ``(detections with the carried ones added, the carried ones)``; remembers the
        output (and the frame) of every gateable detector that ran. A frame :meth:`decide` did not see
        (e.g. a camera check's own frame) carries nothing and updates nothing."""
        d = self._decision
        if d is None or d.seq != frame.seq or d.ts != frame.ts:
            return detections, {}
        self._decision = None
        if d.small is not None:
            for name in d.ran:
                if name not in self.never_gated and name in detections:
                    self._memory[name] = _Memory(d.small, detections[name], frame.ts)
        if d.carried:
            self.frames_gated += 1
        elif d.ran:
            self.frames_detected += 1
        self.last_carried = d.carried
        self.last_changed = d.changed
        return {**d.carried, **detections}, d.carried

    def counts(self) -> dict[str, int]:
        """``{frames_gated, frames_detected}`` so far (camera health and metrics)."""
        return {"frames_gated": self.frames_gated, "frames_detected": self.frames_detected}


def build_motion_gate(analyzer: CameraAnalyzer, detector_names: set[str]) -> MotionGate | None:
    """The gate of ``analyzer``'s camera (``cameras[].motion_gate``, else ``worker.motion_gate``), or None when
    it is off. ``detector_names``: the detector names the site defines (a rule's own ``detector`` counts too)."""
    camera = analyzer.camera
    config = getattr(camera, "motion_gate", None) or getattr(analyzer.site.worker, "motion_gate", None)
    if not isinstance(config, MotionGateConfig) or not config.enabled:
        return None
    polygons = {z.id: z.polygon for z in camera.zones}
    zones: dict[str, list[Polygon | None]] = {}
    never: set[str] = set()
    for r in analyzer.rules:
        names = [n for n in r.detectors if n == r.rule.detector or n in detector_names]
        if r.hazard is Hazard.FIRE:
            never.update(names)
            continue
        poly = polygons.get(r.zone_id) if r.zone_id is not None else None
        for n in names:
            zones.setdefault(n, []).append(poly)
    for c in analyzer.counters:
        zones.setdefault(c.detector, []).append(polygons.get(c.zone_id))
    return MotionGate(config, zones, frozenset(never))
