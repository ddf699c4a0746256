"""Routes of operators' verdicts (:mod:`pipeline.tickets.verdicts`), the training labels of docs/retraining.md.

* ``POST /tickets/{id}/verdict``: ``{"verdict": "confirmed" | "false_alarm", "boxes": [{"label", "xyxy"}],
  "note"}`` from a dispatcher, engineer or admin in scope; stored with the hash of the ticket's raw frame
  and audited (``ticket.verdict``). ``boxes`` (normalised ``[x1, y1, x2, y2]``) corrects the alert's boxes
  or labels on a confirmed alert; omitted, the alert's boxes stand. The ticket's status is not changed.
* ``GET /tickets/{id}/verdicts``: the ticket's verdicts, oldest first (the last one is its label).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from pipeline.tickets.api_contract import TicketIdPath, error_responses
from pipeline.tickets.auth import CurrentUser
from pipeline.tickets.auth_routes import AUTH_ERRORS
from pipeline.tickets.models import Ticket
from pipeline.tickets.users import Role, audit
from pipeline.tickets.verdicts import LabelBox, TicketVerdict, Verdict, record_verdict

VERDICT_ROLES = (Role.ADMIN, Role.ENGINEER, Role.DISPATCHER)
"""Roles that may give a verdict (a patrol works the case; a viewer only reads)."""
MAX_BOXES = 100
LABEL_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"


class VerdictBox(BaseModel):
    """A corrected box: the class and its corners as fractions of the image size."""

    label: Annotated[str, Field(pattern=LABEL_PATTERN, description="Class name, e.g. `fire`.")]
    xyxy: Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(
        min_length=4, max_length=4, description="`[x1, y1, x2, y2]`, 0..1 of the image width / height.")]

    @field_validator("xyxy")
    @classmethod
    def _ordered(cls, v: list[float]) -> list[float]:
        if not (v[0] < v[2] and v[1] < v[3]):
            raise ValueError("xyxy needs x1 < x2 and y1 < y2")
        return v


class VerdictIn(BaseModel):
    """A person's verdict on a ticket's alert."""

    verdict: Verdict = Field(description="`confirmed` or `false_alarm`.")
    boxes: Annotated[list[VerdictBox] | None, Field(
        min_length=1, max_length=MAX_BOXES, description="Corrected boxes of a confirmed alert (at least one); omit "
        "to keep the alert's boxes; not allowed on a false alarm.")] = None
    note: Annotated[str | None, Field(max_length=2000, pattern=r"^[^\x00]*$")] = None


class VerdictOut(BaseModel):
    """A stored verdict."""

    id: int
    ticket_id: int
    verdict: Literal["confirmed", "false_alarm"]
    boxes: list[dict[str, Any]] | None = Field(description="Corrected boxes; null: the alert's boxes stand.")
    frame_sha256: str | None = Field(description="SHA-256 of the raw frame judged; null: no raw frame stored.")
    source: str
    actor: str | None
    note: str | None
    created_at: datetime

    @classmethod
    def of(cls, v: TicketVerdict) -> VerdictOut:
        """Build from an ORM row."""
        return cls.model_validate(v, from_attributes=True)


def install_verdict_routes(app: FastAPI) -> None:
    """Add the routes of the module docstring to ``app`` (its ``state.tickets`` is the TicketState)."""

    @app.post("/tickets/{ticket_id}/verdict", response_model=VerdictOut, status_code=201, tags=["tickets"],
              responses={**error_responses(400, 404), **AUTH_ERRORS})
    def post_verdict(request: Request, user: CurrentUser, ticket_id: TicketIdPath, body: VerdictIn) -> VerdictOut:
        """Record whether the ticket's alert was right, with corrected boxes (dispatcher, engineer, admin)."""
        s = request.app.state.tickets
        if user.role not in VERDICT_ROLES:
            raise HTTPException(403, f"a {user.role.value} cannot give verdicts (dispatcher, engineer or admin)")
        boxes = None if body.boxes is None else [LabelBox(b.label, *b.xyxy) for b in body.boxes]
        with s.sessions() as session, session.begin():
            t = session.get(Ticket, ticket_id)
            if t is None:
                raise HTTPException(404, f"ticket {ticket_id} not found")
            if not user.covers(t.grid_path):
                raise HTTPException(403, f"ticket {ticket_id} is outside your grid scope")
            try:
                row = record_verdict(session, t, body.verdict, boxes, s.evidence_dir, user.username,
                                     note=body.note)
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from exc
            audit(session, user.username, "ticket.verdict", f"ticket:{t.id}", s.auth.client_address(request),
                  verdict=body.verdict.value, boxes=row.boxes, frame_sha256=row.frame_sha256)
            return VerdictOut.of(row)

    @app.get("/tickets/{ticket_id}/verdicts", response_model=list[VerdictOut], tags=["tickets"],
             responses={**error_responses(404), **AUTH_ERRORS})
    def list_verdicts(request: Request, user: CurrentUser, ticket_id: TicketIdPath) -> list[VerdictOut]:
        """The ticket's verdicts, oldest first; the last one is its training label."""
        with request.app.state.tickets.sessions() as session:
            t = session.get(Ticket, ticket_id)
            if t is None:
                raise HTTPException(404, f"ticket {ticket_id} not found")
            if not user.covers(t.grid_path):
                raise HTTPException(403, f"ticket {ticket_id} is outside your grid scope")
            rows = session.scalars(select(TicketVerdict).where(TicketVerdict.ticket_id == t.id)
                                   .order_by(TicketVerdict.id)).all()
            return [VerdictOut.of(v) for v in rows]
