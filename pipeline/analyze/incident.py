"""Incident events handed from analyze to alerts."""

from __future__ import annotations

from dataclasses import dataclass, field

# The enums are part of the worker <-> service contract; re-exported here so existing imports keep working.
from pipeline.contract.enums import Hazard as Hazard
from pipeline.contract.enums import IncidentEvent as IncidentEvent


@dataclass(frozen=True)
class IncidentBox:
    """One object behind an incident, in normalised 0..1 frame coordinates."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    confidence: float


@dataclass(frozen=True)
class Incident:
    """A state change of one hazard incident on one camera zone.

    ``id`` is stable for the life of the incident: ``opened``, every ``updated`` and the
    final ``cleared`` share it, which is what makes ticket creation idempotent downstream.

    Attributes:
        id: stable incident id (e.g. ``cam1-no_parking_1-parking-1700000000-3``).
        event: opened / updated / cleared.
        hazard: which hazard.
        camera_id: camera id.
        zone_id: zone id, or None for whole-frame hazards.
        started_at: Unix seconds when the hazard was first seen.
        ts: Unix seconds of this event.
        confidence: best detector confidence behind the incident.
        boxes: the objects, normalised coordinates.
        severity: 1 (low) .. 5 (critical).
        details: hazard-specific extras (dwell seconds, blocked share, phone numbers, ...).
        frame_ts: capture time of the frame the event is based on (for evidence lookup).
    """

    id: str
    event: IncidentEvent
    hazard: Hazard
    camera_id: str
    zone_id: str | None
    started_at: float
    ts: float
    confidence: float
    boxes: tuple[IncidentBox, ...] = ()
    severity: int = 3
    details: dict[str, object] = field(default_factory=dict)
    frame_ts: float | None = None
