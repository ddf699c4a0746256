"""Every route of the app, walked from ``app.routes``: 401 without credentials, the role table for each
role inside its grid scope, 403 outside it (SQLite).

A route added later is walked too; if it has a path parameter this file does not know, the walk fails
(add a value to ``PATH_VALUES`` and a line to ``ALLOWED``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from pipeline.tickets.api import create_app
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert, record_dead_letter
from pipeline.tickets.users import Role, TokenKind
from tests.fixtures.auth import bearer, user_token

from .conftest import make_alert, make_site

PUBLIC = {"GET /healthz", "POST /auth/login", "GET /", "GET /openapi.json", "GET /docs", "GET /redoc",
          "GET /docs/oauth2-redirect", "HEAD /docs", "HEAD /redoc", "HEAD /openapi.json",
          "HEAD /docs/oauth2-redirect", "HEAD /", "GET /wall", "GET /m",
          # The resident report page (一楼一码) is for residents without a login, on purpose: its token (the QR
          # code's) or the tracking token is the only key; tests/web/test_resident.py tests its limits.
          "GET /r/{token}", "GET /r/{token}/info", "POST /r/{token}/reports", "GET /r/t/{tracking}",
          "GET /r/t/{tracking}/status",
          # The scene labelling page is a shell without data (its script logs in), like `/`.
          "GET /scenes/{scene_id}/label"}
"""Routes without data: the page shells (`/`; the wall and phone screens), the API description, health and
the login itself. The screens log in through ``POST /auth/login`` like the page does."""

ALL_USERS = {"admin", "engineer", "dispatcher", "patrol", "viewer"}
ALLOWED: dict[str, set[str]] = {
    "GET /metrics": {"admin", "engineer", "metrics"},
    "GET /tickets": ALL_USERS,
    "GET /tickets/{ticket_id}": ALL_USERS,
    "POST /tickets/{ticket_id}/transition": {"admin", "dispatcher"},
    "GET /tickets/{ticket_id}/evidence/{kind}": ALL_USERS,
    "GET /evidence/{incident_id}/{name}": ALL_USERS,
    "GET /cameras": ALL_USERS,
    "GET /cameras/{camera_id}/debug.jpg": {"admin", "engineer", "dispatcher"},
    "GET /dead-letters": {"admin", "engineer"},
    "GET /grid": ALL_USERS,
    "POST /auth/logout": {*ALL_USERS, "metrics"},
    "GET /auth/me": ALL_USERS,
    "GET /auth/tokens": {"admin"},
    "POST /auth/tokens": {"admin"},
    "DELETE /auth/tokens/{token_id}": {"admin"},
    "GET /users": {"admin"},
    "POST /users": {"admin"},
    "PATCH /users/{username}": {"admin"},
    "POST /users/{username}/disable": {"admin"},
    "POST /users/{username}/enable": {"admin"},
    "POST /users/{username}/password": {"admin"},
    "GET /audit": {"admin"},
    "GET /meta/states": ALL_USERS,
    "POST /tickets/{ticket_id}/proof": {"admin", "dispatcher", "patrol"},  # patrol: dispatched to it
    "GET /tickets/{ticket_id}/attachments": ALL_USERS,
    "GET /tickets/{ticket_id}/attachments/{attachment_id}": ALL_USERS,
    "GET /tickets/{ticket_id}/camera-checks": ALL_USERS,
    "GET /stats": ALL_USERS,
    "GET /events": ALL_USERS,
    "GET /grid/counts": ALL_USERS,
    "GET /stats/daily": ALL_USERS,
    "GET /tickets/{ticket_id}/patrols": {"admin", "dispatcher"},  # a stream; `max_s=0` ends it after the first answer
    "GET /webhooks/deliveries": {"admin"},
    "POST /webhooks/deliveries/{row_id}/retry": {"admin"},
    "POST /tickets/{ticket_id}/verdict": {"admin", "engineer", "dispatcher"},
    "GET /tickets/{ticket_id}/verdicts": ALL_USERS,
    "POST /report-codes": {"admin", "dispatcher"},  # each for the cells in their scope
    "GET /report-codes": {"admin", "dispatcher"},
    "GET /report-codes/sheet.html": {"admin", "dispatcher"},
    "GET /report-codes/{code_id}/qr.png": {"admin", "dispatcher"},
    "PATCH /report-codes/{code_id}": {"admin", "dispatcher"},
    "GET /cameras/{camera_id}/config": {"admin", "engineer"},
    "PUT /cameras/{camera_id}/zones": {"admin", "engineer"},
    "POST /cameras": {"admin", "engineer"},
    "PUT /cameras/{camera_id}": {"admin", "engineer"},
    "DELETE /cameras/{camera_id}": {"admin", "engineer"},
    "GET /cameras/export": {"admin", "engineer"},
    "POST /cameras/import": {"admin", "engineer"},
    "GET /scenes": {"admin", "engineer"},
    "GET /scenes/{scene_id}/crops": {"admin", "engineer"},
    "GET /scenes/{scene_id}/crops/{crop}": {"admin", "engineer"},
    "PUT /scenes/{scene_id}/labels/{crop}": {"admin", "engineer"},
    "GET /site-plans": ALL_USERS,
    "PUT /site-plans/image": {"admin"},
    "GET /site-plans/{plan_id}/image": ALL_USERS,
    "PUT /site-plans/{plan_id}/pins": {"admin"},
}
"""Who may call each protected route (anyone else: 403; nobody logged in: 401)."""

SCOPES = {"engineer": ["T1"], "dispatcher": ["T1/D1/C1"], "patrol": ["T1/D1/C1/G1"], "viewer": ["T1/D1/C1"]}


@dataclass
class World:
    app: FastAPI
    client: TestClient
    tokens: dict[str, str]
    near: int
    """Ticket in G1 (inside every role's scope)."""
    far: int
    """Ticket in G3 (T1/D2/C2: outside the community C1)."""
    incident: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp("auth_routes")
    app = create_app(make_site(tmp), start_consumer=False)
    with TestClient(app) as client:
        sessions = app.state.tickets.sessions
        near, far = (apply_alert(sessions, AlertIn.model_validate(make_alert(camera=cam).model_dump(mode="json")))
                     .ticket_id for cam in ("cam1", "cam3"))
        record_dead_letter(sessions, "gwtest/alerts/x", b"\xff", "invalid_json: x")
        tokens = {"admin": user_token(app, "admin", Role.ADMIN, [])}
        for role, scopes in SCOPES.items():
            tokens[role] = user_token(app, role, role, scopes)
        tokens["metrics"] = user_token(app, "engineer", Role.ENGINEER, [], kind=TokenKind.METRICS)
        tokens["outsider"] = user_token(app, "outsider", Role.DISPATCHER, ["T1/D2/C2"])
        incident = client.get(f"/tickets/{near}", headers=bearer(tokens["admin"])).json()["incident_id"]
        r = client.post(f"/tickets/{near}/transition", json={"to": "dispatched", "assignee": "patrol"},
                        headers=bearer(tokens["admin"]))
        assert r.status_code == 200, r.text  # the patrol user's own ticket (for the proof upload)
        folder = app.state.tickets.evidence_dir / incident
        folder.mkdir(parents=True)
        (folder / "snapshot.jpg").write_bytes(b"\xff\xd8\xff\xe0 jpeg")
        yield World(app, client, tokens, near, far, incident)


def _flat(routes: list[Any]) -> Iterator[Any]:
    """Routes, those of included routers too (FastAPI keeps an included router as one entry)."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from _flat(route.original_router.routes)
        else:
            yield route


def _operations(app: FastAPI) -> list[tuple[str, str]]:
    """``(method, path)`` of every route in ``app.routes``; the OpenAPI document must list the same ones."""
    ops = [(m, r.path) for r in _flat(app.routes) if not isinstance(r, Mount) for m in sorted(r.methods or [])]
    documented = {(m.upper(), p) for p, item in app.openapi()["paths"].items() for m in item}
    in_schema = {(m, r.path) for r in _flat(app.routes) if isinstance(r, APIRoute) and r.include_in_schema
                 for m in r.methods}
    assert documented == in_schema
    return ops


def _request(w: World, method: str, path: str, headers: dict[str, str]) -> Any:
    """Send ``method path`` with its path parameters filled in (fresh throw-away tokens where it revokes)."""
    values = {"ticket_id": w.near, "kind": "snapshot", "incident_id": w.incident, "name": "snapshot.jpg",
              "camera_id": "cam1", "token_id": _throwaway_token_id(w), "row_id": 1,
              "attachment_id": 1, "code_id": 1, "plan_id": 1, "token": "unknown-code-0000000000",
              "tracking": "unknown-tracking-000000000", "scene_id": "no_scene", "crop": "1796000000000.jpg",
              "username": "walked"}  # a user of the walk's own (POST /users makes it): never one with a token
    if method == "DELETE" and path == "/cameras/{camera_id}":
        values["camera_id"] = _throwaway_camera(w)  # cam1 stays for the other routes
    names = re.findall(r"{(\w+)}", path)
    unknown = [n for n in names if n not in values]
    assert not unknown, f"{method} {path}: add a value for {unknown} to this test"
    url = path.format(**{n: values[n] for n in names})
    bodies: dict[str, dict[str, Any]] = {
        "POST /tickets/{ticket_id}/transition": {"to": "dispatched", "assignee": "patrol"},
        "POST /tickets/{ticket_id}/verdict": {"verdict": "false_alarm"},
        "POST /auth/login": {"username": "nobody", "password": "x"},
        "POST /auth/tokens": {"username": "viewer", "kind": "api", "name": "walk"},
        "POST /users": {"username": "walked", "role": "viewer", "scopes": ["T1"]},
        "PATCH /users/{username}": {"display_name": "walked by the route walk"},
        "POST /report-codes": {"grid": "T1/D1/C1/G1", "place": "walk"},
        "PATCH /report-codes/{code_id}": {"enabled": True},
        "PUT /scenes/{scene_id}/labels/{crop}": {"state": "clear"},
        "PUT /site-plans/{plan_id}/pins": {"pins": []},
    }
    body = bodies.get(f"{method} {path}")
    params = {"timeout": 0.1} if path.endswith("debug.jpg") else {"max_s": 0} if path == "/events" else None
    if path.endswith("/proof"):  # a raw JPEG body, so the answer is about who asks, not what was sent
        return w.client.request(method, url, content=b"\xff\xd8\xff\xe0 proof", params=params,
                                headers={**headers, "Content-Type": "image/jpeg"})
    return w.client.request(method, url, json=body, headers=headers, params=params)


def _throwaway_camera(w: World) -> str:
    from pipeline.config import CameraConfig
    from pipeline.tickets.camera_store import camera_write_lock, put_camera

    camera_id = f"walk-{next(_walk_cameras)}"
    with w.app.state.tickets.sessions() as session, session.begin(), camera_write_lock(session):
        put_camera(session, CameraConfig(id=camera_id, url="walk.mp4", grid="G1"), actor="test")
    return camera_id


_walk_cameras = iter(range(1, 1_000_000))


def _throwaway_token_id(w: World) -> int:
    auth = w.app.state.tickets.auth
    from pipeline.tickets.users import get_user

    with auth.sessions() as session, session.begin():
        user = get_user(session, "viewer")
        assert user is not None
        _, row = auth.create_token(session, user, TokenKind.API, "throw-away", None, "test", None)
        return int(row.id)


def test_route_table_is_what_this_test_knows(world: World) -> None:
    ops = {f"{m} {p}" for m, p in _operations(world.app)}
    protected = ops - PUBLIC
    assert protected == set(ALLOWED), "a route without an entry in ALLOWED (or one that went away)"
    assert any(isinstance(r, Mount) and r.path == "/static" for r in _flat(world.app.routes))


@pytest.mark.parametrize("credentials", ["none", "garbage", "revoked"])
def test_every_route_refuses_the_unauthenticated(world: World, credentials: str) -> None:
    headers: dict[str, str] = {}
    if credentials == "garbage":
        headers = bearer("gw_not-a-token")
    elif credentials == "revoked":
        token = user_token(world.app, "admin", Role.ADMIN, [])
        assert world.client.post("/auth/logout", headers=bearer(token)).status_code == 204
        headers = bearer(token)
    world.client.cookies.clear()
    for method, path in _operations(world.app):
        r = _request(world, method, path, headers)
        if f"{method} {path}" in PUBLIC:
            # The login answers 401 to the wrong password it is sent here, never "not logged in".
            assert r.status_code != 403 and "not logged in" not in r.text, (method, path, r.status_code)
        else:
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
    assert world.client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("role", sorted([*ALL_USERS, "metrics"]))
def test_each_role_gets_exactly_its_routes(world: World, role: str) -> None:
    wrong = []
    for method, path in _operations(world.app):
        op = f"{method} {path}"
        if op in PUBLIC:
            continue
        token = world.tokens[role] if op != "POST /auth/logout" else _fresh(world, role)
        r = _request(world, method, path, bearer(token))
        expected_ok = role in ALLOWED[op]
        if expected_ok == (r.status_code in (401, 403)):
            wrong.append(f"{op}: {r.status_code} {r.text[:120]}")
    assert not wrong, f"{role}:\n" + "\n".join(wrong)


def _fresh(w: World, role: str) -> str:
    owner = {"metrics": "engineer"}.get(role, role)
    kind = TokenKind.METRICS if role == "metrics" else TokenKind.API
    return user_token(w.app, owner, Role.ENGINEER if role == "metrics" else role, SCOPES.get(owner, []), kind=kind)


OUT_OF_SCOPE = ["GET /tickets/{ticket_id}", "POST /tickets/{ticket_id}/transition",
                "GET /tickets/{ticket_id}/evidence/{kind}", "GET /evidence/{incident_id}/{name}",
                "GET /cameras/{camera_id}/debug.jpg", "GET /tickets/{ticket_id}/attachments",
                "GET /tickets/{ticket_id}/attachments/{attachment_id}", "GET /tickets/{ticket_id}/camera-checks",
                "POST /tickets/{ticket_id}/proof", "GET /tickets/{ticket_id}/patrols"]


@pytest.mark.parametrize("op", OUT_OF_SCOPE)
def test_out_of_scope_objects_are_403(world: World, op: str) -> None:
    method, path = op.split(" ", 1)
    r = _request(world, method, path, bearer(world.tokens["outsider"]))
    assert r.status_code == 403, r.text
    assert "scope" in r.json()["detail"]


def test_out_of_scope_rows_are_left_out_of_lists(world: World) -> None:
    h = bearer(world.tokens["outsider"])
    ids = {t["id"] for t in world.client.get("/tickets", headers=h).json()["items"]}
    assert world.far in ids and world.near not in ids
    assert world.client.get("/tickets?grid=T1/D1", headers=h).status_code == 403
    assert world.client.get("/tickets?grid=T1", headers=h).status_code == 200  # above the scope: filtered
    assert [c["id"] for c in world.client.get("/cameras", headers=h).json()] == ["cam3"]
    tree = world.client.get("/grid", headers=h).json()
    assert [n["code"] for n in tree] == ["T1"] and [n["code"] for n in tree[0]["children"]] == ["D2"]
    assert tree[0]["active_tickets"] == 1  # counts only what the user may see
    admin = world.client.get("/grid", headers=bearer(world.tokens["admin"])).json()
    assert [n["code"] for n in admin] == ["T1", "T10"] and admin[0]["active_tickets"] == 2
