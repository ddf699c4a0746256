"""Per-camera analysis: which detectors to run where, and routing their output to the hazard rules.

Rules are built from a registry (:data:`RULE_FACTORIES`, :func:`register_rule`) keyed by hazard; a
hazard without an implementation is logged once and skipped, so configs may name hazards whose rules
arrive later. Registered here: ``parking`` (:class:`~pipeline.analyze.parking.NoParkingRule`), ``fire``
(:class:`~pipeline.analyze.fire.FireRule`, per zone or whole frame), ``clutter``
(:class:`~pipeline.analyze.clutter.ClutterRule`) and ``poster``
(:class:`~pipeline.analyze.poster.PosterRule`, OCR, not a YOLO detector).

Every rule implements one protocol, :class:`~pipeline.analyze.rules.Rule`: per analysed frame the
analyzer builds one :class:`~pipeline.analyze.rules.FrameView` (ts, size, image, detections by detector
name) and calls ``judge(view)`` on each rule that is due under its ``interval_seconds``; each rule
declares the ``detectors`` it reads (the analyzer requests those the site defines) and reports its
internals with ``state()`` (:meth:`CameraAnalyzer.rule_states`). A new hazard joins by registering a
factory; the analyzer knows no rule class.

Besides hazards, ``parking`` zones with a ``capacity`` get an
:class:`~pipeline.analyze.occupancy.OccupancyCounter`; :meth:`CameraAnalyzer.occupancy` reports them.
A rule that raises is logged and skipped for that frame; the other rules still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.analyze.clutter import ClutterRule
from pipeline.analyze.fire import FireRule
from pipeline.analyze.incident import Hazard, Incident
from pipeline.analyze.journal import JournalEntry
from pipeline.analyze.motion_gate import build_motion_gate
from pipeline.analyze.occupancy import DEFAULT_VEHICLES, OccupancyCounter
from pipeline.analyze.parking import NoParkingRule
from pipeline.analyze.poster import PosterRule
from pipeline.analyze.rules import TIME_EPS, FrameView, Rule
from pipeline.analyze.static_objects import StaticObjectDetector
from pipeline.analyze.zones import BoxPx, ZoneGeometry, union_box
from pipeline.config import CameraConfig, HazardRule, SiteConfig, ZoneConfig, ZoneKind
from pipeline.config_hazards import ClutterRuleConfig, FireRuleConfig, ParkingRuleConfig, PosterRuleConfig
from pipeline.detect.detections import Detections
from pipeline.detect.fire_confirm import FireConfirmClassifier
from pipeline.detect.fire_confirm import resolve_model as resolve_fire_confirm
from pipeline.detect.ocr import TextDetector
from pipeline.detect.ocr_pool import shared_text_detector
from pipeline.ingest.frame import Frame
from pipeline.scenes.rule import scene_polygons_px, scene_rules

log = logging.getLogger(__name__)

OCR_DETECTOR = "ocr"
"""The poster rule's ``detector``: OCR run by the rule itself, never requested from the worker."""


@dataclass
class RuleContext:
    """What a rule factory may need beyond (camera, zone, rule): the site, and shared engines.

    Attributes:
        site: the site config.
        camera: the camera.
    """

    site: SiteConfig
    camera: CameraConfig
    _text: TextDetector | None = field(default=None, repr=False)
    _fire_confirm: dict[str, FireConfirmClassifier] = field(default_factory=dict, repr=False)

    def text_detector(self) -> TextDetector:
        """The camera's OCR engine, from the worker-wide pool (pipeline/detect/ocr_pool.py: one engine per
        analysis thread, not per camera); its models load on first use."""
        if self._text is None:
            self._text = shared_text_detector(self.site, self.camera.id, self.site.worker.analysis_threads)
        return self._text

    def fire_confirm(self, model: str) -> FireConfirmClassifier:
        """The camera's fire second-stage classifier ``model`` (a manifest entry or a config-relative path),
        loaded on first call and hash-checked like a detector."""
        if model not in self._fire_confirm:
            rel = "models/manifest.yaml"
            manifests = [self.site.resolve_path(rel), self.site.resolve_path("../" + rel), Path.cwd() / rel]
            manifest = next((p for p in manifests if p.is_file()), None)
            try:
                path = resolve_fire_confirm(model, manifest, self.site.resolve_path(model))
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{e}; set hazards.fire.confirm_model to null to run the fire rule "
                                        "without its second stage") from e
            self._fire_confirm[model] = FireConfirmClassifier(path, threads=1)
        return self._fire_confirm[model]


