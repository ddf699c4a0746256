"""The case loop's camera checks follow the ``cameras`` table, not the site YAML: a camera added over the API
(POST /cameras) re-checks its resolved tickets, a deleted one is not asked (real Mosquitto; SQLite and
PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.contract.messages import AlertV1
from pipeline.tickets.api import create_app
from tests.fixtures.auth import login, user_token

from .conftest import Publisher, make_alert, make_site, topic_of, wait_for
from .test_casework_camera_check import JPEG, FakeWorker, _iso, _status

NEW = {"id": "cam5", "name": "East gate", "url": "rtsp://10.0.0.9:554/ch1", "grid": "G2"}


@pytest.fixture
def client(db_url: str, tmp_path: Path, broker: Any) -> Iterator[TestClient]:
    site = make_site(tmp_path, database_url=db_url, mqtt_url=broker.url)
    with TestClient(create_app(site)) as c:
        login(c)
        wait_for(lambda: c.app.state.tickets.consumer.ready)  # type: ignore[attr-defined]
        user_token(c.app, "li", "patrol", ["T1/D1/C1"])  # type: ignore[arg-type]
        yield c


@pytest.fixture
def worker(broker: Any) -> Iterator[FakeWorker]:
    w = FakeWorker(broker.host, broker.port)
    yield w
    w.close()


def _resolve(client: TestClient, publisher: Publisher, camera: str, cell: str) -> int:
    data = make_alert(hazard="parking", ts=time.time()).model_dump(mode="json")  # now: no deadline has passed
    data["camera"]["id"], data["grid"]["path"] = camera, ["T1", "D1", "C1", cell]
    alert = AlertV1.model_validate(data)
    publisher.publish(topic_of(alert), alert.to_bytes())
    ticket = wait_for(lambda: client.get(f"/tickets?camera={camera}&since={_iso(alert.ts)}").json()["items"])[0]
    tid: int = ticket["id"]
    for to in ("dispatched", "in_progress"):
        assert client.post(f"/tickets/{tid}/transition", json={"to": to}).status_code == 200
    assert client.post(f"/tickets/{tid}/proof", content=JPEG, headers={"Content-Type": "image/jpeg"}).status_code == 201
    r = client.post(f"/tickets/{tid}/transition", json={"to": "resolved", "note": "car towed"})
    assert r.status_code == 200, r.text
    return tid


def test_a_camera_added_at_run_time_gets_checks_and_a_deleted_one_none(
        client: TestClient, publisher: Publisher, worker: FakeWorker) -> None:
    """cam5 is not in the site YAML: after POST /cameras its resolved ticket is re-checked (-> checked).
    cam1 is in the YAML: after DELETE /cameras/cam1 its resolved ticket gets no check (stays resolved)."""
    assert client.post("/cameras", json=NEW).status_code == 201
    added = _resolve(client, publisher, "cam5", "G2")
    wait_for(lambda: _status(client, added) == "checked")
    assert [(r.camera_id, r.ticket_id) for r in worker.requests] == [("cam5", added)]

    assert client.delete("/cameras/cam1").status_code == 204
    removed = _resolve(client, publisher, "cam1", "G1")
    assert client.get(f"/tickets/{removed}/camera-checks").json() == []
    assert _status(client, removed) == "resolved"
    # Proof that the loop ran after that resolve: a check queued now still goes out, to cam5 only.
    again = _resolve(client, publisher, "cam5", "G2")
    wait_for(lambda: _status(client, again) == "checked")
    assert [r.camera_id for r in worker.requests] == ["cam5", "cam5"]
