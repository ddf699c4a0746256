"""Helpers of the analyze tests: load recorded detection sequences and replay them through a rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.analyze.incident import Incident, IncidentEvent
from pipeline.analyze.rules import FrameView, Rule
from pipeline.detect.detections import Detections

DATA = Path(__file__).parent / "data"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


def frames(data: dict[str, Any], t0: float = 0.0) -> Iterator[tuple[float, Detections]]:
    """(ts, Detections) per recorded frame, ts shifted by ``t0`` (e.g. a wall-clock epoch)."""
    names = {int(k): v for k, v in data["class_names"].items()}
    for f in data["frames"]:
        yield t0 + float(f["ts"]), Detections.from_arrays(f["xyxy"], f["confidence"], f["class_id"], names)


def view(ts: float, detections: Detections, width: int, height: int, detector: str = "coco") -> FrameView:
    """A frame view without an image holding ``detections`` as the output of ``detector``."""
    return FrameView(ts, width, height, None, {detector: detections})


def replay(rule: Rule, data: dict[str, Any], t0: float = 0.0) -> list[Incident]:
    out: list[Incident] = []
    for ts, det in frames(data, t0):
        out.extend(rule.judge(view(ts, det, int(data["width"]), int(data["height"]), rule.rule.detector)))
    return out


def of(events: list[Incident], kind: IncidentEvent) -> list[Incident]:
    return [e for e in events if e.event is kind]
