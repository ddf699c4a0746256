"""Moving a ticket through its case life cycle, with everything a move brings along.

:func:`transition` checks the move (:mod:`pipeline.tickets.lifecycle`), what it needs (a dispatch goes to a
patrol user of the ticket's cell; resolving needs a note and at least one proof photo uploaded since work
started; reopening needs a reason), records a ``transition`` event, stamps the stage time, sets the next
deadline (:mod:`pipeline.tickets.deadlines`), queues notifications and, when a camera ticket is resolved,
a camera check (a ``camera_checks`` row the case loop publishes as ``CameraCheckRequestV1``).
:func:`on_created` does the same for a ticket an alert has just opened (deadline, ``created`` notification,
automatic dispatch when the hazard's policy says so).

All of it happens in the caller's transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.tickets.camera_store import get_camera
from pipeline.tickets.deadlines import CaseContext, notify, patrol_users, pick_patrol, schedule
from pipeline.tickets.lifecycle import TransitionError, allowed_next, check_move, is_reopen, stamp
from pipeline.tickets.models import (
    CameraCheck,
    EventKind,
    Ticket,
    TicketAttachment,
    TicketEvent,
    TicketStatus,
    utcnow,
)

S = TicketStatus
SYSTEM_ACTOR = "system"
"""Actor of moves the service makes by itself (automatic dispatch)."""


class TicketNotFoundError(LookupError):
    """No ticket with that id."""


def _refuse(ticket: Ticket, to: str, reason: str) -> TransitionError:
    return TransitionError(ticket.status, to, allowed_next(ticket.status), reason=reason)


def _proof_count(session: Session, ticket: Ticket) -> int:
    """Proof photos uploaded since the ticket last went (back) to in_progress."""
    since = session.scalar(select(func.max(TicketEvent.id)).where(
        TicketEvent.ticket_id == ticket.id, TicketEvent.kind == EventKind.TRANSITION.value,
        TicketEvent.to_status == S.IN_PROGRESS.value)) or 0
    return session.scalar(select(func.count()).select_from(TicketAttachment).where(
        TicketAttachment.ticket_id == ticket.id, TicketAttachment.kind == "proof",
        TicketAttachment.event_id > since)) or 0


def _dispatch_to(session: Session, ticket: Ticket, to: str, assignee: str | None) -> str:
    if assignee is None:
        picked = pick_patrol(session, ticket)
        if picked is None:
            raise _refuse(ticket, to, f"no enabled patrol user covers {ticket.grid_path}; add one "
                          "(gridwatch user add --role patrol) or name the assignee")
        return picked
    if assignee not in {u.username for u in patrol_users(session, ticket)}:
        raise _refuse(ticket, to, f"{assignee!r} is not an enabled patrol user of {ticket.grid_path}")
    return assignee


def checkable_camera(session: Session, ctx: CaseContext, camera_id: str) -> bool:
    """Whether camera ``camera_id`` can re-check a ticket: in ``ctx.camera_ids``, or (None there) a live,
    enabled camera of the ``cameras`` table (read in the caller's transaction: always current)."""
    if ctx.camera_ids is not None:
        return camera_id in ctx.camera_ids
    row = get_camera(session, camera_id)
    return row is not None and row.camera().enabled


def queue_camera_check(session: Session, ticket: Ticket, ctx: CaseContext, now: datetime) -> CameraCheck | None:
    """Queue a camera re-check of a resolved ticket when its hazard's policy and its camera allow it."""
    if not ctx.casework.policy(ticket.hazard).camera_check or not checkable_camera(session, ctx, ticket.camera_id):
        return None
    n = session.scalar(select(func.count()).select_from(CameraCheck)
                       .where(CameraCheck.ticket_id == ticket.id)) or 0
    check = CameraCheck(check_id=f"chk-{ticket.id}-{n + 1}-{uuid.uuid4().hex[:8]}", ticket_id=ticket.id,
                        camera_id=ticket.camera_id, window_seconds=ctx.casework.check_window_seconds,
                        requested_at=now)
    session.add(check)
    return check


def move(session: Session, ticket: Ticket, to: str, actor: str | None, note: str | None = None,
         assignee: str | None = None, ctx: CaseContext | None = None, now: datetime | None = None,
         payload: dict[str, object] | None = None) -> Ticket:
    """Move a locked ``ticket`` to ``to`` (see the module docstring); the caller commits.

    Raises:
        TransitionError: the move is not allowed, or something it needs is missing (``reason``).
    """
    check_move(ticket, to, note)
    now = now or utcnow()
    reopen = is_reopen(ticket.status, to)
    if to == S.DISPATCHED:
        assignee = _dispatch_to(session, ticket, to, assignee)
    if to == S.RESOLVED:
        if not (note and note.strip()):
            raise _refuse(ticket, to, "resolving needs a note saying what was done")
        if _proof_count(session, ticket) == 0:
            raise _refuse(ticket, to, "resolving needs at least one proof photo "
                          f"(POST /tickets/{ticket.id}/proof) uploaded since work started")
    session.add(TicketEvent(ticket_id=ticket.id, kind=EventKind.TRANSITION.value,
                            message_key=f"transition:{uuid.uuid4().hex}", from_status=ticket.status,
                            to_status=to, actor=actor, note=note, ts=now, payload=payload))
    stamp(ticket, to, now)
    if ticket.status == S.RESOLVED and to != S.RESOLVED:
        ticket.manual_check = False  # a dispatcher (or a late camera) decided: no longer waiting
    if to == S.DISPATCHED:
        ticket.assignee = assignee
    if note:
        ticket.note = note
    ticket.status = to
    ticket.updated_at = max(ticket.updated_at, now)
    session.flush()
    if ctx is not None:
        schedule(ticket, ctx, now)
        if reopen:
            notify(session, ticket, ctx, "reopened", now, reason=note)
        elif to == S.DISPATCHED:
            notify(session, ticket, ctx, "dispatched", now, reason=f"dispatched to {assignee}")
        elif to in (S.CLOSED, S.FALSE_ALARM):
            notify(session, ticket, ctx, "closed", now, reason=to)
        elif to == S.RESOLVED:
            queue_camera_check(session, ticket, ctx, now)
        session.flush()
    return ticket


def transition(session: Session, ticket_id: int, to: str, actor: str | None = None,
               note: str | None = None, assignee: str | None = None, ctx: CaseContext | None = None,
               now: datetime | None = None) -> Ticket:
    """Lock ticket ``ticket_id`` and :func:`move` it (caller commits).

    Args:
        session: open session (inside a transaction).
        ticket_id: ticket id.
        to: target status.
        actor: who did it (the logged-in user).
        note: free text, also stored on the ticket; the reason of a reopen; what was done for resolved.
        assignee: for ``dispatched``: a patrol user of the cell (default: the least busy one).
        ctx: case rules (deadlines, notifications, camera checks); None moves the status only.
        now: the time of the move (default: now).

    Raises:
        TicketNotFoundError: unknown id.
        TransitionError: not allowed from the current status, or a requirement is missing.
    """
    ticket = session.scalars(select(Ticket).where(Ticket.id == ticket_id).with_for_update()).first()
    if ticket is None:
        raise TicketNotFoundError(ticket_id)
    return move(session, ticket, to, actor, note, assignee, ctx, now)


def on_created(session: Session, ticket: Ticket, ctx: CaseContext) -> None:
    """Case rules of a ticket an alert has just opened (its deadline, the ``created`` notification and,
    when the hazard's policy says so and the cell has a patrol user, the automatic dispatch)."""
    at = ticket.opened_at
    schedule(ticket, ctx, at)
    notify(session, ticket, ctx, "created", at)
    if ctx.casework.policy(ticket.hazard).auto_dispatch and pick_patrol(session, ticket) is not None:
        move(session, ticket, S.DISPATCHED.value, SYSTEM_ACTOR,
             note=f"dispatched automatically ({ticket.hazard} policy)", ctx=ctx, now=at)
