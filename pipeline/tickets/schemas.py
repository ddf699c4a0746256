"""Pydantic request/response models of the ticket REST API, and the bounds of its inputs.

The bounds keep every input inside what both databases hold, so a bad value is a 422 naming the limit,
never a 500 from the driver: ids fit the 32-bit id columns (``ID_MAX``), offsets a signed 64-bit integer
(``DB_INT_MAX``), query
times are ISO-8601 date-times of the years 1970-2999 (``TIME_PATTERN``; no epoch numbers, no year 1 or
9999 that overflow when converted to UTC), and text has no NUL (PostgreSQL refuses it) and no lone
surrogate (not encodable as UTF-8). Each bound is also in the OpenAPI document, so clients and
schemathesis see the same contract the server enforces.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from pipeline.analyze.incident import Hazard
from pipeline.tickets.models import CameraHealthRow, DeadLetter, Ticket, TicketEvent, TicketStatus
from pipeline.tickets.service import allowed_next

DB_INT_MAX = 2**63 - 1
"""Largest offset accepted: the signed 64-bit limit of SQLite integers and PostgreSQL ``OFFSET`` (bigint)."""
ID_MAX = 2**31 - 1
"""Largest id accepted: ids are ``INTEGER`` columns, 32-bit on PostgreSQL (psycopg binds the id as that type)."""

TIME_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-"
"""Query times must start with a year 1970-2999 (``[0-9]``, not ``\\d``, which also matches non-ASCII digits)."""

NO_NUL_PATTERN = r"^[^\x00]*$"
"""Free text: anything but NUL (PostgreSQL cannot store it); pydantic's matcher also refuses lone surrogates."""

_TIME_RE = re.compile(TIME_PATTERN)


def _check_time_text(value: object) -> object:
    """Refuse query times outside 1970-2999 (and epoch numbers) before pydantic parses them."""
    if isinstance(value, str) and not _TIME_RE.match(value):
        raise ValueError("expected an ISO-8601 date-time of the years 1970-2999, e.g. 2024-05-01T08:00:00Z "
                         "(no zone = UTC)")
    return value


def _to_utc(value: datetime | None) -> datetime | None:
    """Naive means UTC; aware times are converted (cannot overflow inside 1970-2999)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


OptionalQueryTime = Annotated[datetime | None, BeforeValidator(_check_time_text), AfterValidator(_to_utc)]
"""A ``since``/``until`` query time: ISO-8601, years 1970-2999, returned as aware UTC (or None)."""


def enum_list_pattern(values: list[str]) -> str:
    """Pattern of one query value holding one or more of ``values`` separated by commas."""
    alt = "|".join(re.escape(v) for v in values)
    return rf"^({alt})(,({alt}))*$"


STATUS_LIST_PATTERN = enum_list_pattern([s.value for s in TicketStatus])
HAZARD_LIST_PATTERN = enum_list_pattern([h.value for h in Hazard])


class ErrorOut(BaseModel):
    """Body of a 400 or 404 answer."""

    detail: str = Field(description="What was wrong, e.g. `ticket 7 not found`.")


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
    verified_at: datetime | None = Field(default=None, description="First verification (核实).")
    dispatched_at: datetime | None = Field(default=None, description="First dispatch (派遣).")
    resolved_at: datetime | None = Field(default=None, description="Last resolve with proof.")
    checked_at: datetime | None = Field(default=None, description="Check passed (核查).")
    closed_at: datetime | None = Field(default=None, description="Closed (结案) or marked a false alarm.")
    due_stage: str | None = Field(default=None, description="The deadline running: verify, dispatch or "
                                  "resolve (null: none).")
    due_at: datetime | None = Field(default=None, description="When it passes.")
    overdue: bool = Field(default=False, description="The running deadline has passed.")
    escalation_level: int = Field(default=0, description="How far up the grid the overdue case went: 0 cell, "
                                  "1 community, 2 district, 3 town.")
    escalated_to: list[str] | None = Field(default=None, description="The grid node notified last (overdue only).")
    reopen_count: int = Field(default=0, description="Times the case was reopened.")
    manual_check: bool = Field(default=False, description="The camera check got no answer in time "
                               "(`camera_check: timeout`): a dispatcher checks this resolved ticket by hand.")
    source: str = Field(default="camera", description="`camera` (opened by an alert) or `resident` (a QR "
                        "report; `details` holds its category, description and place).")

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
            verified_at=t.verified_at, dispatched_at=t.dispatched_at, resolved_at=t.resolved_at,
            checked_at=t.checked_at, closed_at=t.closed_at, due_stage=t.due_stage, due_at=t.due_at,
            source=t.source or "camera", overdue=bool(t.overdue), escalation_level=t.escalation_level or 0,
            escalated_to=[t.grid_l1, t.grid_l2, t.grid_l3, t.grid_l4][: 4 - (t.escalation_level or 0)]
            if t.overdue else None, reopen_count=t.reopen_count or 0, manual_check=bool(t.manual_check),
        )


class EventOut(_Out):
    """One history row of a ticket."""

    id: int
    kind: str = Field(description="alert_opened, alert_updated, alert_cleared, incident_attached, transition, "
                      "proof, overdue, escalated, camera_check or resident_report.")
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
    """A status change request (the actor is the logged-in user; an `actor` field in the body is ignored)."""

    to: TicketStatus = Field(description="Target status.")
    note: str | None = Field(default=None, max_length=4000, pattern=NO_NUL_PATTERN,
                             description="Free text kept on the ticket; required to resolve (what was done) "
                             "and to reopen (why).")
    assignee: str | None = Field(default=None, max_length=200, pattern=NO_NUL_PATTERN,
                                 description="For `dispatched`: a patrol user of the ticket's cell (default: the "
                                 "one with the fewest open tickets).")


class TransitionConflict(BaseModel):
    """The ``detail`` of a 409 answer."""

    error: Literal["invalid_transition"] = "invalid_transition"
    current: str = Field(description="The ticket's status.")
    requested: str = Field(description="The status asked for.")
    allowed: list[str] = Field(description="Statuses allowed from `current`.")
    reason: str | None = Field(default=None, description="When the move is allowed but something it needs is "
                               "missing (proof photo, note, a patrol user of the cell): what.")


class TransitionConflictOut(BaseModel):
    """Body of a 409 answer: ``{"detail": {"error": "invalid_transition", ...}}``."""

    detail: TransitionConflict


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
