"""API input bounds, declared error answers and the Host check (issue 8, "API").

Ids beyond the 32-bit id column, offsets beyond a signed 64-bit integer, query times outside
1970-2999 (year 1, year 9999, epoch numbers), NUL in text and lone surrogates in JSON bodies all
answer 422 with a message that names the limit, on SQLite and on PostgreSQL, where the drivers used to
raise (500). The 409 body matches its declared schema, every route declares the 400/404/409/422 it can
answer, and a Host header outside ``api.allowed_hosts`` gets 400.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from pipeline.config import SiteConfig
from pipeline.tickets.api import create_app
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.schemas import DB_INT_MAX, ID_MAX, TransitionConflictOut
from pipeline.tickets.service import apply_alert
from tests.fixtures.auth import login

from .conftest import make_alert, make_site

TOO_BIG = [2**63, 2**64 + 1, 10**30]


def _site(tmp_path: Path, database_url: str | None = None, **api: Any) -> SiteConfig:
    data = make_site(tmp_path, database_url=database_url).model_dump(mode="json")
    data["api"].update(api)
    return SiteConfig.model_validate(data)


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    """The API on SQLite and on PostgreSQL, with one open ticket; a server error is a 500, not raised."""
    app = create_app(_site(tmp_path, db_url), start_consumer=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        login(c)
        apply_alert(app.state.tickets.sessions, AlertIn.model_validate(make_alert().model_dump(mode="json")))
        yield c


@pytest.fixture
def ticket_id(client: TestClient) -> int:
    """Id of the client's one ticket."""
    tid: int = client.get("/tickets").json()["items"][0]["id"]
    return tid


def _messages(r: Any) -> str:
    assert r.status_code == 422, (r.status_code, r.text)
    return " | ".join(e["msg"] for e in r.json()["detail"])


TICKET_ROUTES = ["GET /tickets/{}", "GET /tickets/{}/evidence/snapshot", "POST /tickets/{}/transition"]


def test_ticket_ids_outside_the_id_column_are_422_and_the_largest_is_a_404(client: TestClient) -> None:
    for route in TICKET_ROUTES:
        method, path = route.split()
        for value in [*TOO_BIG, ID_MAX + 1, 0, -1, -(2**63) - 1]:
            r = client.request(method, path.format(value), json={"to": "verified"})
            expected = str(ID_MAX) if value > 0 else "greater than or equal to 1"
            assert expected in _messages(r), (route, value)
        r = client.request(method, path.format(ID_MAX), json={"to": "verified"})
        assert r.status_code == 404 and r.json() == {"detail": f"ticket {ID_MAX} not found"}, route


@pytest.mark.parametrize("path", ["/tickets", "/dead-letters"])
def test_offsets_outside_64_bits_are_422_and_the_largest_is_an_empty_page(client: TestClient, path: str) -> None:
    for value in TOO_BIG:
        assert str(DB_INT_MAX) in _messages(client.get(f"{path}?offset={value}"))
    assert "greater than or equal to 0" in _messages(client.get(f"{path}?offset=-1"))
    r = client.get(f"{path}?offset={DB_INT_MAX}")
    assert r.status_code == 200, r.text
    body = r.json()
    items = body["items"] if path == "/tickets" else body
    assert items == []
    if path == "/tickets":
        assert body["total"] == 1 and body["offset"] == DB_INT_MAX


OUT_OF_RANGE_TIMES = [
    "0001-01-01T00:00:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59", "9999-12-31T23:59:59-01:00",
    "1969-12-31T23:59:59Z", "3000-01-01T00:00:00Z", "1714550400", "1800000000.5", "1e20",
    "-99999999999", "99999999999999999999", "now", "",
]


def test_query_times_outside_1970_2999_are_422(client: TestClient) -> None:
    for param in ("since", "until"):
        for value in OUT_OF_RANGE_TIMES:
            assert "years 1970-2999" in _messages(client.get("/tickets", params={param: value})), (param, value)


def test_query_times_filter_across_zones(client: TestClient) -> None:
    """Real times around the ticket's own opening (server clock, ~1.8e9), written in other zones."""
    opened = datetime.fromisoformat(client.get("/tickets").json()["items"][0]["opened_at"])
    assert opened.tzinfo is not None and 1.7e9 < opened.timestamp() < 3.3e10
    shanghai, new_york = timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))

    def found(**params: datetime) -> int:
        r = client.get("/tickets", params={k: v.isoformat() for k, v in params.items()})
        assert r.status_code == 200, r.text
        total: int = r.json()["total"]
        return total

    second = timedelta(seconds=1)
    assert found(since=(opened - second).astimezone(shanghai)) == 1
    assert found(since=(opened + second).astimezone(shanghai)) == 0
    assert found(until=(opened + second).astimezone(new_york)) == 1
    assert found(until=opened.astimezone(new_york)) == 0  # until is exclusive
    # Naive means UTC.
    assert found(since=(opened - second).replace(tzinfo=None)) == 1


def test_query_time_edges_are_accepted(client: TestClient) -> None:
    for value in ("1970-01-01T00:00:00+14:00", "1970-01-01", "2999-12-31T23:59:59-12:00"):
        for param in ("since", "until"):
            r = client.get("/tickets", params={param: value})
            assert r.status_code == 200, (param, value, r.text)


