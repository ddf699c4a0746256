"""Deadlines of a case, the notification outbox and the choice of a patrol user to dispatch to.

:func:`schedule` sets the deadline now running on a ticket (``due_stage``, ``due_at``) from its status and
the site's :class:`~pipeline.config_casework.CaseworkConfig`:

=============================  ==========  ====================================
status                         stage       runs from
=============================  ==========  ====================================
received                       verify      the ticket's opening (alert time)
verified                       dispatch    the verification
dispatched, in_progress        resolve     the dispatch (or the rework/reopen)
resolved, checked, closed, ..  (none)
=============================  ==========  ====================================

A new stage clears ``overdue`` and the escalation level; re-dispatching or starting work keeps the
running ``resolve`` deadline. :func:`notify` writes a ``NotificationV1`` to the ``notifications`` outbox in
the caller's transaction; the case loop (:mod:`pipeline.tickets.escalation`) publishes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.config_casework import CaseworkConfig
from pipeline.contract.casework import NotificationV1
from pipeline.contract.enums import Hazard
from pipeline.contract.topics import notify_topic
from pipeline.tickets.models import Notification, Ticket, TicketStatus
from pipeline.tickets.users import Role, User

S = TicketStatus
Stage = Literal["verify", "dispatch", "resolve"]
NotificationKind = Literal["created", "dispatched", "escalated", "overdue", "check_passed", "check_failed",
                           "check_timeout", "closed", "reopened"]
STAGE_OF: dict[str, Stage] = {S.RECEIVED.value: "verify", S.VERIFIED.value: "dispatch",
                              S.DISPATCHED.value: "resolve", S.IN_PROGRESS.value: "resolve"}
"""The deadline that runs in each status (statuses left out have none)."""
LEVEL_NAMES = ("cell", "community", "district", "town")
"""Escalation level -> the grid level notified (0 is the ticket's own cell)."""
MAX_LEVEL = len(LEVEL_NAMES) - 1


@dataclass(frozen=True)
class CaseContext:
    """What the case rules need besides the database: the policy and where notifications go.

    Attributes:
        casework: deadlines, escalation and check policy.
        prefix: MQTT topic prefix.
        camera_ids: the cameras whose tickets get a camera check; None (the service): the live, enabled
            cameras of the ``cameras`` table, read at each check, so a camera added over the API gets its
            checks and a deleted one gets none.
    """

    casework: CaseworkConfig
    prefix: str
    camera_ids: frozenset[str] | None = None


def grid_levels(ticket: Ticket) -> list[str]:
    """The ticket's grid path as a list, town first."""
    return [ticket.grid_l1, ticket.grid_l2, ticket.grid_l3, ticket.grid_l4]


def node_at(ticket: Ticket, level: int) -> list[str]:
    """The grid node notified at escalation ``level`` (0: the cell .. 3: the town)."""
    return grid_levels(ticket)[: len(LEVEL_NAMES) - level]


def schedule(ticket: Ticket, ctx: CaseContext, now: datetime) -> None:
    """Set the deadline of the ticket's current status (see the module docstring)."""
    stage = STAGE_OF.get(ticket.status)
    if stage is None:
        ticket.due_stage = ticket.due_at = None
        ticket.overdue = False
        return
    if stage == ticket.due_stage:
        return
    minutes = getattr(ctx.casework.deadlines(ticket.hazard, ticket.severity), f"{stage}_minutes")
    start = ticket.opened_at if stage == "verify" and ticket.status == S.RECEIVED and ticket.reopen_count == 0 \
        else now
    ticket.due_stage = stage
    ticket.due_at = start + timedelta(minutes=minutes) if minutes else None
    ticket.overdue = False
    ticket.escalation_level = 0
    ticket.escalated_at = None


def notify(session: Session, ticket: Ticket, ctx: CaseContext, kind: NotificationKind, ts: datetime,
           level: int = 0, reason: str | None = None) -> Notification:
    """Queue a notification of ``ticket`` to the grid node at ``level`` (written with the caller's change)."""
    node = node_at(ticket, level)
    message = NotificationV1(
        schema_version=1, kind=kind, ticket_id=ticket.id, grid_path=node, hazard=Hazard(ticket.hazard),
        severity=min(max(ticket.severity, 1), 5), title=ticket.title[:300], status=ticket.status,
        reason=reason[:2000] if reason else None, deadline=ticket.due_at, ts=ts,
        escalation_level=level if kind in ("overdue", "escalated") else None,
        stage=ticket.due_stage if kind in ("overdue", "escalated") else None,
        url=f"{ctx.casework.public_url.rstrip('/')}/tickets/{ticket.id}" if ctx.casework.public_url else None)
    row = Notification(ticket_id=ticket.id, kind=kind, grid_path="/".join(node),
                       topic=notify_topic(ctx.prefix, node), payload=message.model_dump(mode="json"),
                       created_at=ts)
    session.add(row)
    return row


def patrol_users(session: Session, ticket: Ticket) -> list[User]:
    """Enabled patrol users whose scopes cover the ticket's grid cell."""
    path = ticket.grid_path
    users = session.scalars(select(User).where(User.role == Role.PATROL.value, User.disabled.is_(False))
                            .order_by(User.username)).all()
    return [u for u in users if any(path == s or path.startswith(s + "/") for s in u.scopes or [])]


def pick_patrol(session: Session, ticket: Ticket) -> str | None:
    """The patrol user of the ticket's cell with the fewest open (dispatched / in progress) tickets, ties by
    name; None when the cell has none."""
    candidates = patrol_users(session, ticket)
    if not candidates:
        return None
    names = [u.username for u in candidates]
    load = dict(session.execute(
        select(Ticket.assignee, func.count()).where(
            Ticket.assignee.in_(names), Ticket.status.in_((S.DISPATCHED.value, S.IN_PROGRESS.value)))
        .group_by(Ticket.assignee)).tuples().all())
    return min(names, key=lambda n: (load.get(n, 0), n))
