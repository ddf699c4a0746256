"""Proof photos: who may upload them, what is taken, how they are stored and served (scope-checked)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.tickets.api import create_app
from pipeline.tickets.casework_routes import MAX_PROOF_BYTES
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert
from tests.fixtures.auth import bearer, login, user_token

from .conftest import make_alert, make_site

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_site(tmp_path), start_consumer=False)) as c:
        login(c)
        yield c


def _working_ticket(client: TestClient, patrol: str) -> int:
    alert = AlertIn.model_validate(make_alert(camera="cam1").model_dump(mode="json"))
    tid = apply_alert(client.app.state.tickets.sessions, alert).ticket_id  # type: ignore[attr-defined]
    assert client.post(f"/tickets/{tid}/transition", json={"to": "dispatched", "assignee": patrol}).status_code == 200
    return tid


def _upload(client: TestClient, tid: int, body: bytes, ctype: str = "image/jpeg", **auth: str) -> int:
    r = client.post(f"/tickets/{tid}/proof", content=body, headers={"Content-Type": ctype, **auth})
    code: int = r.status_code
    return code


def test_the_assigned_patrol_uploads_proof_and_resolves(client: TestClient, tmp_path: Path) -> None:
    li = bearer(user_token(client.app, "li", "patrol", ["T1/D1/C1/G1"]))  # type: ignore[arg-type]
    wu = bearer(user_token(client.app, "wu", "patrol", ["T1/D1/C1/G1"]))  # type: ignore[arg-type]
    far = bearer(user_token(client.app, "zhao", "viewer", ["T1/D2"]))  # type: ignore[arg-type]
    tid = _working_ticket(client, "li")
    assert _upload(client, tid, JPEG, **li) == 409  # dispatched, work not started
    assert client.post(f"/tickets/{tid}/transition", json={"to": "in_progress"}, headers=li).status_code == 200
    assert _upload(client, tid, JPEG, **wu) == 403  # not wu's ticket
    r = client.post(f"/tickets/{tid}/proof", content=JPEG, headers={"Content-Type": "image/jpeg", **li})
    assert r.status_code == 201, r.text
    proof = r.json()
    assert (proof["uploaded_by"], proof["sha256"], proof["size_bytes"]) == ("li", hashlib.sha256(JPEG).hexdigest(),
                                                                            len(JPEG))
    assert _upload(client, tid, JPEG, **li) == 201  # the same photo again: still one attachment
    assert _upload(client, tid, PNG, "image/png", **li) == 201
    listed = client.get(f"/tickets/{tid}/attachments", headers=li).json()
    assert [a["content_type"] for a in listed] == ["image/jpeg", "image/png"]
    assert client.get(proof["url"], headers=li).content == JPEG
    assert client.get(proof["url"], headers=far).status_code == 403
    assert client.get(f"/tickets/{tid}/attachments/{proof['id'] + 99}").status_code == 404
    stored = tmp_path / "evidence" / "tickets" / str(tid) / f"proof-{proof['sha256'][:16]}.jpg"
    assert stored.read_bytes() == JPEG
    r = client.post(f"/tickets/{tid}/transition", json={"to": "resolved", "note": "cleared the lane"}, headers=li)
    assert r.status_code == 200, r.text
    kinds = [e["kind"] for e in r.json()["events"]]
    assert kinds.count("proof") == 2 and kinds[-1] == "transition"
    actions = [e["action"] for e in client.get("/audit").json()]
    assert actions.count("ticket.proof") == 2


def test_what_is_not_a_photo_is_refused(client: TestClient) -> None:
    user_token(client.app, "li", "patrol", ["T1/D1/C1/G1"])  # type: ignore[arg-type]
    tid = _working_ticket(client, "li")
    assert client.post(f"/tickets/{tid}/transition", json={"to": "in_progress"}).status_code == 200
    assert _upload(client, tid, b"<html>not a photo</html>", "text/html") == 415
    assert _upload(client, tid, b"<html>not a photo</html>", "image/jpeg") == 415  # the bytes say otherwise
    assert _upload(client, tid, PNG, "image/jpeg") == 415
    assert _upload(client, tid, JPEG[:3] + b"\x00" * (MAX_PROOF_BYTES + 1)) == 413
    assert _upload(client, 999_999, JPEG) == 404
    assert client.get(f"/tickets/{tid}/attachments").json() == []
