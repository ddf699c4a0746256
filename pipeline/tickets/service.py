"""Ticket life cycle and the idempotent application of alert events.

The case life cycle lives in :mod:`pipeline.tickets.lifecycle` (states, :data:`TRANSITIONS`) and
:mod:`pipeline.tickets.moves` (:func:`transition`, re-exported here); a new ticket gets its deadline and
automatic dispatch there (:func:`~pipeline.tickets.moves.on_created`, when ``apply_alert`` has a ``ctx``).

Alert events never change the status: ``opened`` creates the ticket (a later ``opened`` for the same
incident changes nothing), ``updated`` refreshes confidence/boxes/evidence, ``cleared`` sets
``cleared_at`` but leaves closing to a person. Each event is stored once per ``(ticket, message_key)``;
the unique constraints on ``tickets.incident_id`` and ``ticket_events`` make this hold when several
consumers race (the loser's transaction fails with ``IntegrityError`` and is retried, then sees the row).

Duplicate-open guard: a new incident whose camera, zone and hazard already have an *active* ticket
(received, verified, dispatched or in progress, not cleared) does not open a second ticket. It is attached
to that ticket (an ``incident_attached`` event and an ``incident_aliases`` row, so its later events land there too;
outcome ``attached``). This is what a restarted worker produces when it re-detects the parked car whose
incident it lost. Two replicas racing on the very first alert of two such incidents can still open two.

Every applied alert also goes through :func:`~pipeline.tickets.sequence.track_sequence` in the same
transaction (lost-alert detection by per-worker ``seq``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.tickets.deadlines import CaseContext
from pipeline.tickets.lifecycle import ACTIVE, TRANSITIONS, TransitionError, allowed_next
from pipeline.tickets.limits import DEFAULT_LIMITS, PayloadLimits, storable
from pipeline.tickets.models import (
    CameraHealthRow,
    DeadLetter,
    EventKind,
    IncidentAlias,
    Ticket,
    TicketEvent,
    TicketStatus,
    utcnow,
)
from pipeline.tickets.moves import TicketNotFoundError, on_created, transition
from pipeline.tickets.payload import AlertIn, HealthIn
from pipeline.tickets.sequence import NO_SEQUENCE, SequenceCheck, track_sequence

log = logging.getLogger(__name__)

__all__ = ["ACTIVE", "TRANSITIONS", "ApplyResult", "TicketNotFoundError", "TransitionError", "allowed_next",
           "apply_alert", "record_dead_letter", "transition", "upsert_camera_health"]

Outcome = Literal["created", "updated", "cleared", "duplicate", "ignored", "attached"]
_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class ApplyResult:
    """What applying one alert did.

    Attributes:
        ticket_id: the ticket the alert went to.
        outcome: created, updated, cleared, duplicate (redelivery), ignored or attached (guard).
        sequence: what its ``seq`` says about lost alerts.
    """

    ticket_id: int
    outcome: Outcome
    sequence: SequenceCheck = NO_SEQUENCE


def _title(alert: AlertIn) -> str:
    """``<hazard> at <camera> / <zone>``; a scene's display name (``hazard_name``) stands for its hazard and
    zone: ``消防通道占用 at North gate``."""
    where = alert.camera.name or alert.camera.id
    what = alert.hazard_name or alert.hazard.value.replace("_", " ").capitalize()
    if alert.zone is not None and not (alert.hazard_name and alert.zone.name == alert.hazard_name):
        where += f" / {alert.zone.name or alert.zone.id}"
    return f"{what} at {where}"[:300]


def _event_kind(alert: AlertIn) -> str:
    return {"opened": EventKind.ALERT_OPENED, "updated": EventKind.ALERT_UPDATED,
            "cleared": EventKind.ALERT_CLEARED}[alert.event].value


def _new_ticket(alert: AlertIn) -> Ticket:
    p = alert.grid.path
    return Ticket(
        incident_id=alert.incident_id, hazard=alert.hazard.value, severity=alert.severity,
        status=TicketStatus.RECEIVED.value, camera_id=alert.camera.id,
        camera_name=alert.camera.name[:200] if alert.camera.name is not None else None,
        grid_l1=p[0], grid_l2=p[1], grid_l3=p[2], grid_l4=p[3], grid_path="/".join(p),
        zone_id=alert.zone.id if alert.zone else None, title=_title(alert), started_at=alert.started_at,
        opened_at=alert.ts, updated_at=alert.ts,
        cleared_at=alert.ts if alert.event == "cleared" else None, last_event=alert.event,
        confidence=alert.confidence, snapshot_url=alert.evidence.snapshot_url,
        clip_url=alert.evidence.clip_url, boxes=[b.model_dump() for b in alert.boxes],
        details=dict(alert.details),
    )


def _refresh(ticket: Ticket, alert: AlertIn) -> None:
    """Apply an updated/cleared event's data; older events only fill gaps."""
    if alert.evidence.snapshot_url and not ticket.snapshot_url:
        ticket.snapshot_url = alert.evidence.snapshot_url
    if alert.evidence.clip_url:
        ticket.clip_url = alert.evidence.clip_url
    if alert.event == "cleared":
        ticket.cleared_at = alert.ts
    if alert.ts < ticket.updated_at:
        return
    ticket.updated_at = alert.ts
    ticket.last_event = alert.event
    ticket.severity = max(ticket.severity, alert.severity)
    ticket.confidence = max(ticket.confidence, alert.confidence)
    if alert.boxes:
        ticket.boxes = [b.model_dump() for b in alert.boxes]
    if alert.details:
        ticket.details = {**ticket.details, **alert.details}


