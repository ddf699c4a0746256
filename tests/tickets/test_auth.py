"""Logins, lockout, tokens, the trusted SSO proxy, role moves and the audit trail, on SQLite and PostgreSQL.
Time comes from the authenticator's clock, set to real Unix times (~1.8e9)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from pipeline.config import SiteConfig
from pipeline.tickets.api import create_app
from pipeline.tickets.auth import ADMIN_PASSWORD_ENV, SESSION_COOKIE
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert
from pipeline.tickets.users import Role
from tests.fixtures.auth import TEST_ADMIN_PASSWORD, bearer, login, user_token

from .conftest import make_alert, make_site

T0 = datetime.fromtimestamp(1_800_000_000, UTC)


class Clock:
    """A settable clock for the authenticator."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _site(tmp_path: Path, database_url: str | None = None, **auth: Any) -> SiteConfig:
    site = make_site(tmp_path, database_url)
    return site.model_copy(update={"api": site.api.model_copy(
        update={"auth": site.api.auth.model_copy(update=auth)})})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(tmp_path: Path, clock: Clock, db_url: str) -> FastAPI:
    """The app on SQLite and on PostgreSQL (lockout counts and tokens live in the shared store)."""
    application = create_app(_site(tmp_path, db_url), start_consumer=False)
    application.state.tickets.auth.clock = clock
    return application


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def _login(client: TestClient, user: str, password: str) -> Any:
    return client.post("/auth/login", json={"username": user, "password": password})


