"""Operators' verdicts on tickets: the training labels of the retraining loop (docs/retraining.md).

A verdict says whether the alert of a ticket was right (``confirmed``) or a ``false_alarm``; a confirmed
verdict may carry corrected boxes (normalised ``xyxy`` and a label), otherwise the boxes of the alert that
opened the ticket stand. Each verdict is stored with the SHA-256 of the ticket's raw frame
(``<evidence_dir>/<incident_id>/frame.jpg``, the un-annotated frame the detection ran on) at the time of the
verdict, so an export can tell that the frame it labels is the one the person judged.

Verdicts are history: every one is kept, the latest one of a ticket is its label. A ticket without a
verdict row is labelled by its case status (verified and later steps: confirmed with the alert's boxes;
``false_alarm``: a false alarm), so verdicts given through ``POST /tickets/{id}/transition`` count too.
Recording a verdict does not move the ticket (engineers, who may not move tickets, relabel frames too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from pipeline.tickets.models import Base, EventKind, Ticket, TicketEvent, TicketStatus, UTCDateTime, utcnow

RAW_FRAME = "frame.jpg"
"""File name of the raw frame in an incident's evidence folder (:class:`pipeline.alerts.evidence.EvidencePaths`)."""
CONFIRMED_STATUSES = frozenset({TicketStatus.VERIFIED, TicketStatus.DISPATCHED, TicketStatus.IN_PROGRESS,
                                TicketStatus.RESOLVED, TicketStatus.CHECKED, TicketStatus.CLOSED})
"""Case states that mean a person confirmed the alert (the label of a ticket without a verdict row)."""


class Verdict(StrEnum):
    """What a person said about an alert."""

    CONFIRMED = "confirmed"
    FALSE_ALARM = "false_alarm"


class TicketVerdict(Base):
    """One verdict on a ticket (migration 0007); the latest per ticket is its label."""

    __tablename__ = "ticket_verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    boxes: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    """Corrected boxes ``[{"label", "xyxy": [x1, y1, x2, y2]}]`` (0..1); None: the alert's boxes stand."""
    frame_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 of the raw frame when the verdict was given; None: no raw frame was stored."""
    source: Mapped[str] = mapped_column(String(32))
    """``api`` or the label tool an import came from (``import:cvat-yolo``, ``import:label-studio-coco``)."""
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class LabelBox:
    """A labelled box in normalised image coordinates."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    def as_json(self) -> dict[str, Any]:
        """The stored / API form ``{"label", "xyxy"}``."""
        return {"label": self.label, "xyxy": [self.x1, self.y1, self.x2, self.y2]}


@dataclass(frozen=True)
class LabelledFrame:
    """One ticket's label for the data set: what is in its raw frame, and where the label came from."""

    ticket_id: int
    incident_id: str
    camera_id: str
    hazard: str
    verdict: Verdict
    boxes: tuple[LabelBox, ...]
    corrected: bool
    """Boxes come from a person (a verdict or an import), not from the detector."""
    source: str
    """``verdict:<source>`` or ``status:<ticket status>``."""
    frame_sha256: str | None


def sha256_of(path: Path) -> str | None:
    """SHA-256 hex of a file, None when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def record_verdict(session: Session, ticket: Ticket, verdict: Verdict, boxes: list[LabelBox] | None,
                   evidence_dir: Path, actor: str | None, source: str = "api", note: str | None = None,
                   now: datetime | None = None) -> TicketVerdict:
    """Store a verdict on ``ticket`` with the hash of its raw frame (caller commits).

    Raises:
        ValueError: a false alarm with boxes, or a confirmed verdict with an empty box list.
    """
    if verdict is Verdict.FALSE_ALARM and boxes:
        raise ValueError("a false alarm has no boxes")
    if verdict is Verdict.CONFIRMED and boxes is not None and not boxes:
        raise ValueError("a confirmed verdict needs at least one box (omit boxes to keep the alert's)")
    row = TicketVerdict(ticket_id=ticket.id, verdict=verdict.value,
                        boxes=None if boxes is None else [b.as_json() for b in boxes],
                        frame_sha256=sha256_of(evidence_dir / ticket.incident_id / RAW_FRAME), source=source,
                        actor=actor, note=note, created_at=now or utcnow())
    session.add(row)
    session.flush()
    return row


def boxes_from_json(items: list[Any] | None) -> tuple[LabelBox, ...]:
    """Boxes from the stored form (``{"label", "xyxy"}``) or an alert's (``{"label", "x1", ...}``)."""
    out = []
    for b in items or []:
        x1, y1, x2, y2 = b["xyxy"] if "xyxy" in b else (b["x1"], b["y1"], b["x2"], b["y2"])
        out.append(LabelBox(str(b["label"]), float(x1), float(y1), float(x2), float(y2)))
    return tuple(out)


def _alert_boxes(session: Session, ticket: Ticket) -> tuple[LabelBox, ...]:
    """Boxes of the ``alert_opened`` event: the snapshot and raw frame are written on opening."""
    payloads = session.scalars(select(TicketEvent.payload).where(
        TicketEvent.ticket_id == ticket.id, TicketEvent.kind.in_(
            (EventKind.ALERT_OPENED.value, EventKind.ALERT_UPDATED.value))).order_by(TicketEvent.id)).all()
    for p in payloads:
        if p and p.get("boxes"):
            return boxes_from_json(p["boxes"])
    return boxes_from_json(ticket.boxes)


def labelled_frames(session: Session, hazards: list[str] | None = None) -> list[LabelledFrame]:
    """The label of every ticket a person judged (latest verdict, else its case status), by ticket id."""
    q = select(Ticket).order_by(Ticket.id)
    if hazards:
        q = q.where(Ticket.hazard.in_(hazards))
    latest: dict[int, TicketVerdict] = {}
    vq = select(TicketVerdict).order_by(TicketVerdict.id)
    if hazards:
        vq = vq.join(Ticket, Ticket.id == TicketVerdict.ticket_id).where(Ticket.hazard.in_(hazards))
    for row in session.scalars(vq):
        latest[row.ticket_id] = row
    out: list[LabelledFrame] = []
    for t in session.scalars(q):
        v = latest.get(t.id)
        if v is not None:
            verdict, source, sha = Verdict(v.verdict), f"verdict:{v.source}", v.frame_sha256
            corrected = v.boxes is not None
            boxes = boxes_from_json(v.boxes) if corrected else ()
        elif t.status in CONFIRMED_STATUSES or t.status == TicketStatus.FALSE_ALARM:
            verdict = Verdict.FALSE_ALARM if t.status == TicketStatus.FALSE_ALARM else Verdict.CONFIRMED
            source, sha, corrected, boxes = f"status:{t.status}", None, False, ()
        else:
            continue  # nobody has judged it yet
        if verdict is Verdict.CONFIRMED and not corrected:
            boxes = _alert_boxes(session, t)
        out.append(LabelledFrame(t.id, t.incident_id, t.camera_id, t.hazard, verdict,
                                 boxes if verdict is Verdict.CONFIRMED else (), corrected, source, sha))
    return out
