"""The wall's small read routes (pipeline/web/wall_api.py) on a real app, on SQLite and PostgreSQL: open/overdue
counts per grid node, the daily trend, and the patrol users a ticket may be dispatched to."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from pipeline.tickets.api import create_app
from pipeline.tickets.models import Ticket, utcnow
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert
from pipeline.tickets.users import Role
from tests.fixtures.auth import bearer, user_token
from tests.tickets.conftest import make_alert, make_site, pg_url  # noqa: F401 - pg_url: the fixture, by name


@pytest.fixture(params=["sqlite", "postgresql"])
def client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    app = create_app(make_site(tmp_path, database_url=url), start_consumer=False)
    with TestClient(app) as c:
        yield c


def _open(c: TestClient, camera: str) -> int:
    alert = make_alert(camera=camera)
    return apply_alert(c.app.state.tickets.sessions,  # type: ignore[attr-defined]
                       AlertIn.model_validate(alert.model_dump(mode="json"))).ticket_id


def test_counts_per_node_and_daily_trend(client: TestClient) -> None:
    app = client.app
    admin = bearer(user_token(app, "root", Role.ADMIN, []))  # type: ignore[arg-type]
    a, b, c = _open(client, "cam1"), _open(client, "cam2"), _open(client, "cam3")
    now = utcnow()
    with app.state.tickets.sessions() as s, s.begin():  # type: ignore[attr-defined]
        s.execute(update(Ticket).where(Ticket.id == a).values(overdue=True, opened_at=now))
        s.execute(update(Ticket).where(Ticket.id == b).values(status="closed", opened_at=now, closed_at=now))
        s.execute(update(Ticket).where(Ticket.id == c).values(opened_at=now - timedelta(days=2)))
    counts = {n["path"]: (n["open"], n["overdue"]) for n in client.get("/grid/counts", headers=admin).json()}
    assert counts == {"T1": (2, 1), "T1/D1": (1, 1), "T1/D1/C1": (1, 1), "T1/D1/C1/G1": (1, 1),
                      "T1/D2": (1, 0), "T1/D2/C2": (1, 0), "T1/D2/C2/G3": (1, 0)}
    scoped = bearer(user_token(app, "c2", Role.VIEWER, ["T1/D2/C2"]))  # type: ignore[arg-type]
    assert [n["path"] for n in client.get("/grid/counts", headers=scoped).json()] == ["T1", "T1/D2", "T1/D2/C2",
                                                                                     "T1/D2/C2/G3"]
    days = client.get("/stats/daily?days=7&utc_offset_minutes=0", headers=admin).json()
    assert len(days) == 7 and days[-1]["day"] == now.date().isoformat()
    assert (days[-1]["opened"], days[-1]["closed"], days[-1]["closure_rate"]) == (2, 1, 0.5)
    assert (days[-3]["opened"], days[-3]["closure_rate"]) == (1, 0.0)
    assert days[0]["opened"] == 0 and days[0]["closure_rate"] is None
    node = client.get("/stats/daily?days=7&utc_offset_minutes=0&grid=T1/D1/C1/G2", headers=admin).json()
    assert (node[-1]["opened"], node[-1]["closed"], node[-1]["closure_rate"]) == (1, 1, 1.0)
    assert client.get("/stats/daily?days=0", headers=admin).status_code == 422
    assert client.get("/stats/daily?grid=T1/D1", headers=scoped).status_code == 403


def test_patrols_of_a_ticket(client: TestClient) -> None:
    app = client.app
    t = _open(client, "cam1")
    user_token(app, "liwei", Role.PATROL, ["T1/D1/C1/G1"])  # type: ignore[arg-type]
    user_token(app, "other", Role.PATROL, ["T1/D2"])  # type: ignore[arg-type]
    disp = bearer(user_token(app, "disp", Role.DISPATCHER, ["T1"]))  # type: ignore[arg-type]
    r = client.get(f"/tickets/{t}/patrols", headers=disp)
    assert r.status_code == 200 and [p["username"] for p in r.json()] == ["liwei"]
    assert r.json()[0]["open_tickets"] == 0
    assert client.post(f"/tickets/{t}/transition", json={"to": "dispatched", "assignee": "liwei"},
                       headers=disp).status_code == 200
    assert client.get(f"/tickets/{t}/patrols", headers=disp).json()[0]["open_tickets"] == 1
    viewer = bearer(user_token(app, "v", Role.VIEWER, ["T1"]))  # type: ignore[arg-type]
    assert client.get(f"/tickets/{t}/patrols", headers=viewer).status_code == 403
    assert client.get("/tickets/999999/patrols", headers=disp).status_code == 404


def test_stats_of_one_grid_node(client: TestClient) -> None:
    app = client.app
    admin = bearer(user_token(app, "root", Role.ADMIN, []))  # type: ignore[arg-type]
    _, b, c = _open(client, "cam1"), _open(client, "cam2"), _open(client, "cam3")
    now = utcnow()
    with app.state.tickets.sessions() as s, s.begin():  # type: ignore[attr-defined]
        s.execute(update(Ticket).where(Ticket.id == b).values(status="closed", closed_at=now))
        s.execute(update(Ticket).where(Ticket.id == c).values(status="false_alarm"))
    whole = client.get("/stats", headers=admin).json()["groups"]
    assert [(g["tickets"], g["closed"], g["false_alarms"]) for g in whole] == [(3, 1, 1)]
    d1 = client.get("/stats?grid=T1/D1", headers=admin).json()["groups"]
    assert [(g["key"], g["tickets"], g["closed"], g["closure_rate"]) for g in d1] == [("all", 2, 1, 0.5)]
    hazards = client.get("/stats?grid=T1/D2/&group_by=hazard", headers=admin).json()["groups"]
    assert [(g["key"], g["tickets"], g["false_alarm_share"]) for g in hazards] == [("parking", 1, 1.0)]
    assert client.get("/stats?grid=T1/D1/C1/G1&group_by=grid", headers=admin).json()["groups"][0]["key"] == \
        "T1/D1/C1/G1"
    assert client.get("/stats?grid=T9", headers=admin).json()["groups"] == []
    assert client.get("/stats?grid=T1/D", headers=admin).json()["groups"] == []  # a prefix of a code is no node
    scoped = bearer(user_token(app, "c2", Role.VIEWER, ["T1/D2/C2"]))  # type: ignore[arg-type]
    assert client.get("/stats?grid=T1/D1", headers=scoped).status_code == 403
    above = client.get("/stats?grid=T1", headers=scoped).json()["groups"]  # above the scope: only what it sees
    assert [g["tickets"] for g in above] == [1]
