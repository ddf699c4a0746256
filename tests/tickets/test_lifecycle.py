"""Ticket life cycle: the transition table, enforced by the API (409 with the allowed next states)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product

import pytest
from fastapi.testclient import TestClient

from pipeline.tickets.api import create_app
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import TRANSITIONS, apply_alert
from tests.fixtures.auth import login

from .conftest import make_alert, make_site

# The life cycle as specified (kept independent of the code's table on purpose).
EXPECTED: dict[str, set[str]] = {
    "open": {"assigned", "false_alarm"},
    "assigned": {"in_progress", "false_alarm"},
    "in_progress": {"resolved", "false_alarm"},
    "resolved": {"verified", "in_progress"},
    "verified": {"closed"},
    "closed": set(),
    "false_alarm": set(),
}
# How to reach each status from `open`.
PATH_TO: dict[str, list[str]] = {
    "open": [],
    "assigned": ["assigned"],
    "in_progress": ["assigned", "in_progress"],
    "resolved": ["assigned", "in_progress", "resolved"],
    "verified": ["assigned", "in_progress", "resolved", "verified"],
    "closed": ["assigned", "in_progress", "resolved", "verified", "closed"],
    "false_alarm": ["false_alarm"],
}
PAIRS = list(product(EXPECTED, EXPECTED))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    site = make_site(tmp_path_factory.mktemp("lifecycle"))
    with TestClient(create_app(site, start_consumer=False)) as c:
        login(c)
        yield c


def _new_ticket(client: TestClient) -> int:
    alert = AlertIn.model_validate(make_alert().model_dump(mode="json"))
    return apply_alert(client.app.state.tickets.sessions, alert).ticket_id  # type: ignore[attr-defined]


def _walk(client: TestClient, ticket_id: int, status: str) -> None:
    for step in PATH_TO[status]:
        r = client.post(f"/tickets/{ticket_id}/transition", json={"to": step, "actor": "tester"})
        assert r.status_code == 200, r.text
    assert client.get(f"/tickets/{ticket_id}").json()["status"] == status


def test_code_table_matches_the_specification() -> None:
    assert {k.value: {v.value for v in vs} for k, vs in TRANSITIONS.items()} == EXPECTED


@pytest.mark.parametrize(("current", "to"), [p for p in PAIRS if p[1] in EXPECTED[p[0]]],
                         ids=lambda v: str(v))
def test_valid_transition(client: TestClient, current: str, to: str) -> None:
    tid = _new_ticket(client)
    _walk(client, tid, current)
    r = client.post(f"/tickets/{tid}/transition", json={"to": to, "actor": "ann", "note": f"to {to}"})  # actor ignored
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == to
    assert set(body["allowed_next"]) == EXPECTED[to]
    last = body["events"][-1]
    got = (last["kind"], last["from_status"], last["to_status"], last["actor"])
    assert got == ("transition", current, to, "admin")  # the logged-in user, never the body's actor
    assert body["note"] == f"to {to}"


@pytest.mark.parametrize(("current", "to"), [p for p in PAIRS if p[1] not in EXPECTED[p[0]]],
                         ids=lambda v: str(v))
def test_invalid_transition_is_409_with_allowed_states(client: TestClient, current: str, to: str) -> None:
    tid = _new_ticket(client)
    _walk(client, tid, current)
    before = client.get(f"/tickets/{tid}").json()
    r = client.post(f"/tickets/{tid}/transition", json={"to": to, "actor": "ann"})
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert detail["current"] == current and detail["requested"] == to
    assert set(detail["allowed"]) == EXPECTED[current]
    after = client.get(f"/tickets/{tid}").json()
    assert after["status"] == current and len(after["events"]) == len(before["events"])


def test_assigned_sets_assignee(client: TestClient) -> None:
    tid = _new_ticket(client)
    r = client.post(f"/tickets/{tid}/transition", json={"to": "assigned", "actor": "boss", "assignee": "li"})
    assert r.json()["assignee"] == "li"
    tid2 = _new_ticket(client)
    r = client.post(f"/tickets/{tid2}/transition", json={"to": "assigned", "actor": "wang"})
    assert r.json()["assignee"] == "admin"  # default: the logged-in user


@pytest.mark.parametrize(("path", "body", "code"), [
    ("/tickets/999999/transition", {"to": "assigned"}, 404),
    ("/tickets/1/transition", {"to": "nonsense"}, 422),
    ("/tickets/1/transition", {}, 422),
])
def test_bad_transition_requests(client: TestClient, path: str, body: dict[str, str], code: int) -> None:
    _new_ticket(client)
    assert client.post(path, json=body).status_code == code
