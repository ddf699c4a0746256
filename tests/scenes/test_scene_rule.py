"""The scene config and StateRule on a tiny real scene model: k-of-n, dwell, clear, reload, collection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.incident import Hazard, IncidentEvent
from pipeline.config import SiteConfig
from pipeline.ingest.frame import Frame
from pipeline.scenes.config import SceneConfig
from pipeline.scenes.crop import FILL_GREY, cut_crop
from pipeline.scenes.rule import StateRule
from tests.scenes.conftest import T0, brightness_model, scene_site


def _frame(ts: float, bright: bool) -> Frame:
    img = np.full((120, 160, 3), 20, np.uint8)
    if bright:
        img[60:, :] = 230  # the scene's box is the lower half
    return Frame("cam1", img, ts=ts, pts=ts - T0, seq=0, keyframe=True)


def _model(site: SiteConfig) -> Path:
    path = site.resolve_path(site.scenes[0].model_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    return brightness_model(path)


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    base = {"id": "s", "camera": "cam1", "states": ["ok", "bad"], "bad_states": ["bad"]}
    with pytest.raises(ValidationError, match="exactly one of `box` and `polygon`"):
        SceneConfig.model_validate(base)
    with pytest.raises(ValidationError, match=r"bad_states \['full'\] are not in states"):
        SceneConfig.model_validate({**base, "box": [0, 0, 1, 1], "bad_states": ["full"]})
    with pytest.raises(ValidationError, match="x1 < x2"):
        SceneConfig.model_validate({**base, "box": [0.5, 0, 0.2, 1]})
    with pytest.raises(ValidationError, match="extra"):
        SceneConfig.model_validate({**base, "box": [0, 0, 1, 1], "dwel_seconds": 3})
    # A camera the YAML lacks is no error: it may come at run time (the worker keeps the scene waiting).
    assert scene_site(tmp_path, camera="cam7").scenes[0].camera == "cam7"


def test_polygon_crop_greys_the_outside() -> None:
    img = np.full((100, 100, 3), 200, np.uint8)
    crop = cut_crop(img, [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0]])
    assert crop.shape == (50, 50, 3)
    assert int(crop[45, 45, 0]) == 200 and int(crop[45, 2, 0]) == FILL_GREY


def test_bad_state_alerts_after_dwell_and_clears(site: SiteConfig) -> None:
    _model(site)
    analyzer = CameraAnalyzer(site, site.camera("cam1"))
    rule = analyzer.rules[-1]
    assert isinstance(rule, StateRule) and rule.hazard is Hazard.SCENE and rule.zone_id == "lane"
    events = []
    for i in range(60):  # 1 frame/s: clear 0-9, blocked 10-34 (one clear blip at 20), clear from 35
        ts = T0 + i
        bright = 10 <= i < 35 and i != 20
        events += [(i, e) for e in analyzer.analyze(_frame(ts, bright), {})]
    kinds = [(i, e.event) for i, e in events]
    # k=2 of n=3 confirms at 11; dwell 10 s from there -> opens at 21; the blip at 20 is smoothed away.
    assert kinds[0] == (21, IncidentEvent.OPENED)
    assert kinds[-1][1] is IncidentEvent.CLEARED and 35 + 6 <= kinds[-1][0] <= 35 + 8
    opened = events[0][1]
    assert opened.started_at == pytest.approx(T0 + 11, abs=1e-3)
    assert opened.id == f"cam1-lane-scene-{int(T0 + 11)}-1"
    assert opened.details["state"] == "blocked" and opened.details["scene_name"] == "消防通道占用"
    assert opened.details["dwell_seconds"] == pytest.approx(10.0, abs=1e-3)
    assert opened.boxes[0].y1 == 0.5 and opened.boxes[0].label == "blocked"
    assert len([k for _, k in kinds if k is IncidentEvent.OPENED]) == 1
    st = rule.state()
    assert st["model"] == {"path": str(rule.model_path), "loaded": True, "error": None}


def test_short_bad_spell_stays_silent(site: SiteConfig) -> None:
    _model(site)
    analyzer = CameraAnalyzer(site, site.camera("cam1"))
    events = [e for i in range(40) for e in analyzer.analyze(_frame(T0 + i, 10 <= i < 19), {})]
    assert events == []


def test_untrained_scene_collects_then_picks_up_the_model(tmp_path: Path) -> None:
    site = scene_site(tmp_path, collect_every_seconds=5.0, collect_max=4, dwell_seconds=0, confirm_k=1,
                      confirm_n=1)
    analyzer = CameraAnalyzer(site, site.camera("cam1"))
    rule = analyzer.rules[-1]
    assert isinstance(rule, StateRule)
    assert [e for i in range(30) for e in analyzer.analyze(_frame(T0 + i, True), {})] == []
    assert "no model" in str(rule.state()["model"])
    crops = sorted(os.listdir(tmp_path / "lane" / "crops"))
    assert len(crops) == 4  # every 5 s, capped at collect_max
    assert crops[0] == f"{round(T0 * 1000)}.jpg"
    _model(site)  # trained while the worker runs: the next judged frame uses it
    events = analyzer.analyze(_frame(T0 + 31, True), {})
    assert [e.event for e in events] == [IncidentEvent.OPENED]


def test_model_for_other_states_is_refused(site: SiteConfig) -> None:
    path = site.resolve_path(site.scenes[0].model_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    brightness_model(path, states=("empty", "full"))
    analyzer = CameraAnalyzer(site, site.camera("cam1"))
    assert [e for i in range(20) for e in analyzer.analyze(_frame(T0 + i, True), {})] == []
    assert "trained for states ['empty', 'full']" in str(analyzer.rules[-1].state()["model"])


def test_evidence_polygons_include_the_scene_crop(site: SiteConfig) -> None:
    polygons = CameraAnalyzer(site, site.camera("cam1")).zone_polygons_px(160, 120)
    assert polygons["lane"].reshape(-1, 2).tolist() == [[0, 60], [160, 60], [160, 120], [0, 120]]


def test_scene_incident_becomes_an_alert_and_a_ticket(site: SiteConfig, tmp_path: Path) -> None:
    from pipeline.alerts.schema import build_alert
    from pipeline.tickets.db import init_db, session_factory
    from pipeline.tickets.models import Ticket
    from pipeline.tickets.payload import AlertIn
    from pipeline.tickets.service import apply_alert

    _model(site)
    analyzer = CameraAnalyzer(site, site.camera("cam1"))
    events = [e for i in range(25) for e in analyzer.analyze(_frame(T0 + i, True), {})]
    assert [e.event for e in events] == [IncidentEvent.OPENED]
    alert = build_alert(events[0], site)
    assert alert.hazard is Hazard.SCENE and alert.zone is not None and alert.zone.id == "lane"
    assert alert.details["scene_name"] == "消防通道占用"
    # The scene's display name and kind travel in the alert itself, not only in its details.
    assert (alert.zone.kind, alert.zone.name, alert.hazard_name) == ("scene", "消防通道占用", "消防通道占用")
    wire = AlertIn.model_validate_json(alert.to_bytes())
    assert wire.hazard_name == "消防通道占用"
    sessions = session_factory(init_db(f"sqlite:///{tmp_path}/t.db"))
    apply_alert(sessions, wire)
    with sessions() as s:
        ticket = s.query(Ticket).one()
        assert (ticket.hazard, ticket.zone_id, ticket.incident_id) == ("scene", "lane", events[0].id)
        assert ticket.title == "消防通道占用 at North gate"


def test_scene_kind_and_a_run_time_camera_in_the_alert(tmp_path: Path) -> None:
    """``scenes[].kind`` is the alert's zone kind; the running camera entry (here one the YAML lacks, added at run
    time) names the camera; an alert that is no scene's has no ``hazard_name`` on the wire."""
    from pipeline.alerts.schema import build_alert
    from pipeline.analyze.incident import Incident
    from pipeline.config import CameraConfig

    site = scene_site(tmp_path, camera="cam7", kind="fire_lane", name=None)
    cam7 = CameraConfig(id="cam7", name="Back lane", url="e.mp4", grid="G2")
    event = Incident(id="cam7-lane-scene-1", event=IncidentEvent.OPENED, hazard=Hazard.SCENE, camera_id="cam7",
                     zone_id="lane", ts=T0 + 5, started_at=T0, confidence=0.9, severity=3)
    with pytest.raises(KeyError):
        build_alert(event, site)  # the YAML's cameras alone do not know cam7
    alert = build_alert(event, site, camera=cam7)
    assert alert.camera.name == "Back lane" and alert.grid.path == ["T1", "D1", "C1", "G2"]
    assert alert.zone is not None and (alert.zone.kind, alert.zone.name, alert.hazard_name) == ("fire_lane", None,
                                                                                               None)
    assert b"hazard_name" not in alert.to_bytes()  # unset: left out, as older producers sent it


def test_scene_is_configured_only_under_scenes(tmp_path: Path) -> None:
    from tests.tickets.conftest import GRID

    with pytest.raises(ValidationError, match="add the scene under scenes"):
        SiteConfig.model_validate({"grid": GRID, "cameras": [{"id": "cam1", "url": "a.mp4", "grid": "G1",
                                                             "hazards": ["scene"]}]})
    with pytest.raises(ValidationError, match="add the scene under scenes"):
        SiteConfig.model_validate({"grid": GRID, "hazards": {"scene": {"dwell_seconds": 5}}})