def _alias_key(alert: AlertIn) -> str:
    """Event key of an attached incident: its id keeps it apart from the ticket's own incident."""
    return f"{alert.incident_id}:{alert.message_key}"


def _find_ticket(session: Session, alert: AlertIn) -> tuple[Ticket | None, str]:
    """The ticket of the alert's incident (own or attached) and the event key to use there."""
    ticket = session.scalars(
        select(Ticket).where(Ticket.incident_id == alert.incident_id).with_for_update()).first()
    if ticket is not None:
        return ticket, alert.message_key
    alias = session.get(IncidentAlias, alert.incident_id)
    if alias is None:
        return None, alert.message_key
    ticket = session.scalars(select(Ticket).where(Ticket.id == alias.ticket_id).with_for_update()).first()
    return ticket, _alias_key(alert)


def _active_ticket_at(session: Session, alert: AlertIn) -> Ticket | None:
    """The newest active, uncleared ticket of the alert's camera, zone and hazard."""
    zone = Ticket.zone_id.is_(None) if alert.zone is None else Ticket.zone_id == alert.zone.id
    return session.scalars(
        select(Ticket).where(Ticket.camera_id == alert.camera.id, Ticket.hazard == alert.hazard.value, zone,
                             Ticket.status.in_(ACTIVE), Ticket.cleared_at.is_(None))
        .order_by(Ticket.id.desc()).limit(1).with_for_update()).first()


def _attach(session: Session, ticket: Ticket, alert: AlertIn, payload: dict[str, Any]) -> None:
    """Attach a new incident to ``ticket`` (see the module docstring) and apply its first event."""
    log.warning("incident %s attached to active ticket %d (incident %s) of the same camera, zone and hazard",
                alert.incident_id, ticket.id, ticket.incident_id)
    session.add(IncidentAlias(incident_id=alert.incident_id, ticket_id=ticket.id, attached_at=utcnow()))
    note = (f"incident {alert.incident_id} ({alert.event}) attached: this camera, zone and hazard already "
            f"had this ticket open")
    attach_key = _alias_key(alert) if alert.event == "opened" else f"{alert.incident_id}:attached"
    session.add(TicketEvent(ticket_id=ticket.id, kind=EventKind.INCIDENT_ATTACHED.value, message_key=attach_key,
                            note=note, ts=alert.ts, payload=payload))
    if alert.event != "opened":
        session.add(TicketEvent(ticket_id=ticket.id, kind=_event_kind(alert), message_key=_alias_key(alert),
                                ts=alert.ts, payload=payload))
    _refresh(ticket, alert)
    session.flush()


