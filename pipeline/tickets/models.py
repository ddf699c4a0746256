"""SQLAlchemy 2 ORM models of the ticket store.

Tables: ``tickets`` (one per incident), ``ticket_events`` (alert events and status transitions,
unique per ``(ticket_id, message_key)`` so MQTT redelivery is idempotent), ``dead_letters`` (payloads the
consumer could not use), ``camera_health`` (latest retained health message per camera),
``incident_aliases`` (incidents attached to an already open ticket of the same camera, zone and hazard) and
``worker_sequences`` (last alert sequence number seen per worker, for loss detection).

All datetimes are timezone-aware UTC in Python; they are stored as naive UTC so SQLite and PostgreSQL
behave the same (see :class:`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime column stored as naive UTC and returned as aware UTC."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to naive UTC (naive input is taken as UTC)."""
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to the stored naive datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """Current time, aware UTC."""
    return datetime.now(UTC)


class TicketStatus(StrEnum):
    """Where a ticket stands in its case life cycle (GB/T 30428 steps; see :mod:`pipeline.tickets.lifecycle`)."""

    RECEIVED = "received"
    VERIFIED = "verified"
    DISPATCHED = "dispatched"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CHECKED = "checked"
    CLOSED = "closed"
    FALSE_ALARM = "false_alarm"


class EventKind(StrEnum):
    """Kinds of ticket history rows."""

    ALERT_OPENED = "alert_opened"
    ALERT_UPDATED = "alert_updated"
    ALERT_CLEARED = "alert_cleared"
    INCIDENT_ATTACHED = "incident_attached"
    TRANSITION = "transition"
    PROOF = "proof"
    OVERDUE = "overdue"
    ESCALATED = "escalated"
    CAMERA_CHECK = "camera_check"
    RESIDENT_REPORT = "resident_report"


class Base(DeclarativeBase):
    """Declarative base of the ticket store."""


class Ticket(Base):
    """One ticket per incident (``incident_id`` is unique)."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_status_opened", "status", "opened_at"),
        Index("ix_tickets_grid_path", "grid_path"),
        Index("ix_tickets_opened_at", "opened_at"),
        Index("ix_tickets_place", "camera_id", "hazard", "zone_id"),  # duplicate-open guard lookup
        Index("ix_tickets_due_at", "due_at"),
        Index("ix_tickets_closed_at", "closed_at"),
        UniqueConstraint("incident_id", name="uq_tickets_incident_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(200), nullable=False)
    hazard: Mapped[str] = mapped_column(String(32), index=True)
    severity: Mapped[int] = mapped_column(Integer, default=3)
    status: Mapped[str] = mapped_column(String(32), default=TicketStatus.RECEIVED.value)
    camera_id: Mapped[str] = mapped_column(String(100), index=True)
    camera_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    grid_l1: Mapped[str] = mapped_column(String(64))
    grid_l2: Mapped[str] = mapped_column(String(64))
    grid_l3: Mapped[str] = mapped_column(String(64))
    grid_l4: Mapped[str] = mapped_column(String(64))
    grid_path: Mapped[str] = mapped_column(String(300))
    zone_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    title: Mapped[str] = mapped_column(String(300))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_event: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    snapshot_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    clip_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    boxes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    assignee: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Case life cycle (migration 0004): when each step was first reached, the deadline now running and
    # how far up the grid the ticket has been escalated (0: its cell, 1: community, 2: district, 3: town).
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    due_stage: Mapped[str | None] = mapped_column(String(16), nullable=True)
    overdue: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    source: Mapped[str] = mapped_column(String(16), default="camera", server_default="camera")
    """``camera`` (opened by an alert) or ``resident`` (a QR report, :mod:`pipeline.tickets.resident`)."""
    # Migration 0006: the camera check timed out, a dispatcher checks by hand (cleared on leaving resolved).
    manual_check: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    events: Mapped[list[TicketEvent]] = relationship(
        back_populates="ticket", order_by="TicketEvent.id", cascade="all, delete-orphan"
    )


class TicketEvent(Base):
    """History row of a ticket: an alert event or a status transition."""

    __tablename__ = "ticket_events"
    __table_args__ = (UniqueConstraint("ticket_id", "message_key", name="uq_ticket_events_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    message_key: Mapped[str] = mapped_column(String(300))
    from_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    ticket: Mapped[Ticket] = relationship(back_populates="events")


class DeadLetter(Base):
    """An MQTT message the consumer could not turn into a ticket event."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    payload_text: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class CameraHealthRow(Base):
    """Latest health of one camera, from its retained ``<prefix>/health/<camera_id>`` message."""

    __tablename__ = "camera_health"

    camera_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    last_frame_ts: Mapped[float | None] = mapped_column(Float, nullable=True)
    frames_decoded: Mapped[int] = mapped_column(Integer, default=0)
    frames_dropped: Mapped[int] = mapped_column(Integer, default=0)
    reconnects: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IncidentAlias(Base):
    """An incident whose events go to an earlier ticket: when it opened, that ticket (same camera, zone and
    hazard) was still active, e.g. because a restarted worker re-detected the same parked car."""

    __tablename__ = "incident_aliases"

    incident_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    attached_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerSequence(Base):
    """Highest alert ``seq`` applied per worker and the totals of missing and late numbers."""

    __tablename__ = "worker_sequences"

    worker_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    missing_total: Mapped[int] = mapped_column(BigInteger, default=0)
    late_total: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TicketAttachment(Base):
    """A file a person uploaded to a ticket (``kind`` ``proof``: the patrol's photo of the fix), stored under
    ``<evidence_dir>/tickets/<ticket_id>/<name>`` and served with the ticket's scope checks."""

    __tablename__ = "ticket_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class CameraCheck(Base):
    """One camera re-check of a resolved ticket: the request sent to the worker and, later, its result."""

    __tablename__ = "camera_checks"

    check_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    camera_id: Mapped[str] = mapped_column(String(100))
    window_seconds: Mapped[float] = mapped_column(Float)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    snapshot_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    timed_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the service stopped waiting (``casework.check_timeout_seconds``); a late result is still stored."""


class Notification(Base):
    """Outbox of MQTT notifications (``NotificationV1`` on ``<prefix>/notify/<grid path>``): written in the
    transaction of the change, published (and stamped) by the case loop, so a broker outage loses none."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    grid_path: Mapped[str] = mapped_column(String(300))
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ServiceLock(Base):
    """A named lease (Unix seconds) for jobs that must run in one replica at a time on SQLite; PostgreSQL
    uses an advisory lock instead (see :mod:`pipeline.tickets.escalation`)."""

    __tablename__ = "service_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    last_run_at: Mapped[float | None] = mapped_column(Float, nullable=True)


# The user, token and audit tables live in their own module; importing it here puts them on Base.metadata
# wherever the ticket tables are (migrations, schema comparisons).
from pipeline.tickets import gaps as _gaps  # noqa: E402,F401
from pipeline.tickets import resident_models as _resident_models  # noqa: E402,F401
from pipeline.tickets import site_plan_models as _site_plan_models  # noqa: E402,F401
from pipeline.tickets import users as _users  # noqa: E402,F401
from pipeline.tickets import verdicts as _verdicts  # noqa: E402,F401
from pipeline.tickets import webhooks as _webhooks  # noqa: E402,F401
