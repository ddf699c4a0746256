"""Resident reports (一楼一码): a report made through a QR code becomes a ticket in the code's grid cell.

:func:`file_report` runs in the caller's transaction: it locks the code's row (so two reports through
one code are counted one after the other), applies the rate limits (``api.resident``), opens a ticket with
``source = resident`` (hazard from the category, :data:`CATEGORIES`), stores the photo like an alert's
evidence (``<evidence_dir>/<incident_id>/snapshot.jpg``, which the wall shows as the snapshot) and as an
attachment of kind ``resident``, records a ``resident_report`` event and applies the case rules of a new
ticket (deadline, notification, automatic dispatch). The resident gets a tracking token; only its SHA-256
is stored. :func:`tracking_view` is what the public tracking page may show: the place, the category, the
resident's own description and the steps with their times; no staff names, no notes, no phone number.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.config_resident import ResidentConfig
from pipeline.contract.enums import Hazard
from pipeline.tickets.deadlines import CaseContext
from pipeline.tickets.lifecycle import STATE_LABELS
from pipeline.tickets.models import EventKind, Ticket, TicketAttachment, TicketEvent, TicketStatus
from pipeline.tickets.moves import on_created
from pipeline.tickets.resident_image import CleanPhoto
from pipeline.tickets.resident_models import ReportCode, ResidentReport
from pipeline.tickets.users import audit

CATEGORIES: dict[str, tuple[str, str, Hazard]] = {
    "pile": ("堆物", "Piled objects", Hazard.CLUTTER),
    "flyer": ("小广告", "Flyers", Hazard.POSTER),
    "parking": ("违停", "Illegal parking", Hazard.PARKING),
    "fire_risk": ("消防隐患", "Fire risk", Hazard.FIRE),
    "other": ("其他", "Other", Hazard.CLUTTER),
}
"""Category -> (Chinese label, English label, the ticket's hazard). ``other`` goes to the clutter queue
(the hazards are the MQTT contract's; a dispatcher reads the category in ``details``)."""
SEVERITY = 3
"""Severity of a resident ticket (a person's report, not a measured detection)."""
CAMERA_ID = "resident"
"""``camera_id`` of resident tickets (no camera: no camera check is ever queued for them)."""
ATTACHMENT_KIND = "resident"
RefusalReason = Literal["unknown_code", "rate_address", "rate_code", "photo_too_large", "photo_type",
                        "photo_pixels", "photo_polyglot", "photo_missing", "text_invalid", "form_invalid"]
REFUSAL_REASONS: tuple[str, ...] = RefusalReason.__args__  # type: ignore[attr-defined]


class ResidentMetrics:
    """``gridwatch_resident_reports_total`` (accepted) and ``gridwatch_resident_reports_refused_total{reason}``.

    Args:
        registry: the ticket service's registry (``/metrics``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter("gridwatch_resident_reports_total", "Resident reports accepted (tickets opened).",
                                ["category"], registry=registry)
        self.refused = Counter("gridwatch_resident_reports_refused_total",
                               "Resident reports refused, by reason.", ["reason"], registry=registry)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)
        for category in CATEGORIES:
            self.accepted.labels(category)


class ReportRefusedError(Exception):
    """A report that is not taken.

    Attributes:
        reason: the metric label.
        status: the HTTP status to answer.
    """

    def __init__(self, reason: RefusalReason, status: int, message: str) -> None:
        super().__init__(message)
        self.reason: RefusalReason = reason
        self.status = status


@dataclass(frozen=True)
class FiledReport:
    """What :func:`file_report` opened."""

    ticket_id: int
    tracking_token: str


def token_hash(token: str) -> str:
    """SHA-256 hex of a tracking token (the form stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def active_code(session: Session, token: str, lock: bool = False) -> ReportCode | None:
    """The enabled code of ``token`` (locked for update when asked), or None."""
    q = select(ReportCode).where(ReportCode.token == token, ReportCode.enabled.is_(True))
    return session.scalars(q.with_for_update() if lock else q).first()


def _check_limits(session: Session, code: ReportCode, client: str | None, cfg: ResidentConfig,
                  now: datetime) -> None:
    per_code = session.scalar(select(func.count()).select_from(ResidentReport).where(
        ResidentReport.code_id == code.id, ResidentReport.created_at >= now - timedelta(days=1))) or 0
    if per_code >= cfg.max_reports_per_code_per_day:
        raise ReportRefusedError("rate_code", 429, "this code has taken its reports for today; please call "
                                 "the community office")
    if client is not None:
        per_address = session.scalar(select(func.count()).select_from(ResidentReport).where(
            ResidentReport.client_address == client,
            ResidentReport.created_at >= now - timedelta(hours=1))) or 0
        if per_address >= cfg.max_reports_per_address_per_hour:
            raise ReportRefusedError("rate_address", 429, "too many reports from your network in the last hour; "
                                     "please try again later")


def _write(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)


def file_report(session: Session, *, token: str, category: str, description: str, phone: str | None,
                photo: CleanPhoto | None, client: str | None, now: datetime, cfg: ResidentConfig,
                ctx: CaseContext, evidence_dir: Path) -> FiledReport:
    """Open the ticket of one resident report (in the caller's transaction; see the module docstring).

    Raises:
        ReportRefusedError: unknown or disabled code (404), a rate limit (429).
    """
    code = active_code(session, token, lock=True)
    if code is None:
        raise ReportRefusedError("unknown_code", 404, "unknown or disabled report code")
    _check_limits(session, code, client, cfg, now)
    zh, _, hazard = CATEGORIES[category]
    path = code.grid_path.split("/")
    incident_id = f"resident-{uuid.uuid4().hex[:20]}"
    details: dict[str, Any] = {"source": "resident", "category": category, "category_label": zh,
                               "description": description, "place": code.place, "report_code_id": code.id,
                               "contact_phone": phone, "photo": photo is not None}
    ticket = Ticket(incident_id=incident_id, hazard=hazard.value, severity=SEVERITY,
                    status=TicketStatus.RECEIVED.value, camera_id=CAMERA_ID, camera_name=code.place,
                    grid_l1=path[0], grid_l2=path[1], grid_l3=path[2], grid_l4=path[3], grid_path=code.grid_path,
                    zone_id=None, title=f"居民上报 · {zh} · {code.place}"[:300], started_at=now, opened_at=now,
                    updated_at=now, last_event="opened", confidence=0.0, boxes=[], details=details,
                    source="resident")
    session.add(ticket)
    session.flush()
    event = TicketEvent(ticket_id=ticket.id, kind=EventKind.RESIDENT_REPORT.value, message_key="resident:report",
                        ts=now, note=f"resident report: {zh} at {code.place}",
                        payload={"category": category, "description": description, "place": code.place,
                                 "report_code_id": code.id, "photo": photo is not None})
    session.add(event)
    session.flush()
    if photo is not None:
        digest = hashlib.sha256(photo.jpeg).hexdigest()
        name = f"resident-{digest[:16]}.jpg"
        _write(evidence_dir / incident_id, "snapshot.jpg", photo.jpeg)
        _write(evidence_dir / "tickets" / str(ticket.id), name, photo.jpeg)
        ticket.snapshot_url = f"/tickets/{ticket.id}/evidence/snapshot"
        session.add(TicketAttachment(ticket_id=ticket.id, kind=ATTACHMENT_KIND, name=name, content_type="image/jpeg",
                                     size_bytes=len(photo.jpeg), sha256=digest, uploaded_by=None, uploaded_at=now,
                                     event_id=event.id))
    tracking = secrets.token_urlsafe(18)
    session.add(ResidentReport(code_id=code.id, ticket_id=ticket.id, tracking_hash=token_hash(tracking),
                               category=category, client_address=client, phone=phone, created_at=now))
    audit(session, None, "resident.report", f"ticket:{ticket.id}", client, now=now, report_code_id=code.id,
          category=category, photo=photo is not None)
    on_created(session, ticket, ctx)
    session.flush()
    return FiledReport(ticket.id, tracking)


PUBLIC_STEPS = (TicketStatus.RECEIVED, TicketStatus.VERIFIED, TicketStatus.DISPATCHED, TicketStatus.IN_PROGRESS,
                TicketStatus.RESOLVED, TicketStatus.CHECKED, TicketStatus.CLOSED)
"""The steps the tracking page draws, in order (a false alarm is shown as its own end)."""


def tracking_view(session: Session, tracking_token: str) -> dict[str, Any] | None:
    """What the public tracking page shows of the report with ``tracking_token`` (None: no such report)."""
    row = session.scalars(select(ResidentReport).where(
        ResidentReport.tracking_hash == token_hash(tracking_token))).first()
    if row is None:
        return None
    ticket = session.get(Ticket, row.ticket_id)
    code = session.get(ReportCode, row.code_id)
    if ticket is None or code is None:
        return None
    moves = session.execute(select(TicketEvent.to_status, TicketEvent.ts).where(
        TicketEvent.ticket_id == ticket.id, TicketEvent.kind == EventKind.TRANSITION.value)
        .order_by(TicketEvent.id)).all()
    labels = {s.value: {"zh": zh, "en": en} for s, (zh, en) in STATE_LABELS.items()}
    history = [{"status": TicketStatus.RECEIVED.value, "at": row.created_at.isoformat()}]
    history += [{"status": to, "at": ts.isoformat()} for to, ts in moves if to in labels]
    zh, en, _ = CATEGORIES.get(row.category, CATEGORIES["other"])
    description = (ticket.details or {}).get("description") or ""
    return {"place": code.place, "category": row.category, "category_label": {"zh": zh, "en": en},
            "description": description if isinstance(description, str) else "",
            "submitted_at": row.created_at.isoformat(), "status": ticket.status,
            "finished": ticket.status in (TicketStatus.CLOSED.value, TicketStatus.FALSE_ALARM.value),
            "steps": [s.value for s in PUBLIC_STEPS], "labels": labels, "history": history}