def _apply_event(session: Session, alert: AlertIn, payload: dict[str, Any],
                 ctx: CaseContext | None = None) -> ApplyResult:
    ticket, key = _find_ticket(session, alert)
    event = TicketEvent(kind=_event_kind(alert), message_key=key, ts=alert.ts, payload=payload)
    if ticket is None:
        active = _active_ticket_at(session, alert)
        if active is not None and active.incident_id == alert.incident_id:
            # A concurrent consumer created this incident's ticket between the two queries (SQLite
            # reads outside a write transaction see each commit at once).
            ticket = active
        elif active is not None:
            _attach(session, active, alert, payload)
            return ApplyResult(active.id, "attached")
    if ticket is None:
        ticket = _new_ticket(alert)
        session.add(ticket)
        session.flush()
        event.ticket_id = ticket.id
        session.add(event)
        session.flush()
        if ctx is not None:
            on_created(session, ticket, ctx)
        return ApplyResult(ticket.id, "created")
    seen = session.scalar(select(TicketEvent.id).where(TicketEvent.ticket_id == ticket.id,
                                                       TicketEvent.message_key == key))
    if seen is not None:
        return ApplyResult(ticket.id, "duplicate")
    if alert.event == "opened":
        return ApplyResult(ticket.id, "ignored")
    event.ticket_id = ticket.id
    session.add(event)
    _refresh(ticket, alert)
    session.flush()
    return ApplyResult(ticket.id, "cleared" if alert.event == "cleared" else "updated")


def _apply(session: Session, alert: AlertIn, payload: dict[str, Any], ctx: CaseContext | None) -> ApplyResult:
    result = _apply_event(session, alert, payload, ctx)
    check = track_sequence(session, alert.worker_id, alert.seq, redelivery=result.outcome == "duplicate")
    session.flush()
    return ApplyResult(result.ticket_id, result.outcome, check)


def apply_alert(sessions: sessionmaker[Session], alert: AlertIn,
                payload: dict[str, Any] | None = None, ctx: CaseContext | None = None) -> ApplyResult:
    """Apply one alert in its own transaction, idempotently.

    Args:
        sessions: session factory.
        alert: the parsed alert.
        payload: JSON stored with the event (defaults to the alert's dump).
        ctx: case rules applied to a new ticket (deadline, notification, automatic dispatch); None: none.

    Returns:
        The ticket id and the outcome.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed (the caller must not acknowledge).
    """
    data = payload if payload is not None else alert.model_dump(mode="json")
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            with sessions() as session, session.begin():
                return _apply(session, alert, data, ctx)
        except IntegrityError:
            # A concurrent consumer inserted the same ticket/event first; the retry will see it.
            if attempt == _MAX_ATTEMPTS:
                raise
            log.debug("integrity race on incident %s, retrying", alert.incident_id)
    raise AssertionError("unreachable")


def record_dead_letter(sessions: sessionmaker[Session], topic: str, payload: bytes, reason: str,
                       limits: PayloadLimits = DEFAULT_LIMITS) -> int:
    """Store an unusable message, bounded: a prefix of the payload, a truncated reason; returns its id.

    Text is made storable (lone surrogates and NUL replaced), so a dead letter can always be written
    while the database is up: a message that cannot even be dead-lettered would be redelivered forever.
    """
    kept = payload[:limits.dead_letter_payload_bytes]
    if len(kept) < len(payload):
        reason = f"{reason} [payload {len(payload)} bytes, first {len(kept)} kept]"
    with sessions() as session, session.begin():
        row = DeadLetter(topic=storable(topic[:1000]), payload=kept,
                         reason=storable(reason[:limits.dead_letter_reason_chars]),
                         payload_text=storable(kept.decode("utf-8", errors="replace")[:10_000]),
                         received_at=utcnow())
        session.add(row)
        session.flush()
        return row.id


def upsert_camera_health(sessions: sessionmaker[Session], camera_id: str, health: HealthIn,
                         now: datetime | None = None) -> None:
    """Insert or replace the latest health row of a camera."""
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            with sessions() as session, session.begin():
                row = session.get(CameraHealthRow, camera_id, with_for_update=True)
                if row is None:
                    row = CameraHealthRow(camera_id=camera_id)
                    session.add(row)
                row.state = health.state
                row.last_frame_ts = health.last_frame_ts
                row.frames_decoded = health.frames_decoded
                row.frames_dropped = health.frames_dropped
                row.reconnects = health.reconnects
                row.last_error = health.last_error
                row.updated_at = now or utcnow()
            return
        except IntegrityError:
            if attempt == _MAX_ATTEMPTS:
                raise
