"""A ticket store with judged fire tickets on three cameras, raw frames taken from ../shared/datasets/fire."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline.tickets.api import create_app
from pipeline.tickets.db import session_factory
from pipeline.tickets.payload import parse_alert
from pipeline.tickets.service import apply_alert
from tests.fixtures.auth import bearer, login, user_token
from tests.tickets.conftest import CAMERAS, GRID, make_alert, topic_of

SHARED_FIRE = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fire"


def shared_frames(n: int, split: str = "val") -> list[tuple[Path, list[list[float]]]]:
    """``n`` real fire frames with their labelled boxes (class, x1, y1, x2, y2 normalised), in name order."""
    out = []
    for img in sorted((SHARED_FIRE / "images" / split).glob("*.jpg")):
        lab = SHARED_FIRE / "labels" / split / f"{img.stem}.txt"
        rows = [[float(v) for v in line.split()] for line in lab.read_text().splitlines() if line.strip()]
        boxes = [[r[0], r[1] - r[3] / 2, r[2] - r[4] / 2, r[1] + r[3] / 2, r[2] + r[4] / 2] for r in rows]
        if boxes:
            out.append((img, boxes))
        if len(out) == n:
            break
    return out


def write_config(tmp_path: Path) -> Path:
    """The tickets tests' site as a YAML file (DB and evidence in ``tmp_path``)."""
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({
        "grid": GRID, "cameras": CAMERAS,
        "api": {"database_url": f"sqlite:///{tmp_path}/tickets.db", "evidence_dir": str(tmp_path / "evidence")},
        "mqtt": {"topic_prefix": "gwtest"}}))
    return path


@dataclass
class World:
    """A judged ticket store: ``ids[name]`` -> ticket id, ``frames[name]`` -> the shared image used."""

    app: FastAPI
    client: TestClient
    ids: dict[str, int]
    frames: dict[str, Path]
    config: Path
    engineer: str


def _alert_box(b: list[float], label: str = "fire") -> dict[str, Any]:
    return {"x1": b[1], "y1": b[2], "x2": b[3], "y2": b[4], "label": label, "confidence": 0.8}


PLAN = {
    # name: (camera, how it is judged)
    "c1_corrected": ("cam1", "verdict_corrected"),   # engineer: confirmed with the true boxes (and smoke)
    "c1_status": ("cam1", "transition_verified"),     # dispatcher move: the alert's boxes stand
    "c1_fake": ("cam1", "verdict_false"),
    "c2_status": ("cam2", "transition_verified"),
    "c2_fake": ("cam2", "transition_false"),
    "c3_corrected": ("cam3", "verdict_corrected"),
    "c3_fake": ("cam3", "verdict_false"),
    "c3_person": ("cam3", "transition_verified_person"),  # only a box of a class the set lacks: skipped
    "c2_open": ("cam2", "none"),                          # nobody judged it: not exported
}


def build_world(tmp_path: Path) -> World:
    """Tickets of :data:`PLAN`, raw frames in the evidence folder, judged through the API."""
    config = write_config(tmp_path)
    from pipeline.config import load_config

    site = load_config(config)
    app = create_app(site, start_consumer=False)
    client = TestClient(app)
    client.__enter__()
    login(client)
    sessions = session_factory(app.state.tickets.engine)
    real = shared_frames(len(PLAN))
    ids: dict[str, int] = {}
    frames: dict[str, Path] = {}
    for (name, (camera, _how)), (img, boxes) in zip(PLAN.items(), real, strict=True):
        label = "person" if name == "c3_person" else "fire"
        # The detector's box: the first true box, shifted (what an operator would correct).
        b = boxes[0]
        shifted = [b[0], min(b[1] + 0.05, 0.9), b[2], min(b[3] + 0.05, 0.95), b[4]]
        alert = make_alert(hazard="fire", camera=camera, incident_id=f"{camera}-z1-fire-{name.replace('_', '-')}",
                           boxes=[_alert_box(shifted, label)])
        ids[name] = apply_alert(sessions, parse_alert(topic_of(alert), alert.model_dump_json().encode(),
                                                      "gwtest")).ticket_id
        folder = site.resolve_path(site.api.evidence_dir) / alert.incident_id
        folder.mkdir(parents=True)
        shutil.copyfile(img, folder / "frame.jpg")
        frames[name] = img
    engineer = user_token(app, "eng", "engineer", ["T1"])
    for name, (_camera, how) in PLAN.items():
        tid = ids[name]
        if how == "verdict_corrected":
            boxes = [{"label": "fire", "xyxy": b[1:]} for b in shared_frames(len(PLAN))[list(PLAN).index(name)][1]]
            boxes.append({"label": "smoke", "xyxy": [0.0, 0.0, 0.25, 0.2]})
            r = client.post(f"/tickets/{tid}/verdict", json={"verdict": "confirmed", "boxes": boxes},
                            headers=bearer(engineer))
            assert r.status_code == 201, r.text
        elif how == "verdict_false":
            r = client.post(f"/tickets/{tid}/verdict", json={"verdict": "false_alarm"}, headers=bearer(engineer))
            assert r.status_code == 201, r.text
        elif how.startswith("transition_"):
            to = "false_alarm" if how == "transition_false" else "verified"
            client.post(f"/tickets/{tid}/transition", json={"to": to}).raise_for_status()
    return World(app, client, ids, frames, config, engineer)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file."""
    img = cv2.imread(str(path))
    assert img is not None, path
    return int(img.shape[1]), int(img.shape[0])


def tiny_fire_set(out: Path, n: int = 16, cameras: int = 4) -> Path:
    """An exported set (``export_hazard``) of ``n`` real fire training frames spread over ``cameras`` cameras."""
    from pipeline.dataset.export import export_hazard
    from pipeline.tickets.verdicts import LabelBox, LabelledFrame, Verdict

    names = ["fire", "smoke"]
    imgs = sorted((SHARED_FIRE / "images" / "train").glob("*.jpg"))[::20][:n]
    frames, files = [], {}
    for i, img in enumerate(imgs, start=1):
        rows = [[float(v) for v in line.split()] for line in
                (SHARED_FIRE / "labels" / "train" / f"{img.stem}.txt").read_text().splitlines() if line.strip()]
        boxes = tuple(LabelBox(names[int(r[0])], r[1] - r[3] / 2, r[2] - r[4] / 2, r[1] + r[3] / 2, r[2] + r[4] / 2)
                      for r in rows)
        frames.append(LabelledFrame(i, f"inc-{i}", f"cam{i % cameras}", "fire",
                                    Verdict.CONFIRMED if boxes else Verdict.FALSE_ALARM, boxes, False, "test", None))
        files[i] = img
    export_hazard(frames, lambda f: files[f.ticket_id].read_bytes(), "fire", out, names, val_fraction=0.3)
    return out


def fire_manifest(path: Path) -> Path:
    """A manifest holding only the deployed fire model of models/manifest.yaml (its file by absolute path)."""
    repo = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((repo / "models" / "manifest.yaml").read_text())
    fire = next(e for e in doc["models"] if e["name"] == "fire")
    fire["file"] = str((repo / "models" / fire["file"]).resolve())
    path.write_text(yaml.safe_dump({"models": [fire]}))
    return path