RuleFactory = Callable[[str, ZoneConfig | None, HazardRule, RuleContext], Rule | None]
"""(camera_id, zone or None for whole-frame, effective rule, context) -> rule, or None when not applicable."""

RULE_FACTORIES: dict[Hazard, RuleFactory] = {}


def register_rule(hazard: Hazard, factory: RuleFactory) -> None:
    """Make :class:`CameraAnalyzer` build ``factory(camera_id, zone, rule, context)`` for ``hazard``."""
    RULE_FACTORIES[hazard] = factory


# The factories pass each rule its knobs from the site YAML (pipeline.config_hazards).

def _parking(camera_id: str, zone: ZoneConfig | None, rule: HazardRule, ctx: RuleContext) -> Rule | None:
    if zone is None:
        return None
    cfg = ParkingRuleConfig.of(rule)
    return NoParkingRule(camera_id, zone, cfg, stationary_tolerance=cfg.stationary_tolerance)


def _fire(camera_id: str, zone: ZoneConfig | None, rule: HazardRule, ctx: RuleContext) -> Rule | None:
    cfg = FireRuleConfig.of(rule)
    return FireRule(camera_id, zone, cfg, window_seconds=cfg.window_seconds, min_flicker=cfg.min_flicker,
                    min_fire_colour=cfg.min_fire_colour, person_cover=cfg.person_cover,
                    person_detector=cfg.person_detector, person_min_confidence=cfg.person_min_confidence,
                    confirm=ctx.fire_confirm(cfg.confirm_model) if cfg.confirm_model else None,
                    confirm_min_score=cfg.confirm_min_score, smoke_min_confidence=cfg.smoke_min_confidence,
                    smoke_min_score=cfg.smoke_min_score, smoke_tile_min_score=cfg.smoke_tile_min_score,
                    smoke_tiles=ctx.fire_confirm(cfg.smoke_tiles_model) if cfg.smoke_tiles_model else None)


def _clutter(camera_id: str, zone: ZoneConfig | None, rule: HazardRule, ctx: RuleContext) -> Rule | None:
    if zone is None:
        return None
    cfg = ClutterRuleConfig.of(rule)
    change = StaticObjectDetector(work_width=cfg.work_width, learn_frames=cfg.learn_frames,
                                  threshold=cfg.change_threshold, hold_seconds=cfg.hold_seconds,
                                  min_object_px=cfg.min_object_px, removal_score=cfg.removal_score)
    return ClutterRule(camera_id, zone, cfg, clutter_detector=cfg.clutter_detector,
                       person_detector=cfg.person_detector, person_cover=cfg.person_cover,
                       model_free=cfg.model_free, stationary_tolerance=cfg.stationary_tolerance,
                       change=change, furniture=cfg.furniture, not_clutter=frozenset(cfg.not_clutter))


def _poster(camera_id: str, zone: ZoneConfig | None, rule: HazardRule, ctx: RuleContext) -> Rule | None:
    if zone is None:
        return None
    cfg = PosterRuleConfig.of(rule)
    return PosterRule(camera_id, zone, cfg, ctx.text_detector(), learn_frames=cfg.learn_frames,
                      min_confirm=(cfg.min_confirm_k, cfg.min_confirm_n), min_changed=cfg.min_changed,
                      reread_seconds=cfg.reread_seconds, change_threshold=cfg.change_threshold,
                      adapt_step=cfg.adapt_step)


register_rule(Hazard.PARKING, _parking)
register_rule(Hazard.FIRE, _fire)
register_rule(Hazard.CLUTTER, _clutter)
register_rule(Hazard.POSTER, _poster)


class DetectRequest(NamedTuple):
    """One detector to run on a frame: on ``region`` (x1, y1, x2, y2 pixels) or, if None, the whole frame."""

    detector: str
    region: tuple[int, int, int, int] | None


