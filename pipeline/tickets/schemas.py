"""Pydantic request/response models of the ticket REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.tickets.models import CameraHealthRow, DeadLetter, Ticket, TicketEvent, TicketStatus
from pipeline.tickets.service import allowed_next


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class EvidenceLinks(BaseModel):
    """API paths that serve the ticket's evidence files (404 until the worker has written them)."""

    snapshot: str = Field(description="GET path of the snapshot JPEG.")
    clip: str = Field(description="GET path of the MP4 clip.")


class TicketOut(_Out):
    """A ticket as listed."""

    id: int
    incident_id: str
    hazard: str
    severity: int = Field(description="1 (low) .. 5 (critical).")
    status: str
    allowed_next: list[str] = Field(description="Statuses this ticket may move to now.")
    title: str
    camera_id: str
    camera_name: str | None
    grid_path: list[str] = Field(description="Grid codes town -> cell.")
    zone_id: str | None
    started_at: datetime | None
    opened_at: datetime
    updated_at: datetime
    cleared_at: datetime | None = Field(description="Set when the detector saw the hazard gone.")
    last_event: str = Field(description="Last alert event: opened, updated or cleared.")
    confidence: float
    snapshot_url: str | None = Field(description="Snapshot URL from the alert.")
    clip_url: str | None = Field(description="Clip URL from the alert.")
    evidence: EvidenceLinks
    boxes: list[dict[str, Any]]
    details: dict[str, Any]
    assignee: str | None
    note: str | None

    @classmethod
    def of(cls, t: Ticket) -> TicketOut:
        """Build from an ORM row."""
        return cls(
            id=t.id, incident_id=t.incident_id, hazard=t.hazard, severity=t.severity, status=t.status,
            allowed_next=allowed_next(t.status), title=t.title, camera_id=t.camera_id,
            camera_name=t.camera_name, grid_path=[t.grid_l1, t.grid_l2, t.grid_l3, t.grid_l4],
            zone_id=t.zone_id, started_at=t.started_at, opened_at=t.opened_at, updated_at=t.updated_at,
            cleared_at=t.cleared_at, last_event=t.last_event, confidence=t.confidence,
            snapshot_url=t.snapshot_url, clip_url=t.clip_url,
            evidence=EvidenceLinks(snapshot=f"/tickets/{t.id}/evidence/snapshot",
                                   clip=f"/tickets/{t.id}/evidence/clip"),
            boxes=list(t.boxes or []), details=dict(t.details or {}), assignee=t.assignee, note=t.note,
        )


class EventOut(_Out):
    """One history row of a ticket."""

    id: int
    kind: str = Field(description="alert_opened, alert_updated, alert_cleared or transition.")
    from_status: str | None
    to_status: str | None
    actor: str | None
    note: str | None
    ts: datetime
    payload: dict[str, Any] | None = Field(description="The alert JSON for alert events.")

    @classmethod
    def of(cls, e: TicketEvent) -> EventOut:
        """Build from an ORM row."""
        return cls.model_validate(e)


class TicketDetail(TicketOut):
    """A ticket with its history, oldest first."""

    events: list[EventOut]


class TicketPage(BaseModel):
    """A page of tickets, newest first."""

    items: list[TicketOut]
    total: int = Field(description="Tickets matching the filters (all pages).")
    limit: int
    offset: int


class TransitionIn(BaseModel):
    """A status change request."""

    to: TicketStatus = Field(description="Target status.")
    actor: str | None = Field(default=None, max_length=200, description="Who makes the change.")
    note: str | None = Field(default=None, max_length=4000, description="Free text kept on the ticket.")
    assignee: str | None = Field(default=None, max_length=200,
                                 description="For `assigned`: who gets it (default: actor).")


class TransitionConflict(BaseModel):
    """Body (``detail``) of a 409 answer."""

    error: Literal["invalid_transition"] = "invalid_transition"
    current: str
    requested: str
    allowed: list[str]


class HealthOut(_Out):
    """Latest camera health reported by a worker."""

    state: str = Field(description="starting, streaming, reconnecting, error or stopped.")
    last_frame_ts: float | None
    frames_decoded: int
    frames_dropped: int
    reconnects: int
    last_error: str | None
    updated_at: datetime

    @classmethod
    def of(cls, h: CameraHealthRow) -> HealthOut:
        """Build from an ORM row."""
        return cls.model_validate(h)


class CameraOut(BaseModel):
    """A camera from the site config with its latest health."""

    id: str
    name: str | None
    grid: str | None = Field(description="Grid cell code (null for cameras not in the config).")
    grid_path: list[str]
    enabled: bool
    configured: bool = Field(description="False for cameras that report health but are not configured.")
    zones: list[str]
    health: HealthOut | None


class DeadLetterOut(_Out):
    """A message the consumer could not use."""

    id: int
    topic: str
    payload_text: str
    reason: str
    received_at: datetime


class GridNodeOut(BaseModel):
    """A node of the grid tree with its count of active (not closed / false alarm) tickets."""

    code: str
    name: str
    level: str = Field(description="town, district, community or cell.")
    path: list[str]
    patrol: str | None
    active_tickets: int
    children: list[GridNodeOut]


class HealthzOut(BaseModel):
    """Liveness/readiness."""

    status: Literal["ok", "degraded"]
    database: bool
    mqtt: Literal["connected", "disconnected", "disabled"]


def dead_letter_out(d: DeadLetter) -> DeadLetterOut:
    """Build from an ORM row."""
    return DeadLetterOut.model_validate(d)
