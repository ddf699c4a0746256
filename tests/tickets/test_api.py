"""REST API: filters, ticket detail, evidence files (200/404/traversal), cameras, grid, dead letters,
metrics and health, plus the whole path MQTT -> consumer -> API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.alerts.schema import AlertV1
from pipeline.config import SiteConfig
from pipeline.tickets.api import create_app
from pipeline.tickets.payload import AlertIn, HealthIn
from pipeline.tickets.service import apply_alert, record_dead_letter, upsert_camera_health
from tests.fixtures.auth import login, user_token

from .conftest import Publisher, make_alert, make_site, topic_of, wait_for


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    return make_site(tmp_path)


@pytest.fixture
def client(site: SiteConfig) -> Iterator[TestClient]:
    with TestClient(create_app(site, start_consumer=False)) as c:
        login(c)
        yield c


def _apply(client: TestClient, alert: AlertV1) -> int:
    sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
    return apply_alert(sessions, AlertIn.model_validate(alert.model_dump(mode="json"))).ticket_id


@pytest.fixture
def seeded(client: TestClient) -> dict[str, int]:
    """Tickets on several cameras / grid nodes / hazards / times; two moved on in their life cycle."""
    spec = {"a": ("cam1", "parking", 1000.0), "b": ("cam1", "fire", 2000.0), "c": ("cam2", "clutter", 3000.0),
            "d": ("cam3", "parking", 4000.0), "e": ("cam9", "poster", 5000.0)}
    ids = {k: _apply(client, make_alert(camera=cam, hazard=hz, ts=ts)) for k, (cam, hz, ts) in spec.items()}
    user_token(client.app, "li", "patrol", ["T1/D1/C1/G1"])  # type: ignore[arg-type]
    client.post(f"/tickets/{ids['b']}/transition", json={"to": "dispatched", "assignee": "li"})
    client.post(f"/tickets/{ids['c']}/transition", json={"to": "false_alarm", "actor": "li"})
    return ids


def _ids(client: TestClient, query: str) -> list[int]:
    r = client.get(f"/tickets?{query}")
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["items"]]


@pytest.mark.parametrize(("query", "expected"), [
    ("", ["e", "d", "c", "b", "a"]),                       # newest first
    ("grid=T1", ["d", "c", "b", "a"]),                     # not T10: prefix is per level
    ("grid=T1/D1", ["c", "b", "a"]),
    ("grid=T1/D1/C1/G1", ["b", "a"]),
    ("grid=T1/D1/", ["c", "b", "a"]),
    ("grid=T1/D", []),
    ("grid=T10/D1", ["e"]),
    ("status=received", ["e", "d", "a"]),
    ("status=received&status=dispatched", ["e", "d", "b", "a"]),
    ("status=dispatched,false_alarm", ["c", "b"]),
    ("hazard=parking", ["d", "a"]),
    ("hazard=parking&status=received&grid=T1/D2", ["d"]),
    ("camera=cam1", ["b", "a"]),
    ("since=1970-01-01T00:33:20Z&until=1970-01-01T01:06:40Z", ["c", "b"]),   # 2000 <= opened < 4000
    ("since=1970-01-01T00:33:20", ["e", "d", "c", "b"]),                     # naive = UTC
    ("limit=2", ["e", "d"]),
    ("limit=2&offset=2", ["c", "b"]),
])
def test_ticket_filters(client: TestClient, seeded: dict[str, int], query: str, expected: list[str]) -> None:
    assert _ids(client, query) == [seeded[k] for k in expected]


def test_total_counts_all_pages(client: TestClient, seeded: dict[str, int]) -> None:
    body = client.get("/tickets?limit=1&grid=T1").json()
    assert (body["total"], len(body["items"]), body["limit"]) == (4, 1, 1)


def test_ticket_detail(client: TestClient, seeded: dict[str, int]) -> None:
    t = client.get(f"/tickets/{seeded['b']}").json()
    assert t["status"] == "dispatched" and t["assignee"] == "li"
    assert t["grid_path"] == ["T1", "D1", "C1", "G1"] and t["hazard"] == "fire"
    assert [e["kind"] for e in t["events"]] == ["alert_opened", "transition"]
    assert t["events"][0]["payload"]["incident_id"] == t["incident_id"]
    assert t["allowed_next"] == ["dispatched", "in_progress", "false_alarm"]
    assert t["evidence"] == {"snapshot": f"/tickets/{t['id']}/evidence/snapshot",
                             "clip": f"/tickets/{t['id']}/evidence/clip"}
    assert client.get("/tickets/424242").status_code == 404


def test_evidence_files(client: TestClient, site: SiteConfig) -> None:
    alert = make_alert()
    tid = _apply(client, alert)
    assert client.get(f"/tickets/{tid}/evidence/snapshot").status_code == 404  # not written yet
    assert client.get(f"/evidence/{alert.incident_id}/snapshot.jpg").status_code == 404
    folder = site.resolve_path(site.api.evidence_dir) / alert.incident_id
    folder.mkdir(parents=True)
    (folder / "snapshot.jpg").write_bytes(b"\xff\xd8jpeg")
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    r = client.get(f"/tickets/{tid}/evidence/snapshot")
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"\xff\xd8jpeg", "image/jpeg")
    r = client.get(f"/tickets/{tid}/evidence/clip")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    r = client.get(f"/evidence/{alert.incident_id}/snapshot.jpg")
    assert r.status_code == 200 and r.content == b"\xff\xd8jpeg"
    assert client.get(f"/tickets/{tid}/evidence/other").status_code == 422
    assert client.get("/tickets/9999/evidence/snapshot").status_code == 404


@pytest.mark.parametrize("path", [
    "/evidence/%2E%2E/secret.txt",
    "/evidence/..%2F..%2F/secret.txt",
    "/evidence/x/%2E%2E%2Fsecret.txt",
    "/evidence/%2E%2E/%2E%2E",
    "/evidence/.hidden/secret.txt",
    "/evidence/x/..",
])
def test_evidence_path_traversal_rejected(client: TestClient, site: SiteConfig, path: str) -> None:
    evidence = site.resolve_path(site.api.evidence_dir)
    (evidence / "x").mkdir(parents=True)
    (evidence.parent / "secret.txt").write_text("top secret")
    (evidence / ".hidden").mkdir()
    (evidence / ".hidden" / "secret.txt").write_text("top secret")
    r = client.get(path)
    assert r.status_code in (400, 404)
    assert b"top secret" not in r.content


def test_cameras_join_health(client: TestClient) -> None:
    sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
    upsert_camera_health(sessions, "cam1", HealthIn(state="streaming", frames_decoded=10))
    upsert_camera_health(sessions, "ghost", HealthIn(state="error", last_error="401"))
    cams = {c["id"]: c for c in client.get("/cameras").json()}
    assert list(cams) == ["cam1", "cam2", "cam3", "cam9", "ghost"]
    assert cams["cam1"]["health"]["state"] == "streaming" and cams["cam1"]["name"] == "North gate"
    assert cams["cam1"]["grid_path"] == ["T1", "D1", "C1", "G1"]
    assert cams["cam2"]["health"] is None and cams["cam2"]["configured"]
    assert not cams["ghost"]["configured"] and cams["ghost"]["health"]["last_error"] == "401"


def test_grid_tree_counts_active_tickets(client: TestClient, seeded: dict[str, int]) -> None:
    tree = client.get("/grid").json()
    t1, t10 = tree
    assert (t1["code"], t1["level"], t1["active_tickets"]) == ("T1", "town", 3)  # c is a false alarm
    d1 = t1["children"][0]
    assert (d1["path"], d1["active_tickets"]) == (["T1", "D1"], 2)
    g1 = d1["children"][0]["children"][0]
    assert (g1["level"], g1["patrol"], g1["active_tickets"]) == ("cell", "Li Wei", 2)
    assert t10["active_tickets"] == 1


def test_dead_letters_listed(client: TestClient) -> None:
    sessions = client.app.state.tickets.sessions  # type: ignore[attr-defined]
    record_dead_letter(sessions, "gwtest/alerts/x", b"\xffnot json", "invalid_json: boom")
    [d] = client.get("/dead-letters").json()
    assert d["topic"] == "gwtest/alerts/x" and d["reason"].startswith("invalid_json")
    assert "not json" in d["payload_text"]


def test_healthz_without_consumer(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": True, "mqtt": "disabled"}


def test_end_to_end_mqtt_to_api(tmp_path: Path, broker: Any, publisher: Publisher) -> None:
    site = make_site(tmp_path, mqtt_url=broker.url, client_id=f"e2e-{tmp_path.name[-8:]}")
    with TestClient(create_app(site)) as c:
        login(c)
        wait_for(lambda: c.get("/healthz").status_code == 200)
        assert c.get("/healthz").json()["mqtt"] == "connected"
        c.app.state.tickets.consumer.wait_subscribed(10)  # type: ignore[attr-defined]
        alert = make_alert(camera="cam3", hazard="fire")
        publisher.publish(topic_of(alert), alert.to_bytes())
        publisher.publish(topic_of(alert), b"garbage")
        publisher.publish("gwtest/health/cam3", json.dumps({"camera_id": "cam3", "state": "streaming"}))
        wait_for(lambda: c.get("/tickets?hazard=fire").json()["total"] == 1)
        wait_for(lambda: len(c.get("/dead-letters").json()) == 1)
        wait_for(lambda: c.get("/cameras").json()[2]["health"] is not None)
        metrics = c.get("/metrics").text
        for line in ('gridwatch_alerts_consumed_total{event="opened",outcome="created"} 1.0',
                     'gridwatch_dead_letters_received_total{reason="invalid_json"} 1.0',
                     'gridwatch_tickets{hazard="fire",status="received"} 1.0',
                     "gridwatch_dead_letters 1.0",
                     "gridwatch_health_messages_total 1.0",
                     "gridwatch_consumer_connected 1.0"):
            assert line in metrics, line
        broker.stop()
        wait_for(lambda: c.get("/healthz").status_code == 503)
        assert c.get("/healthz").json() == {"status": "degraded", "database": True, "mqtt": "disconnected"}
        assert "gridwatch_consumer_connected 0.0" in c.get("/metrics").text
