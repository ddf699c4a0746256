"""Performance figures (``GET /stats`` and the ``gridwatch_case_*`` gauges) from tickets moved at chosen
Unix times, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.tickets.api import create_app
from pipeline.tickets.deadlines import CaseContext
from pipeline.tickets.escalation import run_pass
from pipeline.tickets.models import TicketAttachment, TicketEvent
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert, transition
from tests.fixtures.auth import bearer, login, user_token

from .casework_support import T0, add_patrol, context, utc
from .conftest import make_alert, make_site

MIN = 60.0


def _proof(session: Session, tid: int, at: float) -> None:
    """A proof photo row, as ``POST /tickets/{id}/proof`` writes it (the file itself is not needed here)."""
    event = TicketEvent(ticket_id=tid, kind="proof", message_key=f"proof:{tid}:{at}", ts=utc(at))
    session.add(event)
    session.flush()
    session.add(TicketAttachment(ticket_id=tid, kind="proof", name="p.jpg", content_type="image/jpeg",
                                 size_bytes=1, sha256="0" * 64, uploaded_at=utc(at), event_id=event.id))


def _walk(sessions: sessionmaker[Session], ctx: CaseContext, tid: int, opened: float,
          steps: list[tuple[str, float]]) -> None:
    for to, after in steps:
        with sessions() as s, s.begin():
            if to == "resolved":
                _proof(s, tid, opened + after - 1)
            transition(s, tid, to, actor="boss", note="done", ctx=ctx, now=utc(opened + after))


def _open(sessions: sessionmaker[Session], ctx: CaseContext, ts: float, camera: str, hazard: str) -> int:
    alert = AlertIn.model_validate(make_alert(ts=ts, camera=camera, hazard=hazard).model_dump(mode="json"))
    return apply_alert(sessions, alert, ctx=ctx).ticket_id


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    site = make_site(tmp_path, db_url)
    with TestClient(create_app(site, start_consumer=False)) as c:
        login(c)
        sessions = c.app.state.tickets.sessions  # type: ignore[attr-defined]
        ctx = context(site)
        add_patrol(sessions, "li", ["T1/D1/C1"])
        full = ["verified", "dispatched", "in_progress", "resolved", "checked", "closed"]
        # 1: cam1 parking, every step in time; closed 800 s after opening.
        a = _open(sessions, ctx, T0, "cam1", "parking")
        _walk(sessions, ctx, a, T0, list(zip(full, [60, 120, 180, 600, 700, 800], strict=True)))
        # 2: cam2 parking, verified only after its 30 min verify deadline (overdue); closed after 3000 s.
        b = _open(sessions, ctx, T0 + 10, "cam2", "parking")
        assert run_pass(sessions, ctx, None, T0 + 10 + 31 * MIN).overdue == 1
        _walk(sessions, ctx, b, T0 + 10, list(zip(full, [32 * MIN, 34 * MIN, 35 * MIN, 2900, 2950, 3000],
                                                  strict=True)))
        # 3: cam3 fire (G3 has no patrol user: no auto-dispatch), a false alarm after 30 s.
        c3 = _open(sessions, ctx, T0 + 20, "cam3", "fire")
        _walk(sessions, ctx, c3, T0 + 20, [("false_alarm", 30)])
        # 4: cam1 parking, still waiting.
        _open(sessions, ctx, T0 + 40, "cam1", "parking")
        yield c


def _groups(client: TestClient, query: str, **kw: Any) -> dict[str, dict[str, Any]]:
    r = client.get(f"/stats?{query}", **kw)
    assert r.status_code == 200, r.text
    return {g["key"]: g for g in r.json()["groups"]}


def test_overall_figures(client: TestClient) -> None:
    [(key, g)] = _groups(client, "").items()
    assert key == "all"
    assert (g["tickets"], g["closed"], g["closed_on_time"], g["false_alarms"], g["open"]) == (4, 2, 1, 1, 1)
    assert (g["closure_rate"], g["on_time_closure_rate"], g["false_alarm_share"]) == (0.6667, 0.3333, 0.25)
    assert g["median_verify_seconds"] == 60.0          # of 60, 32 min, 30 s
    assert g["median_dispatch_seconds"] == (120 + 34 * MIN) / 2
    assert g["median_close_seconds"] == (800 + 3000) / 2


def test_per_hazard_grid_node_and_camera(client: TestClient) -> None:
    by_hazard = _groups(client, "group_by=hazard")
    assert (by_hazard["parking"]["tickets"], by_hazard["parking"]["closure_rate"]) == (3, 0.6667)
    assert (by_hazard["fire"]["closure_rate"], by_hazard["fire"]["false_alarm_share"]) == (None, 1.0)
    by_node = _groups(client, "group_by=grid&level=community")
    assert {k: g["tickets"] for k, g in by_node.items()} == {"T1/D1/C1": 3, "T1/D2/C2": 1}
    by_cell = _groups(client, "group_by=grid")
    assert by_cell["T1/D1/C1/G2"]["on_time_closure_rate"] == 0.0  # the overdue one
    by_camera = _groups(client, "group_by=camera")
    assert (by_camera["cam1"]["closed_on_time"], by_camera["cam1"]["open"]) == (1, 1)


def test_time_range_and_scope(client: TestClient) -> None:
    since = utc(T0 + 15).isoformat().replace("+00:00", "Z")
    assert _groups(client, f"since={since}")["all"]["tickets"] == 2     # opened at T0+20 and T0+40
    until = utc(T0 + 15).isoformat().replace("+00:00", "Z")
    assert _groups(client, f"until={until}")["all"]["tickets"] == 2     # T0 and T0+10
    assert client.get(f"/stats?since={since}&until={until}").status_code == 422
    d2 = bearer(user_token(client.app, "d2", "dispatcher", ["T1/D2"]))  # type: ignore[arg-type]
    assert {k: g["tickets"] for k, g in _groups(client, "group_by=hazard", headers=d2).items()} == {"fire": 1}
    assert client.get("/stats", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_figures_are_prometheus_gauges(client: TestClient) -> None:
    text = client.get("/metrics").text
    for line in ('gridwatch_case_closure_rate{group="hazard",key="parking"} 0.6667',
                 'gridwatch_case_false_alarm_share{group="hazard",key="fire"} 1.0',
                 'gridwatch_case_median_close_seconds{group="community",key="T1/D1/C1"} 1900.0'):
        assert line in text, line
    sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
    with sessions() as s:  # the figures come from the rows, not from a counter kept on the side
        assert s.scalar(select(func.count()).select_from(TicketEvent).where(TicketEvent.kind == "overdue")) == 1