class CameraAnalyzer:
    """All hazard rules (and occupancy counters) of one camera.

    Per analysed frame the worker asks :meth:`requests` what to run, runs each detector (for one
    detector with several regions: ``YoloDetector.detect_regions(image, [r.region for r in those])``,
    one merged :class:`Detections` per detector), and passes ``{detector name: Detections}`` (pixel
    coordinates of the full frame) to :meth:`analyze`, which also hands the frame image to image rules.
    :meth:`occupancy` reports parking occupancy after each analysed frame.

    Args:
        site: the site config (hazard rules).
        camera: the camera (zones, whole-frame hazards).
        crop_pad: margin around a crop zone's box, as a fraction of its size.
        crop_min_size: minimum side in pixels of a crop region (detector context).
        occupancy_window: analysed frames the occupancy median runs over (None:
            ``hazards.parking.occupancy_window``, 5 by default).

    Example:
        >>> import numpy as np
        >>> from pipeline.config import SiteConfig
        >>> from pipeline.ingest.frame import Frame
        >>> site = SiteConfig.model_validate({
        ...     "grid": [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
        ...         {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}],
        ...     "cameras": [{"id": "cam1", "url": "x.mp4", "grid": "G", "zones": [
        ...         {"id": "lane", "kind": "no_parking", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]},
        ...         {"id": "bays", "kind": "parking", "capacity": 4, "polygon": [[0, 0], [1, 0], [1, .5], [0, .5]]}]}]})
        >>> a = CameraAnalyzer(site, site.cameras[0])
        >>> a.requests(640, 480)
        [DetectRequest(detector='coco', region=None)]
        >>> frame = Frame("cam1", np.zeros((480, 640, 3), np.uint8), ts=0.0, pts=0.0, seq=0, keyframe=True)
        >>> a.analyze(frame, {"coco": Detections.empty()})
        []
        >>> a.occupancy()
        {'bays': {'used': 0, 'free': 4, 'capacity': 4, 'ts': 0.0}}
    """

    def __init__(self, site: SiteConfig, camera: CameraConfig, crop_pad: float = 0.1,
                 crop_min_size: int = 320, occupancy_window: int | None = None) -> None:
        self.site = site
        self.camera = camera
        self.crop_pad = crop_pad
        self.crop_min_size = crop_min_size
        self.context = RuleContext(site, camera)
        self.rules: list[Rule] = []
        self.skipped: set[Hazard] = set()
        """Hazards configured on this camera that have no rule implementation (logged once each)."""
        self.errors: dict[int, int] = {}
        """Exceptions raised so far, by index into :attr:`rules`."""
        self.last_judged: dict[int, float] = {}
        """Frame time each rule (index into :attr:`rules`) last judged, for ``analysis_interval_seconds``."""
        self._zones = {z.id: z for z in camera.zones}
        for zone in camera.zones:
            for hazard in zone.effective_hazards():
                self._add(hazard, zone)
        for hazard in camera.hazards:
            self._add(hazard, None)
        self.rules.extend(scene_rules(site, camera))  # scenes[] of this camera (pipeline.scenes)
        self.counters: list[OccupancyCounter] = []
        park = site.hazards.get(Hazard.PARKING)
        window = occupancy_window if occupancy_window is not None else (
            ParkingRuleConfig.of(park).occupancy_window if park is not None else 5)
        for zone in camera.zones:
            if zone.kind is ZoneKind.PARKING and zone.capacity is not None:
                self.counters.append(OccupancyCounter(
                    camera.id, zone, classes=(park.classes if park and park.classes else DEFAULT_VEHICLES),
                    min_confidence=park.min_confidence if park else 0.35, window=window,
                    detector=park.detector if park else "coco"))
        # Skips detectors on still frames, carrying their last output (pipeline/analyze/motion_gate.py).
        self.motion_gate = build_motion_gate(self, set(site.detectors))

    @property
    def text_detector(self) -> TextDetector:
        """The OCR engine shared by this camera's poster rules (created on first use)."""
        return self.context.text_detector()

    def _add(self, hazard: Hazard, zone: ZoneConfig | None) -> None:
        base = self.site.hazards.get(hazard)
        if base is None or not base.enabled:
            return
        rule = base.merged(zone.overrides.get(hazard)) if zone is not None else base
        if not rule.enabled:
            return
        factory = RULE_FACTORIES.get(hazard)
        built = factory(self.camera.id, zone, rule, self.context) if factory is not None else None
        if built is None:
            if hazard not in self.skipped:
                where = f"zone {zone.id!r}" if zone is not None else "whole frame"
                log.warning("camera %s: no rule implements hazard %r (%s); skipped", self.camera.id,
                            hazard.value, where)
                self.skipped.add(hazard)
            return
        self.rules.append(built)

    def due(self, i: int, ts: float | None) -> bool:
        """Whether rule ``i`` judges a frame at ``ts`` (None: any frame) under its analysis interval."""
        last = self.last_judged.get(i)
        return ts is None or last is None or ts - last + TIME_EPS >= self.rules[i].interval_seconds

    def _needs(self, ts: float | None = None) -> list[tuple[str, ZoneConfig | None]]:
        """(detector, zone or None) pairs the rules due at ``ts`` (None: all) and the counters need."""
        out: list[tuple[str, ZoneConfig | None]] = []
        for i, r in enumerate(self.rules):
            if not self.due(i, ts):
                continue
            zone = self._zones.get(r.zone_id) if r.zone_id is not None else None
            names = [n for n in r.detectors if n != OCR_DETECTOR
                     and (n == r.rule.detector or n in self.site.detectors)]
            out.extend((n, zone) for n in names)
        out.extend((c.detector, c.zone) for c in self.counters)
        return out

    @property
    def detectors(self) -> list[str]:
        """Names of the (YOLO) detectors this camera's rules need, in rule order; never ``ocr``."""
        return list(dict.fromkeys(n for n, _ in self._needs()))

    def requests(self, width: int, height: int, ts: float | None = None) -> list[DetectRequest]:
        """What to run on a ``width`` x ``height`` frame (at time ``ts``: only for the rules due then).

        Per detector: one full-frame request (region None) if any rule using it is whole-frame or sits
        in a zone without ``crop``; otherwise one request per crop region, where regions are the padded
        zone boxes (at least ``crop_min_size`` px a side) with overlapping ones merged. The poster rule's
        OCR is not a request (the rule runs it itself).
        """
        needs = self._needs(ts)
        out: list[DetectRequest] = []
        for name in dict.fromkeys(n for n, _ in needs):
            regions: list[BoxPx] = []
            full = False
            for n, zone in needs:
                if n != name:
                    continue
                if zone is None or not zone.crop:
                    full = True
                    break
                regions.append(ZoneGeometry(zone, width, height).crop_region(self.crop_pad,
                                                                             self.crop_min_size))
            if full or not regions:
                out.append(DetectRequest(name, None))
            else:
                out.extend(DetectRequest(name, box) for box in merge_overlapping(list(dict.fromkeys(regions))))
        return out

    def frame_requests(self, frame: Frame) -> list[DetectRequest]:
        """:meth:`requests` for ``frame``, less the detectors the motion gate skips on it (their last output
        is carried forward by :meth:`analyze`)."""
        reqs = self.requests(frame.width, frame.height, frame.ts)
        return reqs if self.motion_gate is None else self.motion_gate.decide(frame, reqs)

    def analyze(self, frame: Frame, detections: dict[str, Detections]) -> list[Incident]:
        """Feed one analysed frame to every rule and counter; returns the incident events, in rule order.

        A rule whose detector is missing from ``detections`` sees an empty result (as if nothing was
        found), so its incidents can still clear. A rule that raises is logged (the first time, then
        every 100th) and the others go on. A rule judged less than its ``analysis_interval_seconds`` ago
        skips the frame.
        """
        out: list[Incident] = []
        w, h = frame.width, frame.height
        carried: dict[str, Detections] = {}
        if self.motion_gate is not None:
            detections, carried = self.motion_gate.merge(frame, detections)
        view = FrameView(frame.ts, w, h, frame.image, detections, frozenset(carried))
        for i, r in enumerate(self.rules):
            if not self.due(i, view.ts):
                continue
            self.last_judged[i] = view.ts
            try:
                out.extend(r.judge(view))
            except Exception:  # noqa: BLE001 - one broken rule must not silence the others
                n = self.errors[i] = self.errors.get(i, 0) + 1
                if n == 1 or n % 100 == 0:
                    log.exception("camera %s: rule %s/%s failed (%d times)", self.camera.id, r.hazard.value,
                                  r.zone_id or "frame", n)
        for c in self.counters:
            try:
                d = detections.get(c.detector)
                c.update(frame.ts, d if d is not None else Detections.empty(), w, h)
            except Exception:  # noqa: BLE001
                log.exception("camera %s: occupancy of zone %s failed", self.camera.id, c.zone_id)
        return out

    def rule_states(self) -> list[dict[str, object]]:
        """Per rule, in rule order: ``{hazard, zone, rule, state}`` - hazard value, zone id (None for
        whole-frame rules), the rule's class name and its JSON-able internals (``state()``: k-of-n counts,
        dwell timers, blocked share, why candidates were rejected, the incident lifecycle), plus
        ``last_judged`` (frame time it last judged) and ``errors`` (exceptions so far); with the motion gate on,
        ``detections_carried``: the rule's detectors whose output the last frame carried forward."""
        out: list[dict[str, object]] = []
        for i, r in enumerate(self.rules):
            try:
                state = r.state()
            except Exception as e:  # noqa: BLE001 - a debug view must not take the analysis down
                state = {"error": repr(e)}
            out.append({"hazard": r.hazard.value, "zone": r.zone_id, "rule": type(r).__name__,
                        "state": state, "last_judged": self.last_judged.get(i), "errors": self.errors.get(i, 0)})
            if self.motion_gate is not None:  # which of its detectors the last frame carried forward
                out[-1]["detections_carried"] = sorted(set(self.motion_gate.last_carried) & set(r.detectors))
        return out

    def restore_incidents(self, entries: list[JournalEntry], ts: float) -> list[JournalEntry]:
        """Hand each incident a previous run left open back to its rule (same zone and hazard; see
        :meth:`IncidentLifecycle.restore`), as last seen at ``ts``. Returns the entries no rule takes (zone or
        hazard gone from the config): the caller clears those."""
        left: list[JournalEntry] = []
        for e in entries:
            rule = next((r for r in self.rules if r.hazard is e.hazard and r.zone_id == e.zone_id
                         and not r.lifecycle.is_open), None)
            if rule is None:
                left.append(e)
                continue
            rule.lifecycle.restore(e.incident_id, e.started_at, e.opened_at, ts, e.confidence)
        return left

    def clear_open(self, ts: float, reason: str) -> list[Incident]:
        """Clear every open incident now (its ``cleared`` event says ``clear_reason``), e.g. when the camera
        has been down too long to know whether the hazard is still there."""
        return [e for r in self.rules if (e := r.lifecycle.clear_now(ts, reason)) is not None]

    def occupancy(self) -> dict[str, dict[str, object]]:
        """Parking occupancy: ``{zone_id: {"used", "free", "capacity", "ts"}}`` for every ``parking`` zone
        with a ``capacity`` that has counted at least one analysed frame (``ts`` = that frame's time)."""
        return {c.zone_id: c.state() for c in self.counters if c.ts is not None}

    def zone_polygons_px(self, width: int, height: int) -> dict[str, np.ndarray]:
        """Zone id (and scene id) -> int32 (N, 1, 2) pixel polygon, ready for ``cv2.polylines`` (evidence drawing)."""
        out = {z.id: ZoneGeometry(z, width, height).polygon_int for z in self.camera.zones}
        return {**scene_polygons_px(self.site, self.camera, width, height), **out}


def merge_overlapping(boxes: list[BoxPx]) -> list[BoxPx]:
    """Merge boxes that overlap (repeatedly) into their union boxes.

    Example:
        >>> merge_overlapping([(0, 0, 10, 10), (5, 5, 20, 20), (50, 50, 60, 60)])
        [(0, 0, 20, 20), (50, 50, 60, 60)]
    """
    out = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = union_box([a, b])
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return out