def _metric(client: TestClient, name: str, labels: str = "") -> float:
    text_ = client.get("/metrics", headers=bearer(user_token(client.app, "admin", Role.ADMIN, []))).text  # type: ignore[arg-type]
    for line in text_.splitlines():
        if line.startswith(f"{name}{{{labels}}} " if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_login_sets_an_httponly_lax_cookie_and_returns_a_bearer_token(client: TestClient) -> None:
    r = _login(client, "admin", TEST_ADMIN_PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"].startswith("gw_") and body["user"] == {"username": "admin", "role": "admin", "scopes": []}
    cookie = r.headers["set-cookie"]
    assert f"{SESSION_COOKIE}={body['token']}" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http in the test; https sets it
    assert client.get("/auth/me").json()["username"] == "admin"  # by the cookie alone
    client.cookies.clear()
    assert client.get("/auth/me").status_code == 401
    assert client.get("/auth/me", headers=bearer(body["token"])).status_code == 200


def test_logout_revokes_the_token_and_clears_the_cookie(client: TestClient) -> None:
    token = _login(client, "admin", TEST_ADMIN_PASSWORD).json()["token"]
    r = client.post("/auth/logout")
    assert r.status_code == 204 and f'{SESSION_COOKIE}=""' in r.headers["set-cookie"]
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401
    audit = client.get("/audit", headers=bearer(user_token(client.app, "admin", Role.ADMIN, []))).json()  # type: ignore[arg-type]
    assert [e["action"] for e in audit[:3]] == ["token.create", "token.revoke", "auth.login"]
    assert audit[1]["actor"] == audit[2]["actor"] == "admin"


def test_cookie_writes_from_another_origin_are_refused(client: TestClient, app: FastAPI) -> None:
    tid = _ticket(app)
    token = _login(client, "admin", TEST_ADMIN_PASSWORD).json()["token"]
    move = {"to": "false_alarm"}
    r = client.post(f"/tickets/{tid}/transition", json=move, headers={"Origin": "http://evil.example"})
    assert (r.status_code, r.json()["detail"]) == (403, "cross-site request refused (Origin is not this site)")
    assert client.get(f"/tickets/{tid}", headers={"Origin": "http://evil.example"}).status_code == 200  # reads
    client.cookies.clear()  # a bearer token is no ambient credential: any origin may use it
    r = client.post(f"/tickets/{tid}/transition", json=move, headers={"Origin": "http://evil.example", **bearer(token)})
    assert r.status_code == 200
    _login(client, "admin", TEST_ADMIN_PASSWORD)
    r = client.post(f"/tickets/{_ticket(app)}/transition", json=move, headers={"Origin": "http://testserver"})
    assert r.status_code == 200


def test_session_expires_after_session_hours(client: TestClient, clock: Clock) -> None:
    token = _login(client, "admin", TEST_ADMIN_PASSWORD).json()["token"]
    client.cookies.clear()
    clock.advance(12 * 3600 - 1)
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200
    clock.advance(2)
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401


def test_wrong_password_unknown_and_disabled_users_look_the_same(client: TestClient, app: FastAPI) -> None:
    user_token(app, "ann", Role.VIEWER, ["T1"], password="ann-secret-1")
    assert _login(client, "ann", "ann-secret-1").status_code == 200
    answers = {_login(client, "ann", "wrong").text, _login(client, "ghost", "x").text}
    with app.state.tickets.sessions() as s, s.begin():
        s.execute(text("UPDATE users SET disabled = true WHERE username = 'ann'"))
    answers.add(_login(client, "ann", "ann-secret-1").text)
    assert answers == {'{"detail":"wrong user name or password"}'}


def test_lockout_per_user_doubles_the_wait_and_is_counted(client: TestClient, clock: Clock, app: FastAPI) -> None:
    user_token(app, "ann", Role.VIEWER, ["T1"], password="ann-secret-1")
    for i in range(5):
        clock.advance(1)
        assert _login(client, "ann", f"guess{i}").status_code == 401
    r = _login(client, "ann", "ann-secret-1")  # even the right password waits
    assert (r.status_code, r.headers["retry-after"]) == (429, "2")
    clock.advance(2.5)
    assert _login(client, "ann", "guess5").status_code == 401  # 6th failure: 4 s now
    r = _login(client, "ann", "ann-secret-1")
    assert (r.status_code, r.headers["retry-after"]) == (429, "4")
    clock.advance(4.5)
    assert _login(client, "ann", "ann-secret-1").status_code == 200  # and the count starts again
    assert _login(client, "ann", "guess6").status_code == 401
    assert _metric(client, "gridwatch_auth_login_failures_total", 'reason="bad_password"') == 7
    assert _metric(client, "gridwatch_auth_lockouts_total", 'by="user"') == 2
    assert _metric(client, "gridwatch_auth_login_blocked_total", 'by="user"') == 2


def test_lockout_per_client_address_across_user_names(app: FastAPI, clock: Clock) -> None:
    with TestClient(app, client=("198.51.100.7", 40000)) as attacker, \
            TestClient(app, client=("198.51.100.8", 40000)) as other:
        for i in range(5):
            assert _login(attacker, f"name{i}", "x").status_code == 401
        assert _login(attacker, "admin", TEST_ADMIN_PASSWORD).status_code == 429
        assert _login(other, "admin", TEST_ADMIN_PASSWORD).status_code == 200  # another address is not held up
        clock.advance(3)
        assert _login(attacker, "admin", TEST_ADMIN_PASSWORD).status_code == 200
    audit = [e for e in other.get("/audit?action=auth.login_failed").json()]
    assert len(audit) == 5 and {e["client"] for e in audit} == {"198.51.100.7"}


def test_api_token_created_once_listed_without_secret_and_revoked(client: TestClient, app: FastAPI) -> None:
    login(client)
    user_token(app, "bridge", Role.VIEWER, ["T1/D1"])
    r = client.post("/auth/tokens", json={"username": "bridge", "kind": "api", "name": "12345 bridge"})
    assert r.status_code == 201, r.text
    secret, token_id = r.json()["token"], r.json()["id"]
    listed = client.get("/auth/tokens").json()
    assert any(t["id"] == token_id and t["name"] == "12345 bridge" for t in listed)
    assert secret not in client.get("/auth/tokens").text
    with app.state.tickets.sessions() as s:
        assert s.scalar(text("SELECT count(*) FROM auth_tokens WHERE token_hash = :t"), {"t": secret}) == 0
    assert client.get("/auth/me", headers=bearer(secret)).json()["scopes"] == ["T1/D1"]
    assert client.delete(f"/auth/tokens/{token_id}").status_code == 204
    assert client.get("/auth/me", headers=bearer(secret)).status_code == 401
    assert client.post("/auth/tokens", json={"username": "ghost"}).status_code == 404


def test_metrics_token_reads_metrics_only(client: TestClient) -> None:
    login(client)
    r = client.post("/auth/tokens", json={"username": "admin", "kind": "metrics", "name": "prometheus"})
    h = bearer(r.json()["token"])
    assert client.get("/metrics", headers=h).status_code == 200
    assert client.get("/tickets", headers=h).status_code == 403


def _ticket(app: FastAPI, camera: str = "cam1") -> int:
    alert = AlertIn.model_validate(make_alert(camera=camera).model_dump(mode="json"))
    return apply_alert(app.state.tickets.sessions, alert).ticket_id


def test_patrol_works_only_its_own_tickets_steps(client: TestClient, app: FastAPI) -> None:
    tid, other = _ticket(app), _ticket(app)
    li = bearer(user_token(app, "li", Role.PATROL, ["T1/D1/C1/G1"]))
    boss = bearer(user_token(app, "boss", Role.DISPATCHER, ["T1/D1/C1"]))
    move = lambda h, t, to: client.post(f"/tickets/{t}/transition", json={"to": to}, headers=h)  # noqa: E731
    wu = bearer(user_token(app, "wu", Role.PATROL, ["T1/D1/C1/G1"]))
    assert move(li, tid, "dispatched").status_code == 403  # dispatching is not a patrol step
    r = client.post(f"/tickets/{tid}/transition", json={"to": "dispatched", "assignee": "wu"}, headers=boss)
    assert r.status_code == 200, r.text
    assert move(li, tid, "in_progress").status_code == 403  # wu's ticket, not li's
    assert move(wu, tid, "in_progress").status_code == 200
    r = client.post(f"/tickets/{other}/transition", json={"to": "dispatched", "assignee": "li"}, headers=boss)
    assert r.status_code == 200
    assert move(li, other, "in_progress").status_code == 200
    assert move(li, other, "false_alarm").status_code == 403  # judging is the dispatcher's
    r = move(boss, other, "false_alarm")
    assert r.status_code == 409, r.text  # a dispatcher may, but not from in_progress: the life cycle says no
    events = client.get(f"/tickets/{other}", headers=boss).json()["events"]
    assert [e["actor"] for e in events if e["kind"] == "transition"] == ["boss", "li"]


def test_every_change_is_in_the_append_only_audit_trail(client: TestClient, app: FastAPI) -> None:
    tid = _ticket(app)
    boss = bearer(user_token(app, "boss", Role.DISPATCHER, ["T1"]))
    r = client.post(f"/tickets/{tid}/transition", json={"to": "false_alarm", "actor": "someone-else",
                                                        "note": "a shadow"}, headers=boss)
    assert r.status_code == 200 and r.json()["events"][-1]["actor"] == "boss"
    assert client.get("/audit", headers=boss).status_code == 403
    login(client)
    events = client.get("/audit?action=ticket.transition").json()
    assert len(events) == 1
    e = events[0]
    assert (e["actor"], e["target"], e["client"]) == ("boss", f"ticket:{tid}", "testclient")
    assert e["detail"] == {"from_status": "received", "to_status": "false_alarm", "note": "a shadow",
                           "assignee": None}
    actions = {x["action"] for x in client.get("/audit").json()}
    assert {"user.add", "token.create", "auth.login", "ticket.transition"} <= actions
    with app.state.tickets.engine.connect() as conn:
        for stmt in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
            with pytest.raises(DatabaseError, match="append-only"):
                conn.execute(text(stmt))
            conn.rollback()


def test_trusted_proxy_header_only_from_trusted_addresses(tmp_path: Path) -> None:
    site = _site(tmp_path, trusted_user_header="X-Remote-User", trusted_proxies=["10.0.0.0/24"])
    app = create_app(site, start_consumer=False)
    user_token(app, "wang", Role.VIEWER, ["T1/D2"])
    with TestClient(app, client=("10.0.0.5", 1000)) as proxy, TestClient(app, client=("10.0.1.5", 1000)) as direct:
        assert proxy.get("/auth/me", headers={"X-Remote-User": "wang"}).json()["username"] == "wang"
        assert proxy.get("/auth/me", headers={"X-Remote-User": "nobody"}).status_code == 401
        assert proxy.get("/auth/me").status_code == 401  # no header: log in as usual
        assert direct.get("/auth/me", headers={"X-Remote-User": "wang"}).status_code == 401


def test_first_start_prints_a_one_time_admin_password_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(ADMIN_PASSWORD_ENV, raising=False)
    site = make_site(tmp_path)
    with caplog.at_level(logging.INFO, logger="pipeline.tickets.auth"):
        app = create_app(site, start_consumer=False)
        again = create_app(site, start_consumer=False)
    password = app.state.tickets.initial_admin_password
    assert password and len(password) >= 16 and again.state.tickets.initial_admin_password is None
    assert caplog.text.count(password) == 1 and caplog.text.count("one-time password") == 1
    with TestClient(again) as c:
        assert _login(c, "admin", password).status_code == 200
        assert _login(c, "admin", TEST_ADMIN_PASSWORD).status_code == 401  # no default password


def test_an_existing_database_gains_users_in_place(tmp_path: Path, db_url: str) -> None:
    from pipeline.tickets.db import create_db_engine, migrate

    engine = create_db_engine(db_url)
    migrate(engine, "0002_aliases_sequences")  # a store from before logins, with a ticket in it
    with engine.begin() as conn:  # the columns of that revision (today's models have more)
        conn.execute(text(
            "INSERT INTO tickets (incident_id, hazard, severity, status, camera_id, grid_l1, grid_l2, grid_l3, "
            "grid_l4, grid_path, title, opened_at, updated_at, last_event, confidence, boxes, details) VALUES "
            "('old-1', 'fire', 3, 'open', 'cam3', 'T1', 'D2', 'C2', 'G3', 'T1/D2/C2/G3', 'old', "
            ":t, :t, 'opened', 0.9, '[]', '{}')"), {"t": T0.replace(tzinfo=None)})
        tid = conn.execute(text("SELECT id FROM tickets")).scalar_one()
    engine.dispose()
    with TestClient(create_app(_site(tmp_path, db_url), start_consumer=False)) as c:
        login(c)
        assert c.get(f"/tickets/{tid}").json()["incident_id"] == "old-1"
        assert [u["username"] for u in c.get("/users").json()] == ["admin"]
