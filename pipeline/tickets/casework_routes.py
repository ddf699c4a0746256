"""Routes of the case life cycle: state labels, proof photos, camera checks and performance figures.

* ``GET /meta/states``: every state with its Chinese and English label and its allowed next states.
* ``POST /tickets/{id}/proof``: a proof photo (raw JPEG or PNG body) from the patrol user working the
  ticket (or a dispatcher/admin), while it is in progress; stored under
  ``<evidence_dir>/tickets/<id>/`` and recorded as a ``proof`` event. Resolving needs one.
* ``GET /tickets/{id}/attachments`` and ``GET /tickets/{id}/attachments/{attachment_id}``: the proofs,
  with the ticket's scope check.
* ``GET /tickets/{id}/camera-checks``: the camera re-checks of a ticket and their results.
* ``GET /stats``: closure rate, on-time closure rate, medians, false-alarm share (:mod:`.stats`).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from pipeline.tickets.api_contract import TicketIdPath, error_responses
from pipeline.tickets.auth import CurrentUser, Principal
from pipeline.tickets.auth_routes import AUTH_ERRORS
from pipeline.tickets.lifecycle import STATE_LABELS, allowed_next
from pipeline.tickets.models import (
    CameraCheck,
    EventKind,
    Ticket,
    TicketAttachment,
    TicketEvent,
    TicketStatus,
    utcnow,
)
from pipeline.tickets.roles import ticket_scope
from pipeline.tickets.schemas import ID_MAX, NO_NUL_PATTERN, TIME_PATTERN, OptionalQueryTime
from pipeline.tickets.stats import LEVELS, GroupStats, compute, grid_node
from pipeline.tickets.users import Role, audit

MAX_PROOF_BYTES = 10 * 1024 * 1024
"""Largest proof photo accepted (a phone JPEG is 2-5 MB)."""
PROOF_TYPES = {"image/jpeg": (b"\xff\xd8\xff", ".jpg"), "image/png": (b"\x89PNG\r\n\x1a\n", ".png")}
PROOF_STATES = (TicketStatus.IN_PROGRESS.value,)
"""Proof is taken while work is going on (resolving counts the proofs since the last move to in_progress)."""
AttachmentIdPath = Annotated[int, PathParam(ge=1, le=ID_MAX, description="Attachment id.")]
IMAGE_200: dict[int | str, dict[str, Any]] = {
    200: {"description": "The photo.", "content": {"image/jpeg": {}, "image/png": {}}}}


class StateOut(BaseModel):
    """One state of the case life cycle."""

    name: str = Field(description="The state's name in the API.")
    label_zh: str = Field(description="Chinese label for the UI (GB/T 30428 step).")
    label_en: str = Field(description="English label.")
    allowed_next: list[str] = Field(description="States it may move to.")


class AttachmentOut(BaseModel):
    """A file uploaded to a ticket."""

    id: int
    ticket_id: int
    kind: str = Field(description="`proof`: the patrol user's photo of the fix.")
    content_type: str
    size_bytes: int
    sha256: str
    uploaded_by: str | None
    uploaded_at: datetime
    url: str = Field(description="GET path of the file.")

    @classmethod
    def of(cls, a: TicketAttachment) -> AttachmentOut:
        """Build from an ORM row."""
        return cls(id=a.id, ticket_id=a.ticket_id, kind=a.kind, content_type=a.content_type,
                   size_bytes=a.size_bytes, sha256=a.sha256, uploaded_by=a.uploaded_by, uploaded_at=a.uploaded_at,
                   url=f"/tickets/{a.ticket_id}/attachments/{a.id}")


class CameraCheckOut(BaseModel):
    """A camera re-check of a resolved ticket."""

    check_id: str
    camera_id: str
    window_seconds: float
    requested_at: datetime
    published_at: datetime | None = Field(description="When the request went out over MQTT (null: queued).")
    outcome: str | None = Field(description="passed, failed, unavailable; null while waiting (or timed out "
                                "without any answer).")
    result_at: datetime | None
    snapshot_url: str | None
    detail: str | None
    timed_out_at: datetime | None = Field(description="When the service stopped waiting "
                                          "(`casework.check_timeout_seconds`); a result after it is `late`: "
                                          "stored here, the ticket not moved.")


class StatsOut(BaseModel):
    """Performance figures of one group (rates 0..1, null when there is nothing to divide)."""

    key: str = Field(description="The hazard, grid path, camera id, or `all`.")
    tickets: int = Field(description="Tickets opened in the range.")
    closed: int
    closed_on_time: int = Field(description="Closed without ever being overdue.")
    false_alarms: int
    open: int = Field(description="Not closed and not a false alarm.")
    closure_rate: float | None
    on_time_closure_rate: float | None
    false_alarm_share: float | None
    median_verify_seconds: float | None
    median_dispatch_seconds: float | None
    median_close_seconds: float | None


class StatsPage(BaseModel):
    """``GET /stats`` answer."""

    since: datetime | None
    until: datetime | None
    group_by: str
    level: str | None
    groups: list[StatsOut]


def _ticket_in_scope(session: Session, ticket_id: int, user: Principal) -> Ticket:
    t = session.get(Ticket, ticket_id)
    if t is None:
        raise HTTPException(404, f"ticket {ticket_id} not found")
    if not user.covers(t.grid_path):
        raise HTTPException(403, f"ticket {ticket_id} is outside your grid scope")
    return t


def install_casework_routes(app: FastAPI) -> None:
    """Add the routes of the module docstring to ``app`` (its ``state.tickets`` is the TicketState)."""

    def st(request: Request) -> Any:
        # The api module's TicketState (importing it here would be an import cycle).
        return request.app.state.tickets

    @app.get("/meta/states", response_model=list[StateOut], tags=["meta"], responses=AUTH_ERRORS)
    def states(user: CurrentUser) -> list[StateOut]:
        """The case life cycle's states with their labels, in life-cycle order."""
        return [StateOut(name=s.value, label_zh=zh, label_en=en, allowed_next=allowed_next(s.value))
                for s, (zh, en) in STATE_LABELS.items()]

    @app.post("/tickets/{ticket_id}/proof", response_model=AttachmentOut, status_code=201, tags=["tickets"],
              responses={**error_responses(404), **AUTH_ERRORS,
                         409: {"description": "The ticket is not in progress."},
                         413: {"description": f"Larger than {MAX_PROOF_BYTES} bytes."},
                         415: {"description": "Not a JPEG or PNG (by Content-Type and by its first bytes)."}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  t: {"schema": {"type": "string", "format": "binary"}} for t in PROOF_TYPES}}})
    async def upload_proof(request: Request, user: CurrentUser,
                           ticket_id: TicketIdPath) -> AttachmentOut:
        """Upload a proof photo of the fix (raw JPEG/PNG body); the patrol user it is dispatched to, or a
        dispatcher or admin in scope."""
        s = st(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in PROOF_TYPES:
            raise HTTPException(415, f"send the photo as image/jpeg or image/png, not {ctype or 'nothing'!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_PROOF_BYTES:
            raise HTTPException(413, f"a proof photo may have at most {MAX_PROOF_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_PROOF_BYTES:
                raise HTTPException(413, f"a proof photo may have at most {MAX_PROOF_BYTES} bytes")
        magic, ext = PROOF_TYPES[ctype]
        if not bytes(body).startswith(magic):
            raise HTTPException(415, f"the body is not a {ctype} file")
        digest = hashlib.sha256(body).hexdigest()
        with s.sessions() as session, session.begin():
            t = session.scalars(select(Ticket).where(Ticket.id == ticket_id).with_for_update()).first()
            if t is None:
                raise HTTPException(404, f"ticket {ticket_id} not found")
            if not user.covers(t.grid_path):
                raise HTTPException(403, f"ticket {ticket_id} is outside your grid scope")
            if user.role not in (Role.ADMIN, Role.DISPATCHER, Role.PATROL) or \
                    (user.role is Role.PATROL and t.assignee != user.username):
                raise HTTPException(403, f"only the patrol user ticket {ticket_id} is dispatched to, or a "
                                    "dispatcher, may add proof")
            if t.status not in PROOF_STATES:
                raise HTTPException(409, f"proof is taken while a ticket is in progress, not {t.status}")
            name = f"proof-{digest[:16]}{ext}"
            folder = s.evidence_dir / "tickets" / str(t.id)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(body)
            os.replace(tmp, folder / name)
            event = TicketEvent(ticket_id=t.id, kind=EventKind.PROOF.value, message_key=f"proof:{digest}",
                                actor=user.username, note=f"proof photo {name} ({len(body)} bytes)",
                                ts=utcnow(), payload={"sha256": digest, "name": name})
            existing = session.scalars(select(TicketAttachment).where(
                TicketAttachment.ticket_id == t.id, TicketAttachment.sha256 == digest)).first()
            if existing is not None:
                return AttachmentOut.of(existing)  # the same photo twice: one attachment
            session.add(event)
            session.flush()
            row = TicketAttachment(ticket_id=t.id, kind="proof", name=name, content_type=ctype,
                                   size_bytes=len(body), sha256=digest, uploaded_by=user.username,
                                   uploaded_at=event.ts, event_id=event.id)
            session.add(row)
            audit(session, user.username, "ticket.proof", f"ticket:{t.id}", s.auth.client_address(request),
                  sha256=digest, size=len(body))
            session.flush()
            return AttachmentOut.of(row)

    @app.get("/tickets/{ticket_id}/attachments", response_model=list[AttachmentOut], tags=["tickets"],
             responses={**error_responses(404), **AUTH_ERRORS})
    def attachments(request: Request, user: CurrentUser,
                    ticket_id: TicketIdPath) -> list[AttachmentOut]:
        """The ticket's uploaded files, oldest first."""
        with st(request).sessions() as session:
            t = _ticket_in_scope(session, ticket_id, user)
            rows = session.scalars(select(TicketAttachment).where(TicketAttachment.ticket_id == t.id)
                                   .order_by(TicketAttachment.id)).all()
            return [AttachmentOut.of(a) for a in rows]

    @app.get("/tickets/{ticket_id}/attachments/{attachment_id}", tags=["tickets"], response_class=FileResponse,
             responses={**IMAGE_200, **error_responses(404), **AUTH_ERRORS})
    def attachment(request: Request, user: CurrentUser, ticket_id: TicketIdPath,
                   attachment_id: AttachmentIdPath) -> FileResponse:
        """One uploaded file (same scope check as the ticket)."""
        s = st(request)
        with s.sessions() as session:
            t = _ticket_in_scope(session, ticket_id, user)
            a = session.get(TicketAttachment, attachment_id)
            if a is None or a.ticket_id != t.id:
                raise HTTPException(404, f"ticket {ticket_id} has no attachment {attachment_id}")
        path = s.evidence_dir / "tickets" / str(t.id) / a.name
        if not path.is_file():
            raise HTTPException(404, "the file is missing from the evidence store")
        return FileResponse(path, media_type=a.content_type)

    @app.get("/tickets/{ticket_id}/camera-checks", response_model=list[CameraCheckOut], tags=["tickets"],
             responses={**error_responses(404), **AUTH_ERRORS})
    def camera_checks(request: Request, user: CurrentUser,
                      ticket_id: TicketIdPath) -> list[CameraCheckOut]:
        """The ticket's camera re-checks, oldest first."""
        with st(request).sessions() as session:
            t = _ticket_in_scope(session, ticket_id, user)
            rows = session.scalars(select(CameraCheck).where(CameraCheck.ticket_id == t.id)
                                   .order_by(CameraCheck.requested_at)).all()
            return [CameraCheckOut.model_validate(c, from_attributes=True) for c in rows]

    @app.get("/stats", response_model=StatsPage, tags=["stats"], responses=AUTH_ERRORS)
    def stats(request: Request, user: CurrentUser,
              since: Annotated[OptionalQueryTime, Query(
                  description="Opened at or after (ISO-8601, years 1970-2999; no zone = UTC).",
                  json_schema_extra={"pattern": TIME_PATTERN})] = None,
              until: Annotated[OptionalQueryTime, Query(
                  description="Opened before (ISO-8601, years 1970-2999; no zone = UTC).",
                  json_schema_extra={"pattern": TIME_PATTERN})] = None,
              group_by: Annotated[Literal["hazard", "grid", "camera", "all"], Query(
                  description="Group by hazard, grid node (at `level`), camera, or one group.")] = "all",
              level: Annotated[Literal["town", "district", "community", "cell"], Query(
                  description="Grid level of `group_by=grid`.")] = "cell",
              grid: Annotated[str | None, Query(description="Only this grid node and below, e.g. `T1/D1`.",
                                                max_length=300, pattern=NO_NUL_PATTERN)] = None) -> StatsPage:
        """Performance figures of the tickets opened in ``[since, until)`` in the user's scope (optionally of
        one grid node: 403 outside the scope)."""
        if since is not None and until is not None and until <= since:
            # The shape of every other 422 (FastAPI's validation error), as declared in the OpenAPI document.
            raise RequestValidationError([{"type": "value_error", "loc": ("query", "until"),
                                           "msg": "Value error, until must be after since", "input": str(until)}])
        with st(request).sessions() as session:
            rows: list[GroupStats] = compute(session, since, until, group_by, level,
                                             and_(ticket_scope(user), grid_node(user, grid)))
        return StatsPage(since=since, until=until, group_by=group_by,
                         level=level if group_by == "grid" else None,
                         groups=[StatsOut(**r.__dict__) for r in rows])


__all__ = ["LEVELS", "install_casework_routes"]
