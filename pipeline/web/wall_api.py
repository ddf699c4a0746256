"""Small read routes the wall and phone screens need beyond the ticket API.

* ``GET /grid/counts``: open and overdue tickets per grid node (every level), in the user's scope; the
  wall's grid tree shows them and ``/grid`` has no overdue count.
* ``GET /stats/daily?days=7|30``: tickets opened, closed and false alarms per day, and the closure rate of
  each day's tickets, for the wall's trend charts (one query instead of one ``/stats`` call per day).
* ``GET /tickets/{id}/patrols``: the enabled patrol users a ticket may be dispatched to (dispatcher,
  admin), with their open workload, for the dispatch picker of the ticket detail.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, func, or_, select, true

from pipeline.tickets.api_contract import TicketIdPath, error_responses
from pipeline.tickets.auth import CurrentUser, Principal, require_roles
from pipeline.tickets.auth_routes import AUTH_ERRORS
from pipeline.tickets.deadlines import patrol_users
from pipeline.tickets.models import Ticket, TicketStatus, utcnow
from pipeline.tickets.roles import ticket_scope
from pipeline.tickets.schemas import NO_NUL_PATTERN
from pipeline.tickets.users import Role

INACTIVE = (TicketStatus.CLOSED.value, TicketStatus.FALSE_ALARM.value)
WORKING = (TicketStatus.DISPATCHED.value, TicketStatus.IN_PROGRESS.value)


class NodeCounts(BaseModel):
    """Open tickets of one grid node (itself and everything below it)."""

    path: str = Field(description="Grid path, e.g. `T1/D1`.")
    open: int = Field(description="Tickets not closed and not a false alarm.")
    overdue: int = Field(description="Of those, past their running deadline.")


class DayStats(BaseModel):
    """One day of the trend (local day of the given UTC offset)."""

    day: date
    opened: int = Field(description="Tickets opened that day.")
    closed: int = Field(description="Tickets closed (结案) that day, whenever they were opened.")
    false_alarms: int = Field(description="Tickets opened that day that are false alarms now.")
    closure_rate: float | None = Field(description="Of the tickets opened that day that are not false alarms, "
                                       "the share closed now (null: none).")


class PatrolOut(BaseModel):
    """A patrol user who may take a ticket."""

    username: str
    display_name: str | None
    open_tickets: int = Field(description="Tickets dispatched to them or in progress.")


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def install_wall_api(app: FastAPI) -> None:
    """Add the routes of the module docstring to ``app`` (the ticket API: ``app.state.tickets``)."""

    def sessions(request: Request) -> Any:
        return request.app.state.tickets.sessions

    @app.get("/grid/counts", response_model=list[NodeCounts], tags=["grid"], responses=AUTH_ERRORS)
    def grid_counts(request: Request, user: CurrentUser) -> list[NodeCounts]:
        """Open and overdue tickets per grid node in the user's scope (nodes without open tickets left out)."""
        with sessions(request)() as session:
            rows = session.execute(
                select(Ticket.grid_path, Ticket.overdue, func.count())
                .where(Ticket.status.not_in(INACTIVE), ticket_scope(user))
                .group_by(Ticket.grid_path, Ticket.overdue)).all()
        opened: Counter[str] = Counter()
        late: Counter[str] = Counter()
        for path, overdue, n in rows:
            for p in _prefixes(path):
                opened[p] += int(n)
                late[p] += int(n) if overdue else 0
        return [NodeCounts(path=p, open=opened[p], overdue=late[p]) for p in sorted(opened)]

    @app.get("/stats/daily", response_model=list[DayStats], tags=["stats"], responses=AUTH_ERRORS)
    def stats_daily(request: Request, user: CurrentUser,
                    days: Annotated[int, Query(ge=1, le=366, description="Days up to and including today.")] = 7,
                    utc_offset_minutes: Annotated[int, Query(ge=-840, le=840, description="Local time zone of "
                                                             "the days (China: 480).")] = 480,
                    grid: Annotated[str | None, Query(description="Grid path prefix, e.g. `T1/D1`.", max_length=300,
                                                      pattern=NO_NUL_PATTERN)] = None) -> list[DayStats]:
        """Per local day, oldest first: opened, closed, false alarms and the closure rate of the day's tickets
        (optionally of one grid node)."""
        node: ColumnElement[bool] = true()
        if grid and (g := grid.strip("/")):
            if not user.overlaps(g):
                raise HTTPException(403, f"grid {g!r} is outside your grid scope")
            node = or_(Ticket.grid_path == g, Ticket.grid_path.startswith(g + "/", autoescape=True))
        offset = timedelta(minutes=utc_offset_minutes)
        today = (utcnow() + offset).date()
        first = today - timedelta(days=days - 1)
        start = datetime(first.year, first.month, first.day, tzinfo=UTC) - offset
        with sessions(request)() as session:
            rows = session.execute(
                select(Ticket.status, Ticket.opened_at, Ticket.closed_at)
                .where(ticket_scope(user), node, or_(Ticket.opened_at >= start, Ticket.closed_at >= start))).all()
        opened: Counter[date] = Counter()
        closed: Counter[date] = Counter()
        false_alarms: Counter[date] = Counter()
        closed_of_day: Counter[date] = Counter()
        for status, opened_at, closed_at in rows:
            o = (opened_at.astimezone(UTC) + offset).date()
            if o >= first:
                opened[o] += 1
                false_alarms[o] += status == TicketStatus.FALSE_ALARM.value
                closed_of_day[o] += status == TicketStatus.CLOSED.value
            if status == TicketStatus.CLOSED.value and closed_at is not None:
                c = (closed_at.astimezone(UTC) + offset).date()
                if c >= first:
                    closed[c] += 1
        out: list[DayStats] = []
        for i in range(days):
            d = first + timedelta(days=i)
            real = opened[d] - false_alarms[d]
            out.append(DayStats(day=d, opened=opened[d], closed=closed[d], false_alarms=false_alarms[d],
                                closure_rate=round(closed_of_day[d] / real, 4) if real else None))
        return out

    @app.get("/tickets/{ticket_id}/patrols", response_model=list[PatrolOut], tags=["tickets"],
             responses={**error_responses(404), **AUTH_ERRORS})
    def ticket_patrols(request: Request,
                       user: Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.DISPATCHER))],
                       ticket_id: TicketIdPath) -> list[PatrolOut]:
        """Patrol users of the ticket's cell (who a dispatch may name), with their open workload."""
        with sessions(request)() as session:
            t = session.get(Ticket, ticket_id)
            if t is None:
                raise HTTPException(404, f"ticket {ticket_id} not found")
            if not user.covers(t.grid_path):
                raise HTTPException(403, f"ticket {ticket_id} is outside your grid scope")
            users = patrol_users(session, t)
            load = dict(session.execute(
                select(Ticket.assignee, func.count()).where(
                    Ticket.assignee.in_([u.username for u in users]), Ticket.status.in_(WORKING))
                .group_by(Ticket.assignee)).tuples().all())
            return [PatrolOut(username=u.username, display_name=u.display_name,
                              open_tickets=int(load.get(u.username, 0))) for u in users]
