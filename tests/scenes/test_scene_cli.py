"""``gridwatch scene`` commands on bad input: a clear message and exit 2, nothing written; three-state scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.incident import IncidentEvent
from pipeline.cli import app
from pipeline.config import load_config
from pipeline.ingest.frame import Frame
from pipeline.scenes.jobs import find_scene, scene_store
from tests.scenes.conftest import T0, brightness_model
from tests.tickets.conftest import GRID


def _text(output: str) -> str:
    """Console output with Rich's line wrapping undone."""
    return " ".join(output.split())


def _config(tmp_path: Path, **scene: object) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({
        "grid": GRID, "cameras": [{"id": "cam1", "url": "a.mp4", "grid": "G1"}],
        "scenes": [{"id": "bin1", "name": "垃圾满溢", "camera": "cam1", "box": [0.0, 0.5, 1.0, 1.0],
                    "states": ["empty", "half", "full"], "bad_states": ["half", "full"], "dwell_seconds": 4,
                    "confirm_k": 1, "confirm_n": 1, "interval_seconds": 1, **scene}]},
        allow_unicode=True), encoding="utf-8")
    return path


def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    config = _config(tmp_path)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    runner = CliRunner(env={"COLUMNS": "500"})  # no wrapping inside the messages
    r = runner.invoke(app, ["scene", "collect", "bin1", "--video", str(not_video), "-c", str(config)])
    assert r.exit_code == 2 and "not a video" in _text(r.output)
    r = runner.invoke(app, ["scene", "collect", "nope", "--video", str(not_video), "-c", str(config)])
    assert r.exit_code == 2 and "no scene 'nope'" in _text(r.output)
    r = runner.invoke(app, ["scene", "train", "bin1", "-c", str(config)])
    assert r.exit_code == 2 and "no labelled crops" in _text(r.output)
    site = load_config(config)
    store = scene_store(site, find_scene(site, "bin1"))
    name = store.add_crop(np.zeros((10, 10, 3), np.uint8), T0)
    store.set_label(name, "full")
    r = runner.invoke(app, ["scene", "train", "bin1", "-c", str(config)])
    assert r.exit_code == 2 and "at least 2 labelled crops" in _text(r.output)
    store.labels_path.write_text("{broken")
    r = runner.invoke(app, ["scene", "train", "bin1", "-c", str(config)])
    assert r.exit_code == 2 and "labels.json: not a labels file" in _text(r.output)
    assert store.labels_path.read_text() == "{broken"  # kept for the engineer to fix, not overwritten
    assert not site.resolve_path(site.scenes[0].model_path()).exists()


def test_three_state_scene_alerts_on_either_bad_state(tmp_path: Path) -> None:
    site = load_config(_config(tmp_path))
    model = site.resolve_path(site.scenes[0].model_path())
    model.parent.mkdir(parents=True)
    brightness_model(model, states=("empty", "half", "full"))
    analyzer = CameraAnalyzer(site, site.camera("cam1"))
    img = np.full((40, 40, 3), 230, np.uint8)
    events = [e for i in range(8) for e in analyzer.analyze(Frame("cam1", img, T0 + i, float(i), i, True), {})]
    assert [e.event for e in events] == [IncidentEvent.OPENED]
    probs = events[0].details["probs"]
    assert events[0].details["state"] == "full" and isinstance(probs, dict) and set(probs) == {"empty", "half", "full"}
    assert events[0].ts == T0 + 4
