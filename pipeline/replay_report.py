"""What ``gridwatch replay`` needs around :class:`~pipeline.replay.Replay`: a camera from the command line,
JSON records and timeline lines.

JSON output is JSON Lines (one object per line), each with a ``type``:

* ``start``: ``video, camera, start_ts, decode, max_fps, rules`` (hazard, zone, rule per rule).
* ``frame``: per analysed frame: ``t`` (s since clip start), ``ts`` (Unix), ``pts``, ``seq``, ``keyframe``,
  ``detections`` (``{detector: {class: {n, max}}}``), ``rules`` (``CameraAnalyzer.rule_states``, Unix
  times as they are), ``events`` (ids of incident events this frame).
* ``incident``: one incident event: ``t, event, id, hazard, zone, started_t, confidence, boxes, details``.
* ``summary``: ``ReplaySummary.to_dict()`` (frames, duration, wall time, incidents with opened/cleared ``t``).

Example:
    >>> site = site_from_spec("clip.mp4", ["fire"], [])
    >>> cam = site.cameras[0]
    >>> cam.hazards, [z.id for z in cam.zones]
    ([<Hazard.FIRE: 'fire'>], [])
    >>> parse_polygon("0,0 1,0 1,1")
    [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pipeline.analyze.incident import Hazard, Incident
from pipeline.annotate import state_summary
from pipeline.config import CameraConfig, DetectorConfig, SiteConfig, ZoneConfig, ZoneKind
from pipeline.replay import FrameRecord, ReplaySummary

SPEC_CAMERA = "replay"
_GRID = [{"code": "R", "name": "replay", "children": [{"code": "RD", "name": "replay", "children": [
    {"code": "RC", "name": "replay", "children": [{"code": "RG", "name": "replay"}]}]}]}]
_ZONE_KIND = {Hazard.PARKING: ZoneKind.NO_PARKING, Hazard.CLUTTER: ZoneKind.CORRIDOR, Hazard.POSTER: ZoneKind.WALL}
_MANIFEST = Path(__file__).resolve().parents[1] / "models" / "manifest.yaml"


def parse_polygon(text: str) -> list[list[float]]:
    """``"x,y x,y ..."`` (normalised 0..1) -> ``[[x, y], ...]``; raises ValueError with the bad part."""
    out: list[list[float]] = []
    for part in text.replace(";", " ").split():
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise ValueError(f"bad point {part!r} in zone {text!r} (want 'x,y x,y ...', 0..1)") from None
        out.append([x, y])
    return out


def _manifest_names() -> set[str]:
    if not _MANIFEST.is_file():
        return set()
    import yaml

    doc = yaml.safe_load(_MANIFEST.read_text(encoding="utf-8")) or {}
    return {str(m.get("name")) for m in doc.get("models", []) if isinstance(m, dict)}


def site_from_spec(video: str, hazards: list[str], zones: list[str], base: SiteConfig | None = None,
                   zone_kind: str | None = None, decode: str | None = None) -> SiteConfig:
    """A site with one camera ``replay`` watching ``video`` for ``hazards``.

    With ``zones`` (each ``"x,y x,y ..."``), every hazard is judged in every zone (``zone-1``, ...);
    without, fire is judged on the whole frame and the other hazards in a whole-frame zone. Rules and
    detectors come from ``base`` (a site YAML) or the defaults, with any manifest model a rule names
    (``fire``, ``clutter``) added as a detector.

    Raises:
        ValueError: an unknown hazard or a bad polygon (pydantic's error for a point outside 0..1).
    """
    try:
        wanted = [Hazard(h) for h in hazards]
    except ValueError as exc:
        raise ValueError(f"{exc}; hazards: {', '.join(h.value for h in Hazard)}") from None
    polygons = [parse_polygon(z) for z in zones]
    whole: list[Hazard] = []
    zone_cfgs: list[ZoneConfig] = []
    if polygons:
        for i, poly in enumerate(polygons, 1):
            kind = ZoneKind(zone_kind) if zone_kind else ZoneKind.AREA
            zone_cfgs.append(ZoneConfig(id=f"zone-{i}", kind=kind, polygon=poly, hazards=wanted))
    else:
        whole = [h for h in wanted if h is Hazard.FIRE]
        zoned = [h for h in wanted if h is not Hazard.FIRE]
        if zoned:
            kind = ZoneKind(zone_kind) if zone_kind else _ZONE_KIND.get(zoned[0], ZoneKind.AREA)
            zone_cfgs.append(ZoneConfig(id="frame", kind=kind, polygon=[[0, 0], [1, 0], [1, 1], [0, 1]],
                                        hazards=zoned))
    camera: dict[str, Any] = {"id": SPEC_CAMERA, "url": video, "grid": "RG", "hazards": whole,
                              "zones": [z.model_dump(mode="json") for z in zone_cfgs]}
    if decode:
        camera["decode"] = decode
    data = base.model_dump(mode="json", exclude={"base_dir"}) if base is not None else {}
    grid = data.get("grid") or _GRID
    if base is not None:
        cells = list(base._cells())
        camera["grid"] = cells[0] if cells else "RG"
    detectors = dict(data.get("detectors") or {"coco": DetectorConfig(model="coco").model_dump(mode="json")})
    known = _manifest_names()
    hazard_rules = base.hazards if base is not None else SiteConfig.model_validate(
        {"grid": _GRID}).hazards
    for h in wanted:
        names = [hazard_rules[h].detector] + (["clutter"] if h is Hazard.CLUTTER else [])
        for n in names:
            if n not in detectors and n in known:
                detectors[n] = DetectorConfig(model=n).model_dump(mode="json")
    site = SiteConfig.model_validate({**data, "grid": grid, "cameras": [camera], "detectors": detectors})
    site.base_dir = base.base_dir if base is not None else str(Path.cwd())
    return site


def _record(v: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = _num(v)
    return out


def _num(v: Any) -> Any:
    """JSON-safe value: numpy scalars to Python, NaN/inf to None, tuples/sets to lists."""
    if isinstance(v, dict):
        return {str(k): _num(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set):
        return [_num(x) for x in v]
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def start_record(summary_like: dict[str, Any], camera: CameraConfig, rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``start`` record."""
    return _record({"type": "start", **summary_like, "decode": camera.decode.value, "max_fps": camera.max_fps,
                 "rules": [{k: r.get(k) for k in ("hazard", "zone", "rule")} for r in rules]})


def frame_record(rec: FrameRecord) -> dict[str, Any]:
    """The ``frame`` record of one analysed frame."""
    f = rec.frame
    return _record({"type": "frame", "t": round(rec.t, 3), "ts": f.ts, "pts": f.pts, "seq": f.seq,
                 "keyframe": f.keyframe, "detections": rec.detection_summary(), "rules": rec.rules,
                 "events": [f"{i.event.value}:{i.id}" for i in rec.incidents]})


def incident_record(inc: Incident, start_ts: float) -> dict[str, Any]:
    """The ``incident`` record of one incident event."""
    return _record({"type": "incident", "t": round(inc.ts - start_ts, 3), "event": inc.event.value, "id": inc.id,
                 "hazard": inc.hazard.value, "zone": inc.zone_id, "started_t": round(inc.started_at - start_ts, 3),
                 "confidence": round(float(inc.confidence), 3),
                 "boxes": [vars(b) for b in inc.boxes], "details": inc.details})


def summary_record(summary: ReplaySummary) -> dict[str, Any]:
    """The closing ``summary`` record."""
    return _record({"type": "summary", **summary.to_dict()})


def dumps(record: dict[str, Any]) -> str:
    """One JSON line."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def timeline_line(rec: FrameRecord, start_ts: float) -> str:
    """``  12.0s  coco: car 3 (0.81) | parking@lane: tracks 1 ...`` for one analysed frame."""
    dets = []
    for name, per in rec.detection_summary().items():
        found = " ".join(f"{c} {v['n']:.0f} ({v['max']:.2f})" for c, v in sorted(per.items()))
        dets.append(f"{name}: {found or '-'}")
    rules = [state_summary(r, rec.frame.ts, start_ts) for r in rec.rules]
    key = "K" if rec.frame.keyframe else " "
    return f"{rec.t:8.2f}s {key} " + " | ".join([*dets, *rules])


def incident_line(inc: Incident, start_ts: float) -> str:
    """``  36.0s  OPENED parking lot-1/no-parking-1 (started 28.0s, conf 0.81) id``."""
    where = f"{inc.camera_id}/{inc.zone_id or 'frame'}"
    return (f"{inc.ts - start_ts:8.2f}s   {inc.event.value.upper()} {inc.hazard.value} {where} "
            f"(started {inc.started_at - start_ts:.1f}s, conf {inc.confidence:.2f}) {inc.id}")
