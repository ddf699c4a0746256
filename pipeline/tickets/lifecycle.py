"""The case life cycle: states, labels, allowed moves and what each move stamps on a ticket.

Modelled on the steps of GB/T 30428 (city-management case handling)::

    received (受理) -> verified (核实) -> dispatched (派遣) -> in_progress (处置) -> resolved (已处置)
        -> checked (核查) -> closed (结案)
    received | verified | dispatched -> false_alarm (误报)
    received -> dispatched           (a dispatcher verifies and dispatches in one step, or the hazard's
                                      policy dispatches automatically, e.g. fire)
    resolved -> in_progress          (the check failed: camera re-check or dispatcher; rework)
    closed -> in_progress            (reopen, reason required)
    false_alarm -> received          (reopen, reason required)

:data:`TRANSITIONS` is the whole table. ``resolved`` needs proof (a note and at least one photo upload,
checked by :mod:`pipeline.tickets.service`). Each step's first time is kept on the ticket
(``verified_at`` .. ``closed_at``) for the performance figures.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.tickets.models import Ticket, TicketStatus

S = TicketStatus
TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    S.RECEIVED: frozenset({S.VERIFIED, S.DISPATCHED, S.FALSE_ALARM}),
    S.VERIFIED: frozenset({S.DISPATCHED, S.FALSE_ALARM}),
    S.DISPATCHED: frozenset({S.IN_PROGRESS, S.DISPATCHED, S.FALSE_ALARM}),
    S.IN_PROGRESS: frozenset({S.RESOLVED}),
    S.RESOLVED: frozenset({S.CHECKED, S.IN_PROGRESS}),
    S.CHECKED: frozenset({S.CLOSED}),
    S.CLOSED: frozenset({S.IN_PROGRESS}),
    S.FALSE_ALARM: frozenset({S.RECEIVED}),
}
"""Allowed next states of each state (``dispatched -> dispatched`` re-dispatches to another person)."""

REOPEN_MOVES: frozenset[tuple[TicketStatus, TicketStatus]] = frozenset({
    (S.CLOSED, S.IN_PROGRESS), (S.FALSE_ALARM, S.RECEIVED)})
"""Moves out of a final state: they need a reason (the note) and count in ``reopen_count``."""

TERMINAL = frozenset({S.CLOSED, S.FALSE_ALARM})
"""States that end a case (until reopened)."""

ACTIVE = (S.RECEIVED.value, S.VERIFIED.value, S.DISPATCHED.value, S.IN_PROGRESS.value)
"""States in which a ticket absorbs a new incident of the same camera, zone and hazard."""

STATE_LABELS: dict[TicketStatus, tuple[str, str]] = {
    S.RECEIVED: ("受理", "Received"),
    S.VERIFIED: ("核实", "Verified"),
    S.DISPATCHED: ("派遣", "Dispatched"),
    S.IN_PROGRESS: ("处置", "In progress"),
    S.RESOLVED: ("处置完成", "Resolved"),
    S.CHECKED: ("核查", "Checked"),
    S.CLOSED: ("结案", "Closed"),
    S.FALSE_ALARM: ("误报", "False alarm"),
}
"""(Chinese label, English label) of each state, served by ``GET /meta/states``."""

_ORDER = list(TicketStatus)
_STAMPS: dict[TicketStatus, tuple[str, ...]] = {
    S.VERIFIED: ("verified_at",),
    S.DISPATCHED: ("verified_at", "dispatched_at"),
    S.IN_PROGRESS: ("in_progress_at",),
    S.RESOLVED: ("resolved_at",),
    S.CHECKED: ("checked_at",),
    S.CLOSED: ("closed_at",),
    S.FALSE_ALARM: ("verified_at", "closed_at"),
}
"""Stage columns set (when still empty) on entering a state; dispatching also verifies."""


class TransitionError(ValueError):
    """A status change the life cycle does not allow (or a required input is missing).

    Attributes:
        current: the ticket's status.
        requested: the status asked for.
        allowed: statuses allowed from ``current``.
        reason: why, when the move itself is in the table but something it needs is missing.
    """

    def __init__(self, current: str, requested: str, allowed: list[str], reason: str | None = None) -> None:
        super().__init__(reason or f"cannot go from {current!r} to {requested!r}; allowed: {allowed}")
        self.current = current
        self.requested = requested
        self.allowed = allowed
        self.reason = reason


def allowed_next(status: str) -> list[str]:
    """States reachable from ``status`` in life-cycle order (empty for an unknown state)."""
    try:
        nxt = TRANSITIONS[TicketStatus(status)]
    except ValueError:
        return []
    return [s.value for s in _ORDER if s in nxt]


def is_reopen(current: str, to: str) -> bool:
    """Whether ``current -> to`` reopens a finished case."""
    try:
        return (TicketStatus(current), TicketStatus(to)) in REOPEN_MOVES
    except ValueError:
        return False


def check_move(ticket: Ticket, to: str, note: str | None) -> None:
    """Raise :class:`TransitionError` unless ``ticket`` may move to ``to`` (a reopen needs a reason)."""
    allowed = allowed_next(ticket.status)
    if to not in allowed:
        raise TransitionError(ticket.status, to, allowed)
    if is_reopen(ticket.status, to) and not (note and note.strip()):
        raise TransitionError(ticket.status, to, allowed, reason="reopening a case needs a reason (note)")


def stamp(ticket: Ticket, to: str, now: datetime) -> None:
    """Set the stage times of entering ``to`` (first time only) and count reopens; the status itself is
    set by the caller."""
    if is_reopen(ticket.status, to):
        ticket.reopen_count = (ticket.reopen_count or 0) + 1
        ticket.closed_at = None
        if to == S.IN_PROGRESS:
            ticket.resolved_at = ticket.checked_at = None
    if to == S.IN_PROGRESS and ticket.status == S.RESOLVED:
        ticket.resolved_at = None  # rework: the next resolve is the one that counts
    for column in _STAMPS.get(TicketStatus(to), ()):
        if getattr(ticket, column) is None:
            setattr(ticket, column, now)
