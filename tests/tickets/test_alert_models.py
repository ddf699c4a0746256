"""The ticket service keeps the model version(s) an alert names (AlertV1.models) with the ticket's event, and
GET /tickets/{id} shows them; an alert without the field (older workers) is stored without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.tickets.api import create_app
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert
from tests.fixtures.auth import login

from .conftest import make_alert, make_site


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_site(tmp_path), start_consumer=False)) as c:
        login(c)
        yield c


def test_ticket_events_keep_the_alert_models(client: TestClient) -> None:
    sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
    alert = make_alert(hazard="fire", ts=1_796_000_000.0, models=["fire@v3"])
    assert b'"models":["fire@v3"]' in alert.to_bytes()
    with_models = apply_alert(sessions, AlertIn.model_validate_json(alert.to_bytes())).ticket_id
    old = make_alert(hazard="fire", ts=1_796_000_100.0)
    assert b'"models"' not in old.to_bytes()  # omitted while unset: what older consumers accept
    without = apply_alert(sessions, AlertIn.model_validate_json(old.to_bytes())).ticket_id
    events = client.get(f"/tickets/{with_models}").json()["events"]
    assert [e["payload"]["models"] for e in events if e.get("payload")] == [["fire@v3"]]
    events = client.get(f"/tickets/{without}").json()["events"]
    assert all("models" not in (e.get("payload") or {}) or e["payload"]["models"] is None for e in events)
