"""What each role may do, and the grid scope applied to tickets, cameras and the grid tree.

=============  ======================================================================================
role           may
=============  ======================================================================================
admin          everything, site-wide; users, tokens, the audit trail
engineer       read tickets, cameras, debug view, dead letters and metrics in scope; no ticket moves;
               verdicts (training labels)
dispatcher     read in scope; every ticket move (verify, dispatch, false alarm, check, close, reopen);
               verdicts
patrol         read in scope; only the working steps (dispatched -> in progress -> resolved) of tickets
               assigned to them
viewer         read in scope
=============  ======================================================================================
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, false, or_, true

from pipeline.tickets.auth import Principal
from pipeline.tickets.models import Ticket
from pipeline.tickets.schemas import GridNodeOut
from pipeline.tickets.users import Role

MOVERS: dict[Role, frozenset[tuple[str, str]] | None] = {
    Role.ADMIN: None,
    Role.DISPATCHER: None,
    Role.PATROL: frozenset({("dispatched", "in_progress"), ("in_progress", "resolved")}),
    Role.ENGINEER: frozenset(),
    Role.VIEWER: frozenset(),
}
"""``(from, to)`` moves each role may make (None: any the life cycle allows). A patrol starts and finishes
the work; rework after a failed check and reopening a closed case are the dispatcher's."""
OPS_ROLES = (Role.ADMIN, Role.ENGINEER)
"""Roles that read dead letters and metrics."""
DEBUG_ROLES = (Role.ADMIN, Role.ENGINEER, Role.DISPATCHER)
"""Roles that may pull a camera's debug picture."""


def ticket_scope(principal: Principal) -> ColumnElement[bool]:
    """SQL condition: the ticket's grid path lies in one of the principal's scopes."""
    if principal.site_wide:
        return true()
    if not principal.scopes:
        return false()
    return or_(*(or_(Ticket.grid_path == s, Ticket.grid_path.startswith(s + "/", autoescape=True))
                 for s in principal.scopes))


def move_refusal(principal: Principal, ticket: Ticket, to: str) -> str | None:
    """Why ``principal`` may not move ``ticket`` to ``to`` (None: allowed; the life cycle is checked later)."""
    if not principal.covers(ticket.grid_path):
        return f"ticket {ticket.id} is outside your grid scope"
    allowed = MOVERS[principal.role]
    if allowed is not None and (ticket.status, to) not in allowed:
        return f"a {principal.role.value} cannot move a ticket from {ticket.status!r} to {to!r}"
    if principal.role is Role.PATROL and ticket.assignee != principal.username:
        return f"ticket {ticket.id} is not assigned to you"
    return None


def prune_grid(nodes: list[GridNodeOut], principal: Principal) -> list[GridNodeOut]:
    """The grid tree limited to the principal's scopes and the nodes above them.

    Counts of a node above a scope only include tickets inside the scope (they are computed from the
    scoped tickets by the caller); nodes beside the scopes are left out.
    """
    if principal.site_wide:
        return nodes
    out: list[GridNodeOut] = []
    for n in nodes:
        path = "/".join(n.path)
        if principal.covers(path):
            out.append(n)
        elif principal.overlaps(path):
            out.append(n.model_copy(update={"children": prune_grid(n.children, principal)}))
    return out
