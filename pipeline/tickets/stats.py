"""Performance figures of case handling (``GET /stats`` and the ``gridwatch_case_*`` gauges).

Over the tickets *opened* in a time range, per group (hazard, grid node at a chosen level, or camera):

* ``closure_rate``: closed / (tickets that are not false alarms);
* ``on_time_closure_rate``: closed without ever being overdue / (tickets that are not false alarms);
* ``false_alarm_share``: false alarms / tickets;
* ``median_verify_seconds``, ``median_dispatch_seconds``, ``median_close_seconds``: medians of
  ``verified_at``, ``dispatched_at``, ``closed_at`` minus ``opened_at`` over the tickets that reached
  the step (false alarms count for verify only).

A rate with nothing to divide is null. Figures are computed in Python over one query of the range's
tickets (one row per ticket, a few columns), which keeps them identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from fastapi import HTTPException
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, exists, or_, select, true
from sqlalchemy.orm import Session, sessionmaker

from pipeline.tickets.auth import Principal
from pipeline.tickets.models import EventKind, Ticket, TicketEvent, TicketStatus, utcnow

GroupBy = Literal["hazard", "grid", "camera", "all"]
LEVELS = {"town": 1, "district": 2, "community": 3, "cell": 4}
GAUGE_WINDOW = timedelta(days=30)
"""The gauges cover tickets opened in the last 30 days."""


@dataclass
class _Acc:
    tickets: int = 0
    closed: int = 0
    on_time: int = 0
    false_alarms: int = 0
    open: int = 0
    verify: list[float] = field(default_factory=list)
    dispatch: list[float] = field(default_factory=list)
    close: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class GroupStats:
    """Figures of one group (see the module docstring)."""

    key: str
    tickets: int
    closed: int
    closed_on_time: int
    false_alarms: int
    open: int
    closure_rate: float | None
    on_time_closure_rate: float | None
    false_alarm_share: float | None
    median_verify_seconds: float | None
    median_dispatch_seconds: float | None
    median_close_seconds: float | None


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _finish(key: str, a: _Acc) -> GroupStats:
    real = a.tickets - a.false_alarms
    return GroupStats(key=key, tickets=a.tickets, closed=a.closed, closed_on_time=a.on_time,
                      false_alarms=a.false_alarms, open=a.open, closure_rate=_rate(a.closed, real),
                      on_time_closure_rate=_rate(a.on_time, real), false_alarm_share=_rate(a.false_alarms, a.tickets),
                      median_verify_seconds=_median(a.verify), median_dispatch_seconds=_median(a.dispatch),
                      median_close_seconds=_median(a.close))


def grid_node(user: Principal, grid: str | None) -> ColumnElement[bool]:
    """SQL condition "the ticket lies at or below the grid node ``grid``" (None or empty: every ticket).

    Raises:
        HTTPException: 403 when the node and the user's scope do not overlap.
    """
    if not grid or not (g := grid.strip("/")):
        return true()
    if not user.overlaps(g):
        raise HTTPException(403, f"grid {g!r} is outside your grid scope")
    return or_(Ticket.grid_path == g, Ticket.grid_path.startswith(g + "/", autoescape=True))


def compute(session: Session, since: datetime | None, until: datetime | None, group_by: GroupBy = "all",
            level: str = "cell", scope: ColumnElement[bool] | None = None) -> list[GroupStats]:
    """Figures of the tickets opened in ``[since, until)`` (either open-ended), per group, by key.

    Args:
        session: open session.
        since: start of the range (None: from the first ticket).
        until: end of the range, exclusive (None: up to now).
        group_by: ``hazard``, ``grid`` (node at ``level``), ``camera`` or ``all`` (one group ``all``).
        level: grid level of ``group_by=grid``: town, district, community or cell.
        scope: SQL condition limiting the tickets (the caller's grid scope).
    """
    was_overdue = exists().where(TicketEvent.ticket_id == Ticket.id, TicketEvent.kind == EventKind.OVERDUE.value)
    q = select(Ticket.hazard, Ticket.grid_path, Ticket.camera_id, Ticket.status, Ticket.opened_at,
               Ticket.verified_at, Ticket.dispatched_at, Ticket.closed_at, was_overdue.label("late"))
    q = q.where(scope if scope is not None else true())
    if since is not None:
        q = q.where(Ticket.opened_at >= since)
    if until is not None:
        q = q.where(Ticket.opened_at < until)
    depth = LEVELS[level]
    groups: dict[str, _Acc] = {}
    for hazard, grid_path, camera_id, status, opened, verified, dispatched, closed, late in session.execute(q):
        key = {"hazard": hazard, "camera": camera_id, "all": "all",
               "grid": "/".join(grid_path.split("/")[:depth])}[group_by]
        a = groups.setdefault(key, _Acc())
        a.tickets += 1
        if verified is not None:
            a.verify.append((verified - opened).total_seconds())
        if status == TicketStatus.FALSE_ALARM:
            a.false_alarms += 1
            continue
        if dispatched is not None:
            a.dispatch.append((dispatched - opened).total_seconds())
        if status == TicketStatus.CLOSED and closed is not None:
            a.closed += 1
            a.on_time += 0 if late else 1
            a.close.append((closed - opened).total_seconds())
        else:
            a.open += 1
    return [_finish(k, groups[k]) for k in sorted(groups)]


_GAUGES = (
    ("closure_rate", "Closed / tickets that are not false alarms"),
    ("on_time_closure_rate", "Closed without ever being overdue / tickets that are not false alarms"),
    ("false_alarm_share", "False alarms / tickets"),
    ("median_verify_seconds", "Median seconds from opening to verification"),
    ("median_dispatch_seconds", "Median seconds from opening to dispatch"),
    ("median_close_seconds", "Median seconds from opening to closure"),
)


class CaseStatsCollector(Collector):
    """``gridwatch_case_<figure>{hazard=...}`` and ``{community=...}`` over the last 30 days, computed at
    scrape time (a scrape every 15-60 s costs one query)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield one gauge family per figure."""
        since = utcnow() - GAUGE_WINDOW
        try:
            with self._sessions() as session:
                by_hazard = compute(session, since, None, "hazard")
                by_node = compute(session, since, None, "grid", "community")
        except Exception:  # a scrape must not fail because the store is down; the gauges are left out
            return
        for name, doc in _GAUGES:
            fam = GaugeMetricFamily(f"gridwatch_case_{name}", f"{doc} (tickets opened in the last 30 days).",
                                    labels=["group", "key"])
            for group, rows in (("hazard", by_hazard), ("community", by_node)):
                for row in rows:
                    value = getattr(row, name)
                    if value is not None:
                        fam.add_metric([group, row.key], float(value))
            yield fam