def test_nul_in_text_filters_is_422(client: TestClient) -> None:
    """PostgreSQL refuses NUL in a string literal; the API says so before the driver does."""
    for param in ("camera", "grid"):
        assert "should match pattern" in _messages(client.get("/tickets", params={param: "cam\x001"})), param


def test_unknown_status_or_hazard_is_422_naming_the_allowed_values(client: TestClient) -> None:
    assert "false_alarm" in _messages(client.get("/tickets?status=opne"))
    assert "poster" in _messages(client.get("/tickets?hazard=fire,smoke"))
    r = client.get("/tickets?status=received,dispatched&status=closed&hazard=parking")
    assert r.status_code == 200 and r.json()["total"] == 1


UNSTORABLE_BODIES = [
    b'{"to": "verified", "note": "\\u0000"}',      # NUL: PostgreSQL cannot store it
    b'{"to": "verified", "note": "\\ud800"}',      # lone surrogate: not encodable as UTF-8
    b'{"to": "\\udfff"}',
    b'["\\ud800"]',
    b'{"to": NaN}',                                 # echoed in the 422 body, which JSON cannot hold as a number
    b'{"to": "verified", "note": Infinity}',
]


def test_unstorable_transition_bodies_are_422_with_a_json_answer(client: TestClient, ticket_id: int) -> None:
    tid = ticket_id
    for body in UNSTORABLE_BODIES:
        r = client.post(f"/tickets/{tid}/transition", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.text)
        assert json.loads(r.content)["detail"], body
    assert client.get(f"/tickets/{tid}").json()["status"] == "received"  # nothing applied


def test_body_that_is_not_json_is_a_declared_400(client: TestClient, ticket_id: int) -> None:
    tid = ticket_id
    # Too deep for the JSON parser: FastAPI's 400; undecodable bytes: its 422 json_invalid.
    for body, status in ((b"[" * 100_000, 400), (b"\xff\xfe", 422)):
        r = client.post(f"/tickets/{tid}/transition", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert r.json()["detail"]


def test_conflict_body_matches_its_declared_schema(client: TestClient, ticket_id: int) -> None:
    tid = ticket_id
    r = client.post(f"/tickets/{tid}/transition", json={"to": "closed"})
    assert r.status_code == 409
    conflict = TransitionConflictOut.model_validate(r.json()).detail
    assert (conflict.current, conflict.requested, conflict.allowed) == ("received", "closed",
                                                                       ["verified", "dispatched", "false_alarm"])
    declared = client.get("/openapi.json").json()["paths"]["/tickets/{ticket_id}/transition"]["post"]["responses"]
    assert declared["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TransitionConflictOut"}


def test_every_route_declares_its_error_answers(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        ("get", "/tickets"): {"400", "422"},
        ("get", "/tickets/{ticket_id}"): {"400", "404", "422"},
        ("post", "/tickets/{ticket_id}/transition"): {"400", "404", "409", "422"},
        ("get", "/tickets/{ticket_id}/evidence/{kind}"): {"400", "404", "422"},
        ("get", "/evidence/{incident_id}/{name}"): {"400", "404", "422"},
        ("get", "/dead-letters"): {"400", "422"},
        ("get", "/cameras"): {"400"}, ("get", "/grid"): {"400"}, ("get", "/metrics"): {"400"},
        ("get", "/healthz"): {"400", "503"},
    }
    for (method, path), codes in expected.items():
        declared = set(paths[path][method]["responses"])
        assert codes | {"200"} <= declared, (method, path, declared)
    ticket_id = paths["/tickets/{ticket_id}"]["get"]["parameters"][0]["schema"]
    assert (ticket_id["minimum"], ticket_id["maximum"]) == (1, ID_MAX)


@pytest.fixture
def sqlite_site(tmp_path: Path) -> Any:
    return lambda **api: _site(tmp_path, **api)


def test_foreign_host_header_is_400(sqlite_site: Any) -> None:
    site = sqlite_site(allowed_hosts=["Tickets.Example.org", "*.gridwatch.test"])
    assert site.api.allowed_hosts == ["tickets.example.org", "*.gridwatch.test"]
    with TestClient(create_app(site, start_consumer=False), base_url="http://tickets.example.org") as c:
        login(c)
        for host in ("evil.example", "testserver", "127.0.0.1", "example.org", "gridwatch.test.evil.example"):
            r = c.get("/tickets", headers={"host": host})
            assert (r.status_code, r.text) == (400, "Invalid host header"), host
        for host in ("tickets.example.org", "tickets.example.org:8080", "cam.gridwatch.test"):
            assert c.get("/tickets", headers={"host": host}).status_code == 200, host


def test_default_allows_any_host_and_warns_on_a_public_bind(sqlite_site: Any,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.tickets.api_contract"):
        with TestClient(create_app(sqlite_site(), start_consumer=False)) as c:
            login(c)
            assert c.get("/tickets", headers={"host": "anything.example"}).status_code == 200
        assert not [r for r in caplog.records if r.name == "pipeline.tickets.api_contract"]
        create_app(sqlite_site(host="0.0.0.0"), start_consumer=False)
    assert "Host header is not checked" in caplog.text


@pytest.mark.parametrize("hosts", [[], ["http://tickets.example.org"], ["tickets.example.org:8080"], [""],
                                   ["tickets.*.org"], ["[::1]"], ["a b"]])
def test_allowed_hosts_config_errors(sqlite_site: Any, hosts: list[str]) -> None:
    with pytest.raises(ValidationError, match="allowed_hosts"):
        sqlite_site(allowed_hosts=hosts)
