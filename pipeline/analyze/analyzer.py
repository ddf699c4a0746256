"""Per-camera analysis: which detectors to run where, and routing their output to the hazard rules.

Rules are built from a registry (:data:`RULE_FACTORIES`, :func:`register_rule`) keyed by hazard; a
hazard without an implementation is logged once and skipped, so configs may name hazards whose rules
arrive later. ``parking`` is registered here; fire / clutter / poster modules call :func:`register_rule`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from pipeline.analyze.incident import Hazard, Incident
from pipeline.analyze.parking import NoParkingRule
from pipeline.analyze.rules import ZoneRule
from pipeline.analyze.zones import BoxPx, ZoneGeometry, union_box
from pipeline.config import CameraConfig, HazardRule, SiteConfig, ZoneConfig
from pipeline.detect.detections import Detections
from pipeline.ingest.frame import Frame

log = logging.getLogger(__name__)

RuleFactory = Callable[[str, ZoneConfig | None, HazardRule], ZoneRule | None]
"""(camera_id, zone or None for whole-frame, effective rule) -> rule, or None when not applicable."""

RULE_FACTORIES: dict[Hazard, RuleFactory] = {}


def register_rule(hazard: Hazard, factory: RuleFactory) -> None:
    """Make :class:`CameraAnalyzer` build ``factory(camera_id, zone, rule)`` for ``hazard``."""
    RULE_FACTORIES[hazard] = factory


def _parking(camera_id: str, zone: ZoneConfig | None, rule: HazardRule) -> ZoneRule | None:
    return None if zone is None else NoParkingRule(camera_id, zone, rule)


register_rule(Hazard.PARKING, _parking)


class DetectRequest(NamedTuple):
    """One detector to run on a frame: on ``region`` (x1, y1, x2, y2 pixels) or, if None, the whole frame."""

    detector: str
    region: tuple[int, int, int, int] | None


class CameraAnalyzer:
    """All hazard rules of one camera.

    Per analysed frame the worker asks :meth:`requests` what to run, runs each detector (for one
    detector with several regions: ``YoloDetector.detect_regions(image, [r.region for r in those])``,
    one merged :class:`Detections` per detector), and passes ``{detector name: Detections}`` (pixel
    coordinates of the full frame) to :meth:`analyze`.

    Args:
        site: the site config (hazard rules).
        camera: the camera (zones, whole-frame hazards).
        crop_pad: margin around a crop zone's box, as a fraction of its size.
        crop_min_size: minimum side in pixels of a crop region (detector context).

    Example:
        >>> import numpy as np
        >>> from pipeline.config import SiteConfig
        >>> from pipeline.ingest.frame import Frame
        >>> site = SiteConfig.model_validate({
        ...     "grid": [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
        ...         {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}],
        ...     "cameras": [{"id": "cam1", "url": "x.mp4", "grid": "G", "zones": [
        ...         {"id": "lane", "kind": "no_parking", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}]}]})
        >>> a = CameraAnalyzer(site, site.cameras[0])
        >>> a.requests(640, 480)
        [DetectRequest(detector='coco', region=None)]
        >>> frame = Frame("cam1", np.zeros((480, 640, 3), np.uint8), ts=0.0, pts=0.0, seq=0, keyframe=True)
        >>> a.analyze(frame, {"coco": Detections.empty()})
        []
    """

    def __init__(self, site: SiteConfig, camera: CameraConfig, crop_pad: float = 0.1,
                 crop_min_size: int = 320) -> None:
        self.site = site
        self.camera = camera
        self.crop_pad = crop_pad
        self.crop_min_size = crop_min_size
        self.rules: list[ZoneRule] = []
        self.skipped: set[Hazard] = set()
        """Hazards configured on this camera that have no rule implementation (logged once each)."""
        self._zones = {z.id: z for z in camera.zones}
        for zone in camera.zones:
            for hazard in zone.effective_hazards():
                self._add(hazard, zone)
        for hazard in camera.hazards:
            self._add(hazard, None)

    def _add(self, hazard: Hazard, zone: ZoneConfig | None) -> None:
        base = self.site.hazards.get(hazard)
        if base is None or not base.enabled:
            return
        rule = base.merged(zone.overrides.get(hazard)) if zone is not None else base
        if not rule.enabled:
            return
        factory = RULE_FACTORIES.get(hazard)
        built = factory(self.camera.id, zone, rule) if factory is not None else None
        if built is None:
            if hazard not in self.skipped:
                where = f"zone {zone.id!r}" if zone is not None else "whole frame"
                log.warning("camera %s: no rule implements hazard %r (%s); skipped", self.camera.id,
                            hazard.value, where)
                self.skipped.add(hazard)
            return
        self.rules.append(built)

    @property
    def detectors(self) -> list[str]:
        """Names of the detectors this camera's rules need, in rule order."""
        return list(dict.fromkeys(r.rule.detector for r in self.rules))

    def requests(self, width: int, height: int) -> list[DetectRequest]:
        """What to run on a ``width`` x ``height`` frame.

        Per detector: one full-frame request (region None) if any rule using it is whole-frame or sits
        in a zone without ``crop``; otherwise one request per crop region, where regions are the padded
        zone boxes (at least ``crop_min_size`` px a side) with overlapping ones merged.
        """
        out: list[DetectRequest] = []
        for name in self.detectors:
            regions: list[BoxPx] = []
            full = False
            for r in self.rules:
                if r.rule.detector != name:
                    continue
                zone = self._zones.get(r.zone_id) if r.zone_id is not None else None
                if zone is None or not zone.crop:
                    full = True
                    break
                regions.append(ZoneGeometry(zone, width, height).crop_region(self.crop_pad,
                                                                             self.crop_min_size))
            if full or not regions:
                out.append(DetectRequest(name, None))
            else:
                out.extend(DetectRequest(name, box) for box in merge_overlapping(regions))
        return out

    def analyze(self, frame: Frame, detections: dict[str, Detections]) -> list[Incident]:
        """Feed one analysed frame to every rule; returns the incident events, in rule order.

        A rule whose detector is missing from ``detections`` sees an empty result (as if nothing was
        found), so its incidents can still clear.
        """
        out: list[Incident] = []
        for r in self.rules:
            d = detections.get(r.rule.detector)
            out.extend(r.update(frame.ts, d if d is not None else Detections.empty(), frame.width,
                                frame.height))
        return out

    def zone_polygons_px(self, width: int, height: int) -> dict[str, np.ndarray]:
        """Zone id -> int32 (N, 1, 2) pixel polygon, ready for ``cv2.polylines`` (evidence drawing)."""
        return {z.id: ZoneGeometry(z, width, height).polygon_int for z in self.camera.zones}


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
