"""AlertV1 schema, topic layout and patrol-worker wildcard subscriptions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import topic_matches_sub
from pydantic import ValidationError

from pipeline.alerts.schema import (
    AlertV1,
    alert_topic,
    build_alert,
    cell_subscription,
    example_alert,
    health_topic,
    json_schema,
    status_topic,
)
from pipeline.analyze.incident import Hazard, Incident, IncidentBox, IncidentEvent
from pipeline.config import SiteConfig

REPO = Path(__file__).resolve().parents[2]
CELL = ["T1", "D1", "C1", "G1"]


def make_site() -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": [{"code": "T1", "name": "Town", "children": [
            {"code": "D1", "name": "District 1", "children": [
                {"code": "C1", "name": "Community 1", "children": [
                    {"code": "G1", "name": "Cell 1", "patrol": "Li Wei"},
                    {"code": "G2", "name": "Cell 2", "patrol": "Zhang Min"}]}]}]}],
        "cameras": [
            {"id": "cam1", "name": "North gate", "url": "a.mp4", "grid": "G1",
             "zones": [{"id": "lane", "name": "Fire lane", "kind": "fire_lane",
                        "polygon": [[0, 0], [1, 0], [1, 1]]}]},
            {"id": "cam2", "url": "b.mp4", "grid": "G2", "hazards": ["fire"]},
        ],
        "detectors": {"coco": {"model": "x.onnx"}, "fire": {"model": "f.onnx"}},
    })


def incident(**kw: Any) -> Incident:
    base: dict[str, Any] = dict(
        id="cam1-lane-parking-1714550400-1", event=IncidentEvent.OPENED, hazard=Hazard.PARKING,
        camera_id="cam1", zone_id="lane", started_at=1714550400.0, ts=1714550520.5, confidence=0.91,
        boxes=(IncidentBox(0.1, 0.2, 0.3, 0.4, "car", 0.91),), severity=2, details={"dwell_seconds": 120.5})
    base.update(kw)
    return Incident(**base)


# -- topics -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("prefix", "path", "cam", "hazard", "expected"), [
    ("gridwatch", CELL, "cam1", "parking", "gridwatch/alerts/T1/D1/C1/G1/cam1/parking"),
    ("city/gw", ["A", "B", "C", "D"], "c-9", "fire", "city/gw/alerts/A/B/C/D/c-9/fire"),
])
def test_alert_topic(prefix: str, path: list[str], cam: str, hazard: str, expected: str) -> None:
    assert alert_topic(prefix, path, cam, hazard) == expected


@pytest.mark.parametrize(("prefix", "path", "cam", "hazard"), [
    ("gw", ["T1", "D1", "C1"], "cam1", "fire"),          # 3 levels
    ("gw", ["T1", "D1", "C1", "G1", "X"], "cam1", "fire"),
    ("gw", ["T1", "D/1", "C1", "G1"], "cam1", "fire"),
    ("gw", ["T1", "D1", "+", "G1"], "cam1", "fire"),
    ("gw", ["T1", "D1", "C1", "G#"], "cam1", "fire"),
    ("gw", ["T1", "D1", "C1", ""], "cam1", "fire"),
    ("gw", CELL, "cam/1", "fire"),
    ("gw", CELL, "cam1", "fi+re"),
    ("g+w", CELL, "cam1", "fire"),
    ("$SYS", CELL, "cam1", "fire"),
])
def test_alert_topic_rejects_bad_levels(prefix: str, path: list[str], cam: str, hazard: str) -> None:
    with pytest.raises(ValueError):
        alert_topic(prefix, path, cam, hazard)


@pytest.mark.parametrize(("sub", "topic", "matches"), [
    # patrol worker of cell G1 subscribes to their own cell
    ("gw/alerts/T1/D1/C1/G1/#", "gw/alerts/T1/D1/C1/G1/cam1/parking", True),
    ("gw/alerts/T1/D1/C1/G1/#", "gw/alerts/T1/D1/C1/G2/cam7/parking", False),
    ("gw/alerts/T1/D1/C1/G1/#", "gw/alerts/T1/D1/C1/G10/cam7/parking", False),
    # only fire in their cell, any camera
    ("gw/alerts/T1/D1/C1/G1/+/fire", "gw/alerts/T1/D1/C1/G1/cam3/fire", True),
    ("gw/alerts/T1/D1/C1/G1/+/fire", "gw/alerts/T1/D1/C1/G1/cam3/parking", False),
    # community supervisor: every cell of C1
    ("gw/alerts/T1/D1/C1/#", "gw/alerts/T1/D1/C1/G2/cam7/clutter", True),
    # fire across the whole town
    ("gw/alerts/T1/+/+/+/+/fire", "gw/alerts/T1/D9/C4/G3/cam2/fire", True),
    ("gw/alerts/T1/+/+/+/+/fire", "gw/alerts/T2/D9/C4/G3/cam2/fire", False),
])
def test_patrol_subscription_matches(sub: str, topic: str, matches: bool) -> None:
    assert topic_matches_sub(sub, topic) is matches


def test_cell_subscription_matches_built_topics() -> None:
    sub = cell_subscription("gw", CELL)
    assert sub == "gw/alerts/T1/D1/C1/G1/#"
    for hazard in Hazard:
        assert topic_matches_sub(sub, alert_topic("gw", CELL, "cam1", hazard.value))
    assert not topic_matches_sub(sub, alert_topic("gw", ["T1", "D1", "C1", "G2"], "cam1", "fire"))
    assert topic_matches_sub(cell_subscription("gw", ["T1"]), alert_topic("gw", CELL, "cam1", "fire"))


def test_status_and_health_topics() -> None:
    assert status_topic("gw", "w1") == "gw/status/workers/w1"
    assert health_topic("gw", "cam1") == "gw/health/cam1"
    with pytest.raises(ValueError):
        status_topic("gw", "w/1")


# -- payload ------------------------------------------------------------------------------------

def test_build_alert_from_incident() -> None:
    a = build_alert(incident(), make_site(), {"snapshot_url": "http://x/s.jpg", "clip_url": None})
    assert a.grid.path == CELL
    assert a.grid.names == ["Town", "District 1", "Community 1", "Cell 1"]
    assert a.grid.patrol == "Li Wei"
    assert a.camera.name == "North gate"
    assert a.zone is not None and (a.zone.kind, a.zone.name) == ("fire_lane", "Fire lane")
    assert a.evidence.snapshot_url == "http://x/s.jpg" and a.evidence.clip_url is None
    wire = json.loads(a.to_bytes())
    assert wire["ts"] == "2024-05-01T08:02:00.500000Z"
    assert wire["started_at"] == "2024-05-01T08:00:00Z"
    assert wire["schema_version"] == 1 and wire["event"] == "opened" and wire["hazard"] == "parking"
    assert wire["boxes"][0] == {"x1": 0.1, "y1": 0.2, "x2": 0.3, "y2": 0.4,
                                "label": "car", "confidence": 0.91}


def test_build_alert_whole_frame_hazard_has_no_zone() -> None:
    inc = incident(id="cam2-fire-1", camera_id="cam2", zone_id=None, hazard=Hazard.FIRE, boxes=())
    a = build_alert(inc, make_site(), None)
    assert a.zone is None and a.grid.path[-1] == "G2" and a.grid.patrol == "Zhang Min"
    assert a.evidence.snapshot_url is None


def test_build_alert_unknown_camera() -> None:
    with pytest.raises(KeyError):
        build_alert(incident(camera_id="nope"), make_site(), None)


@pytest.mark.parametrize("event", list(IncidentEvent))
def test_round_trip(event: IncidentEvent) -> None:
    a = build_alert(incident(event=event), make_site(), {"snapshot_url": "s", "clip_url": "c"})
    b = AlertV1.model_validate_json(a.to_bytes())
    assert b == a
    assert b.to_bytes() == a.to_bytes()


def _mutated(path: str, value: Any) -> bytes:
    d = json.loads(example_alert().to_bytes())
    keys = path.split(".")
    tgt = d
    for k in keys[:-1]:
        tgt = tgt[int(k)] if isinstance(tgt, list) else tgt[k]
    if value is _DELETE:
        del tgt[keys[-1]]
    else:
        tgt[keys[-1]] = value
    return json.dumps(d).encode()


_DELETE = object()


@pytest.mark.parametrize(("path", "value"), [
    ("schema_version", 2),
    ("schema_version", _DELETE),
    ("event", "closed"),
    ("hazard", "flood"),
    ("incident_id", "../../etc/passwd"),
    ("incident_id", _DELETE),
    ("severity", 9),
    ("ts", "2024-05-01T08:00:00"),           # no time zone
    ("ts", "yesterday"),
    ("confidence", 1.5),
    ("grid.path", ["T1", "D1", "C1"]),
    ("camera.id", _DELETE),
    ("boxes.0.x2", 1.2),
    ("zone.kind", _DELETE),
    ("surprise", "extra field"),
])
def test_rejects_bad_payloads(path: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        AlertV1.model_validate_json(_mutated(path, value))


def test_rejects_non_json() -> None:
    with pytest.raises(ValidationError):
        AlertV1.model_validate_json(b"\xff not json")


def test_non_utc_offset_is_normalised() -> None:
    a = AlertV1.model_validate_json(_mutated("ts", "2024-05-01T16:02:00+08:00"))
    assert json.loads(a.to_bytes())["ts"] == "2024-05-01T08:02:00Z"


def test_committed_json_schema_is_current() -> None:
    committed = json.loads((REPO / "docs" / "messages" / "alert.schema.json").read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(json_schema())), "run: gridwatch schema --messages docs/messages"


def test_every_field_is_described() -> None:
    schema = json_schema()
    models = [schema, *schema["$defs"].values()]
    for m in models:
        for name, prop in m.get("properties", {}).items():
            assert prop.get("description"), f"{m.get('title')}.{name} has no description"
