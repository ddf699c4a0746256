"""Analyze stage: zone geometry, tracking, hazard rules and per-camera analysis.

Public API (imported lazily: ``pipeline.config`` imports ``pipeline.analyze.incident``, so this package
must not import the config-dependent modules eagerly)::

    from pipeline.analyze import CameraAnalyzer, ClutterRule, FireRule, NoParkingRule, OccupancyCounter
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.analyze.analyzer import CameraAnalyzer, DetectRequest, register_rule
    from pipeline.analyze.clutter import ClutterRule
    from pipeline.analyze.fire import FireRule
    from pipeline.analyze.incident import Hazard, Incident, IncidentBox, IncidentEvent
    from pipeline.analyze.occupancy import OccupancyCounter
    from pipeline.analyze.parking import NoParkingRule
    from pipeline.analyze.rules import FrameView, IncidentLifecycle, KofN, Observation, PresenceTimer, Rule
    from pipeline.analyze.static_objects import StaticObjectDetector
    from pipeline.analyze.tracking import IoUTracker, Track, iou_matrix
    from pipeline.analyze.zones import ZoneGeometry

_WHERE = {
    "CameraAnalyzer": "analyzer", "DetectRequest": "analyzer", "register_rule": "analyzer",
    "ClutterRule": "clutter", "StaticObjectDetector": "static_objects", "FireRule": "fire",
    "OccupancyCounter": "occupancy",
    "Hazard": "incident", "Incident": "incident", "IncidentBox": "incident", "IncidentEvent": "incident",
    "NoParkingRule": "parking",
    "IncidentLifecycle": "rules", "KofN": "rules", "Observation": "rules", "PresenceTimer": "rules",
    "FrameView": "rules", "Rule": "rules",
    "IoUTracker": "tracking", "Track": "tracking", "iou_matrix": "tracking",
    "ZoneGeometry": "zones",
}

__all__ = [
    "CameraAnalyzer", "ClutterRule", "DetectRequest", "FireRule", "FrameView", "OccupancyCounter",
    "Rule", "StaticObjectDetector", "Hazard", "Incident", "IncidentBox", "IncidentEvent",
    "IncidentLifecycle", "IoUTracker", "KofN", "NoParkingRule", "Observation", "PresenceTimer",
    "Track", "ZoneGeometry", "iou_matrix", "register_rule",
]


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"pipeline.analyze.{mod}"), name)
