"""Case life cycle: the transition table (GB/T 30428 steps), enforced by the API (409 with the allowed next
states), and what the steps need (a patrol user of the cell, proof to resolve, a reason to reopen)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.tickets.api import create_app
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import TRANSITIONS, apply_alert
from tests.fixtures.auth import login, user_token

from .conftest import make_alert, make_site

JPEG = b"\xff\xd8\xff\xe0" + b"proof-photo" * 20
# The life cycle as specified (kept independent of the code's table on purpose).
EXPECTED: dict[str, set[str]] = {
    "received": {"verified", "dispatched", "false_alarm"},
    "verified": {"dispatched", "false_alarm"},
    "dispatched": {"in_progress", "dispatched", "false_alarm"},
    "in_progress": {"resolved"},
    "resolved": {"checked", "in_progress"},
    "checked": {"closed"},
    "closed": {"in_progress"},
    "false_alarm": {"received"},
}
# How to reach each status from `received`.
PATH_TO: dict[str, list[str]] = {
    "received": [],
    "verified": ["verified"],
    "dispatched": ["verified", "dispatched"],
    "in_progress": ["dispatched", "in_progress"],
    "resolved": ["dispatched", "in_progress", "resolved"],
    "checked": ["dispatched", "in_progress", "resolved", "checked"],
    "closed": ["dispatched", "in_progress", "resolved", "checked", "closed"],
    "false_alarm": ["false_alarm"],
}
PAIRS = list(product(EXPECTED, EXPECTED))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    site = make_site(tmp_path_factory.mktemp("lifecycle"))
    with TestClient(create_app(site, start_consumer=False)) as c:
        login(c)
        user_token(c.app, "li", "patrol", ["T1/D1/C1/G1"])  # type: ignore[arg-type]
        yield c


def _new_ticket(client: TestClient) -> int:
    alert = AlertIn.model_validate(make_alert().model_dump(mode="json"))
    return apply_alert(client.app.state.tickets.sessions, alert).ticket_id  # type: ignore[attr-defined]


def _step(client: TestClient, ticket_id: int, to: str, note: str | None = None) -> dict[str, Any]:
    if to == "resolved":
        r = client.post(f"/tickets/{ticket_id}/proof", content=JPEG + str(ticket_id).encode(),
                        headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 201, r.text
    body = {"to": to, "actor": "tester", "note": note or ("fixed" if to == "resolved" else None)}
    r = client.post(f"/tickets/{ticket_id}/transition", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _walk(client: TestClient, ticket_id: int, status: str) -> None:
    for step in PATH_TO[status]:
        _step(client, ticket_id, step)
    assert client.get(f"/tickets/{ticket_id}").json()["status"] == status


def test_code_table_matches_the_specification() -> None:
    assert {k.value: {v.value for v in vs} for k, vs in TRANSITIONS.items()} == EXPECTED


@pytest.mark.parametrize(("current", "to"), [p for p in PAIRS if p[1] in EXPECTED[p[0]]],
                         ids=lambda v: str(v))
def test_valid_transition(client: TestClient, current: str, to: str) -> None:
    tid = _new_ticket(client)
    _walk(client, tid, current)
    body = _step(client, tid, to, note=f"to {to}")
    assert body["status"] == to
    assert set(body["allowed_next"]) == EXPECTED[to]
    last = [e for e in body["events"] if e["kind"] == "transition"][-1]
    got = (last["kind"], last["from_status"], last["to_status"], last["actor"])
    assert got == ("transition", current, to, "admin")  # the logged-in user, never the body's actor
    assert body["note"] == f"to {to}"


@pytest.mark.parametrize(("current", "to"), [p for p in PAIRS if p[1] not in EXPECTED[p[0]]],
                         ids=lambda v: str(v))
def test_invalid_transition_is_409_with_allowed_states(client: TestClient, current: str, to: str) -> None:
    tid = _new_ticket(client)
    _walk(client, tid, current)
    before = client.get(f"/tickets/{tid}").json()
    r = client.post(f"/tickets/{tid}/transition", json={"to": to, "actor": "ann", "note": "x"})
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert detail["error"] == "invalid_transition"
    assert detail["current"] == current and detail["requested"] == to
    assert set(detail["allowed"]) == EXPECTED[current]
    after = client.get(f"/tickets/{tid}").json()
    assert after["status"] == current and len(after["events"]) == len(before["events"])


def test_dispatch_goes_to_a_patrol_user_of_the_cell(client: TestClient) -> None:
    tid = _new_ticket(client)
    r = client.post(f"/tickets/{tid}/transition", json={"to": "dispatched", "assignee": "li"})
    assert r.status_code == 200 and r.json()["assignee"] == "li"
    tid2 = _new_ticket(client)
    r = client.post(f"/tickets/{tid2}/transition", json={"to": "dispatched"})
    assert r.json()["assignee"] == "li"  # default: the cell's least busy patrol user
    assert r.json()["verified_at"] is not None  # dispatching verifies too
    for nobody in ("admin", "wang"):  # not a patrol user of G1 / no such user
        r = client.post(f"/tickets/{_new_ticket(client)}/transition", json={"to": "dispatched", "assignee": nobody})
        assert r.status_code == 409 and "patrol user" in r.json()["detail"]["reason"]


def test_a_cell_without_patrol_users_cannot_be_dispatched_to(client: TestClient) -> None:
    alert = AlertIn.model_validate(make_alert(camera="cam3").model_dump(mode="json"))
    tid = apply_alert(client.app.state.tickets.sessions, alert).ticket_id  # type: ignore[attr-defined]
    r = client.post(f"/tickets/{tid}/transition", json={"to": "dispatched"})
    assert r.status_code == 409
    assert "no enabled patrol user covers T1/D2/C2/G3" in r.json()["detail"]["reason"]


def test_resolve_needs_a_note_and_a_proof_photo_since_work_started(client: TestClient) -> None:
    tid = _new_ticket(client)
    _walk(client, tid, "in_progress")
    r = client.post(f"/tickets/{tid}/transition", json={"to": "resolved", "note": "done"})
    assert r.status_code == 409 and "proof photo" in r.json()["detail"]["reason"]
    proof = client.post(f"/tickets/{tid}/proof", content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert proof.status_code == 201
    r = client.post(f"/tickets/{tid}/transition", json={"to": "resolved"})
    assert r.status_code == 409 and "note" in r.json()["detail"]["reason"]
    assert client.post(f"/tickets/{tid}/transition", json={"to": "resolved", "note": "cleared"}).status_code == 200
    # Rework: back to in_progress, the old photo no longer counts.
    assert client.post(f"/tickets/{tid}/transition", json={"to": "in_progress"}).status_code == 200
    r = client.post(f"/tickets/{tid}/transition", json={"to": "resolved", "note": "again"})
    assert r.status_code == 409 and "proof photo" in r.json()["detail"]["reason"]


def test_reopen_needs_a_reason_and_is_counted(client: TestClient) -> None:
    tid = _new_ticket(client)
    _walk(client, tid, "closed")
    closed = client.get(f"/tickets/{tid}").json()
    assert closed["closed_at"] is not None and closed["checked_at"] is not None
    r = client.post(f"/tickets/{tid}/transition", json={"to": "in_progress"})
    assert r.status_code == 409 and "reason" in r.json()["detail"]["reason"]
    r = client.post(f"/tickets/{tid}/transition", json={"to": "in_progress", "note": "car is back"})
    body = r.json()
    assert body["status"] == "in_progress" and body["reopen_count"] == 1 and body["closed_at"] is None
    assert body["due_stage"] == "resolve"


def test_meta_states_serves_the_labels(client: TestClient) -> None:
    states = {s["name"]: s for s in client.get("/meta/states").json()}
    assert set(states) == set(EXPECTED)
    assert states["received"]["label_zh"] == "受理" and states["closed"]["label_zh"] == "结案"
    assert set(states["resolved"]["allowed_next"]) == EXPECTED["resolved"]


@pytest.mark.parametrize(("path", "body", "code"), [
    ("/tickets/999999/transition", {"to": "verified"}, 404),
    ("/tickets/1/transition", {"to": "nonsense"}, 422),
    ("/tickets/1/transition", {"to": "open"}, 422),  # the old names are gone from the API
    ("/tickets/1/transition", {}, 422),
])
def test_bad_transition_requests(client: TestClient, path: str, body: dict[str, str], code: int) -> None:
    _new_ticket(client)
    assert client.post(path, json=body).status_code == code
