"""scripts/export_dataset.py: verified tickets -> YOLO positives, false alarms -> negatives."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml
from fastapi.testclient import TestClient

from pipeline.alerts.schema import alert_topic
from pipeline.tickets.api import create_app
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.payload import parse_alert
from pipeline.tickets.service import apply_alert
from tests.fixtures.auth import login
from tests.scripts_loader import load_script
from tests.tickets.conftest import make_alert, make_site


def _script():  # type: ignore[no-untyped-def]
    return load_script("export_dataset")


def test_export_verified_and_false_alarm_tickets(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    sessions = session_factory(init_db(site.database_url()))
    box = {"x1": 0.1, "y1": 0.2, "x2": 0.5, "y2": 0.6, "label": "fire", "confidence": 0.9}
    other = {**box, "label": "person"}
    ids = {}
    for name, boxes in (("real", [box, other]), ("fake", [box]), ("open", [box]), ("noframe", [box])):
        alert = make_alert(hazard="fire", incident_id=f"cam1-z1-fire-{name}", boxes=[box] if name != "real"
                           else boxes)
        topic = alert_topic("gwtest", alert.grid.path, "cam1", "fire")
        ids[name] = apply_alert(sessions, parse_alert(topic, alert.model_dump_json().encode(), "gwtest")).ticket_id
        if name != "noframe":
            folder = tmp_path / "evidence" / alert.incident_id
            folder.mkdir(parents=True)
            cv2.imwrite(str(folder / "frame.jpg"), np.full((90, 160, 3), 80, np.uint8))
    with TestClient(create_app(site, start_consumer=False)) as client:
        login(client)
        for name, path in (("real", ["verified"]), ("fake", ["false_alarm"]), ("noframe", ["verified"])):
            for to in path:
                client.post(f"/tickets/{ids[name]}/transition", json={"to": to}).raise_for_status()
        counts = _script().export(client, "fire", ["fire", "smoke"], tmp_path / "ds")
    assert counts == {"positives": 1, "negatives": 1, "skipped": 1}  # "received" is not verified: not exported
    labels = {p.stem: p.read_text() for p in (tmp_path / "ds" / "labels").rglob("*.txt")}
    assert labels[f"cam1__{ids['real']}"] == "0 0.300000 0.400000 0.400000 0.400000\n"  # person box dropped
    assert labels[f"cam1__{ids['fake']}"] == ""
    assert len(list((tmp_path / "ds" / "images").rglob("*.jpg"))) == 2
    data = yaml.safe_load((tmp_path / "ds" / "data.yaml").read_text())
    assert data["names"] == ["fire", "smoke"] and data["nc"] == 2
