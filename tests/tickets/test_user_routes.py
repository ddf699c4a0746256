"""Users over REST (admin only): create, list, update, disable/enable, reset password; each audited, the
password never stored in the audit trail or the log (SQLite; the route walk covers 401/403)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.tickets.api import create_app
from pipeline.tickets.users import Role
from tests.fixtures.auth import bearer, login, user_token

from .conftest import make_site


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_site(tmp_path), start_consumer=False)) as c:
        login(c)
        yield c


def _audit(client: TestClient, action: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.get(f"/audit?action={action}").json()
    return rows


def _login(client: TestClient, username: str, password: str) -> int:
    code: int = client.post("/auth/login", json={"username": username, "password": password}).status_code
    client.cookies.clear()
    return code


def test_create_list_and_log_in_with_the_one_time_password(client: TestClient,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = client.post("/users", json={"username": "zhang", "role": "dispatcher", "scopes": ["C1", "T1/D1/C1"],
                                    "display_name": "Zhang San"})
    assert r.status_code == 201, r.text
    made = r.json()
    password = made.pop("one_time_password")
    assert len(password) >= 10
    assert {k: made[k] for k in ("username", "role", "scopes", "disabled", "password_login")} == {
        "username": "zhang", "role": "dispatcher", "scopes": ["T1/D1/C1"], "disabled": False,
        "password_login": True}
    assert _login(client, "zhang", password) == 200
    given = client.post("/users", json={"username": "root2", "role": "admin", "password": "a-long-password"})
    assert given.status_code == 201 and given.json()["one_time_password"] is None and given.json()["scopes"] == []
    assert _login(client, "root2", "a-long-password") == 200
    assert [u["username"] for u in client.get("/users").json()] == ["admin", "root2", "zhang"]
    [add] = [a for a in _audit(client, "user.add") if a["target"] == "zhang"]
    assert (add["actor"], add["client"], add["detail"]) == ("admin", "testclient",
                                                           {"role": "dispatcher", "scopes": ["T1/D1/C1"]})
    trail = str(client.get("/audit").json())
    assert password not in trail and "a-long-password" not in trail
    assert password not in caplog.text and "a-long-password" not in caplog.text


@pytest.mark.parametrize(("body", "where"), [
    ({"username": "x", "role": "patrol", "scopes": ["G404"]}, "no grid node 'G404'"),
    ({"username": "x", "role": "patrol", "scopes": ["D1"]}, "give the path"),  # D1 is in T1 and in T10
    ({"username": "x", "role": "patrol", "scopes": []}, "at least 1 item"),
    ({"username": "x", "role": "patrol"}, "Field required"),
    ({"username": "x", "role": "boss", "scopes": ["G1"]}, "does not match any of the expected tags"),
    ({"username": "bad name", "role": "admin"}, "String should match pattern"),
    ({"username": "x", "role": "admin", "password": "short"}, "at least 10 characters"),
    ({"username": "x", "role": "admin", "extra": 1}, "Extra inputs are not permitted"),
])
def test_bad_input_is_422_and_creates_nothing(client: TestClient, body: dict[str, Any], where: str) -> None:
    r = client.post("/users", json=body)
    assert r.status_code == 422, r.text
    assert where in r.text
    assert [u["username"] for u in client.get("/users").json()] == ["admin"]


def test_a_taken_name_is_409(client: TestClient) -> None:
    assert client.post("/users", json={"username": "li", "role": "patrol", "scopes": ["G1"]}).status_code == 201
    r = client.post("/users", json={"username": "li", "role": "viewer", "scopes": ["G2"]})
    assert r.status_code == 409 and "exists" in r.json()["detail"]
    assert len(_audit(client, "user.add")) == 2  # the first admin and li


def test_update_role_and_scopes(client: TestClient) -> None:
    client.post("/users", json={"username": "li", "role": "patrol", "scopes": ["G1"]})
    token = user_token(client.app, "li", Role.PATROL, [])  # type: ignore[arg-type]
    r = client.patch("/users/li", json={"role": "dispatcher", "scopes": ["C1", "T1/D2"]})
    assert r.status_code == 200, r.text
    assert (r.json()["role"], r.json()["scopes"]) == ("dispatcher", ["T1/D1/C1", "T1/D2"])
    assert client.get("/auth/me", headers=bearer(token)).json()["role"] == "dispatcher"  # at once
    [upd] = _audit(client, "user.update")
    assert upd["detail"] == {"role": {"from": "patrol", "to": "dispatcher"},
                             "scopes": {"from": ["T1/D1/C1/G1"], "to": ["T1/D1/C1", "T1/D2"]}}
    assert client.patch("/users/li", json={}).status_code == 200 and len(_audit(client, "user.update")) == 1
    assert client.patch("/users/li", json={"scopes": ["G404"]}).status_code == 422
    assert client.patch("/users/nobody", json={"role": "viewer"}).status_code == 404
    # An admin has no scopes: making it a dispatcher needs some; and the only admin cannot demote itself.
    client.post("/users", json={"username": "root2", "role": "admin"})
    assert client.patch("/users/root2", json={"role": "viewer"}).status_code == 409
    assert client.patch("/users/root2", json={"role": "viewer", "scopes": ["T1"]}).status_code == 200
    r = client.patch("/users/admin", json={"role": "viewer", "scopes": ["T1"]})
    assert r.status_code == 409 and "yourself" in r.json()["detail"]


def test_disable_revokes_at_once_and_enable_lets_back_in(client: TestClient) -> None:
    client.post("/users", json={"username": "li", "role": "patrol", "scopes": ["G1"], "password": "li-password-1"})
    token = user_token(client.app, "li", Role.PATROL, [])  # type: ignore[arg-type]
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200
    r = client.post("/users/li/disable")
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401
    assert _login(client, "li", "li-password-1") == 401
    assert client.post("/users/li/disable").status_code == 200 and len(_audit(client, "user.disable")) == 1
    assert _audit(client, "user.disable")[0]["detail"] == {"tokens_revoked": 1}
    assert client.post("/users/li/enable").json()["disabled"] is False
    assert _login(client, "li", "li-password-1") == 200
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401  # old tokens stay revoked
    assert client.post("/users/nobody/disable").status_code == 404
    r = client.post("/users/admin/disable")
    assert r.status_code == 409 and "yourself" in r.json()["detail"]


def test_reset_password_given_or_generated(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/users", json={"username": "li", "role": "patrol", "scopes": ["G1"], "password": "old-password-1"})
    session = client.post("/auth/login", json={"username": "li", "password": "old-password-1"}).json()["token"]
    client.cookies.clear()
    r = client.post("/users/li/password", json={"password": "new-password-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"username": "li", "one_time_password": None, "logins_ended": 1}
    assert client.get("/auth/me", headers=bearer(session)).status_code == 401
    assert _login(client, "li", "old-password-1") == 401 and _login(client, "li", "new-password-1") == 200
    generated = client.post("/users/li/password").json()["one_time_password"]
    assert generated and _login(client, "li", generated) == 200
    assert client.post("/users/li/password", json={"password": "short"}).status_code == 422
    assert client.post("/users/nobody/password").status_code == 404
    resets = _audit(client, "user.reset_password")
    assert [a["detail"]["generated"] for a in resets] == [True, False]
    for secret in ("new-password-1", generated):
        assert secret not in str(resets) and secret not in caplog.text
    # An admin resetting its own password keeps the login it does it with.
    assert client.post("/users/admin/password", json={"password": "admin-password-2"}).status_code == 200
    assert client.get("/auth/me").status_code == 200


def test_non_admins_are_refused_and_the_document_lists_the_grid(client: TestClient) -> None:
    token = user_token(client.app, "boss", Role.DISPATCHER, ["T1"])  # type: ignore[arg-type]
    for method, path in (("GET", "/users"), ("POST", "/users"), ("PATCH", "/users/boss"),
                         ("POST", "/users/boss/disable"), ("POST", "/users/boss/enable"),
                         ("POST", "/users/boss/password")):
        assert client.request(method, path, json={}, headers=bearer(token)).status_code == 403, path
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    enum = schemas["ScopedUserIn"]["properties"]["scopes"]["items"]["enum"]
    assert "T1/D1/C1/G1" in enum and "G1" in enum and "C9" in enum and "D1" not in enum  # D1: not unique
