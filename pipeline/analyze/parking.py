"""No-parking rule: vehicles standing still in a zone for longer than ``dwell_seconds``.

Design: **one incident per zone**, covering every offending vehicle (``boxes`` lists each, ``details``
counts them), not one per vehicle. Reasons:

* the ticket system opens one ticket per incident id, and a patrol worker clears a zone, not a car: a
  fire lane with five cars in it is one job, not five tickets;
* ``cooldown_seconds`` is defined per zone ("no new one opens in the same zone"), which only has a clear
  meaning for zone-level incidents;
* it is robust to the tracker: when a parked car's track is lost and restarted (long occlusion, a
  detector that flips between car and truck), a per-vehicle scheme would open a duplicate ticket, the
  per-zone incident simply continues.

The vehicle's *anchor* is the bottom-centre of its box (where the wheels touch the ground), so a car
whose roof overlaps the zone but which stands beside it does not count. Vehicles are tracked by IoU over
analysed frames (:class:`~pipeline.analyze.tracking.IoUTracker`, ``rule.match_iou``); a track survives
``rule.clear_seconds`` of missed detections, so a car hidden for a few frames keeps its dwell timer and
does not cause a second incident.
"""

from __future__ import annotations

import numpy as np

from pipeline.analyze.incident import Hazard, Incident
from pipeline.analyze.rules import TIME_EPS, FrameView, IncidentLifecycle, Observation, normalised_box
from pipeline.analyze.tracking import IoUTracker, Track
from pipeline.analyze.zones import ZoneGeometry, ZoneGeometryCache
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.detections import Detections

DEFAULT_VEHICLES = ("car", "truck", "bus", "motorcycle")


class NoParkingRule:
    """Alerts on vehicles parked in a no-parking / fire-lane zone.

    Args:
        camera_id: camera id.
        zone: the zone (normalised polygon).
        rule: the effective rule (site rule merged with the zone's override): ``classes`` (default
            car/truck/bus/motorcycle), ``min_confidence``, ``dwell_seconds``, ``match_iou``,
            ``clear_seconds``, ``update_interval_seconds``, ``cooldown_seconds``, ``confirm_k/n``,
            ``severity``.
        stationary_tolerance: a vehicle counts as standing still while its box centre stays within this
            fraction of its box size of where it came to rest.

    Example:
        >>> from pipeline.config import HazardRule, ZoneConfig
        >>> zone = ZoneConfig(id="lane", kind="no_parking", polygon=[[0, 0.5], [1, 0.5], [1, 1], [0, 1]])
        >>> rule = NoParkingRule("cam1", zone, HazardRule(classes=["car"], dwell_seconds=10))
        >>> car = Detections.from_arrays([[40, 60, 60, 80]], [0.9], [2], {2: "car"})
        >>> views = [FrameView(float(t), 100, 100, detections={"coco": car}) for t in range(15)]
        >>> events = [e for v in views for e in rule.judge(v)]
        >>> [(e.event.value, e.id, e.details["dwell_seconds"]) for e in events]
        [('opened', 'cam1-lane-parking-0-1', 10.0)]
    """

    hazard: Hazard = Hazard.PARKING

    def __init__(self, camera_id: str, zone: ZoneConfig, rule: HazardRule,
                 stationary_tolerance: float = 0.15) -> None:
        self.camera_id = camera_id
        self.zone = zone
        self.zone_id: str | None = zone.id
        self.rule = rule
        self.classes = frozenset(rule.classes or DEFAULT_VEHICLES)
        self.detectors: tuple[str, ...] = (rule.detector,)
        self.interval_seconds = rule.analysis_interval_seconds
        self.tracker = IoUTracker(match_iou=rule.match_iou, max_missing_seconds=rule.clear_seconds,
                                  stationary_tolerance=stationary_tolerance)
        self.lifecycle = IncidentLifecycle(camera_id, zone.id, Hazard.PARKING, rule)
        self._geometry = ZoneGeometryCache(zone)
        self.last_ts: float | None = None
        self.last_verdicts: dict[int, str] = {}
        """Per track seen in the last frame: ``parked`` or why it does not count (outside zone, dwell)."""

    def geometry(self, width: int, height: int) -> ZoneGeometry:
        """The zone in pixels of a ``width`` x ``height`` frame (cached per size)."""
        return self._geometry.get(width, height)

    def vehicles(self, detections: Detections) -> Detections:
        """The detections that count: vehicle classes at or above ``min_confidence``."""
        return detections.with_classes(self.classes).with_min_confidence(self.rule.min_confidence)

    def offenders(self, ts: float, width: int, height: int) -> list[Track]:
        """Tracks seen in the frame at ``ts``, anchored inside the zone, still for >= dwell_seconds."""
        live = [t for t in self.tracker.tracks if t.seen_at(ts)]
        self.last_verdicts = {}
        if not live:
            return []
        inside = self.geometry(width, height).contains_points(np.array([t.bottom_centre for t in live]))
        out = []
        for t, ok in zip(live, inside, strict=True):
            dwell = t.stationary_seconds(ts)
            if not ok:
                self.last_verdicts[t.id] = "outside zone"
            elif dwell + TIME_EPS < self.rule.dwell_seconds:
                self.last_verdicts[t.id] = f"dwell {dwell:.1f} s < {self.rule.dwell_seconds:g} s"
            else:
                self.last_verdicts[t.id] = "parked"
                out.append(t)
        return out

    def judge(self, view: FrameView) -> list[Incident]:
        """Judge one analysed frame (the output of ``rule.detector``); returns 0 or 1 incident events."""
        ts, width, height = view.ts, view.width, view.height
        self.last_ts = ts
        v = self.vehicles(view.detections_of(self.rule.detector))
        self.tracker.update(ts, v.xyxy, v.confidence, v.labels)
        parked = sorted(self.offenders(ts, width, height), key=lambda t: t.stationary_since)
        obs: Observation | None = None
        if parked:
            first = parked[0]
            obs = Observation(
                started_at=first.stationary_since,
                confidence=max(t.best_confidence for t in parked),
                boxes=tuple(normalised_box(t.box, width, height, t.label, t.confidence) for t in parked),
                details={
                    "dwell_seconds": round(first.stationary_seconds(ts), 3),
                    "vehicle": first.label,
                    "vehicles": len(parked),
                    "labels": [t.label for t in parked],
                    "track_ids": [t.id for t in parked],
                },
            )
        event = self.lifecycle.step(ts, obs)
        return [event] if event is not None else []

    def state(self) -> dict[str, object]:
        """Rule internals now (JSON-able): tracked vehicles with their dwell and verdict, and the lifecycle."""
        ts = self.last_ts
        tracks = [{**t.state(), "dwell_seconds": None if ts is None else round(t.stationary_seconds(ts), 3),
                   "verdict": self.last_verdicts.get(t.id, "not seen this frame")} for t in self.tracker.tracks]
        return {"ts": ts, "dwell_seconds": self.rule.dwell_seconds, "tracks": tracks,
                "lifecycle": self.lifecycle.state()}
