"""Building an ``AlertV1`` from an incident; the model and the topics live in :mod:`pipeline.contract`.

An alert is the JSON form of one :class:`~pipeline.analyze.incident.Incident` event, enriched with
the camera's grid cell (names and patrol worker), the zone and links to the evidence. It travels on

    ``<prefix>/alerts/<town>/<district>/<community>/<cell>/<camera_id>/<hazard>``

so a patrol worker subscribes to ``<prefix>/alerts/T1/D1/C1/G1/#`` and gets exactly their cell.
The contract's names used here before it existed are re-exported, so ``from pipeline.alerts.schema import
AlertV1, alert_topic`` keeps working. ``python -m pipeline.alerts.schema`` prints the alert's JSON Schema
(kept with every other message's in ``docs/messages/``).

Example:
    >>> alert_topic("gridwatch", ["T1", "D1", "C1", "G1"], "cam1", "parking")
    'gridwatch/alerts/T1/D1/C1/G1/cam1/parking'
    >>> cell_subscription("gridwatch", ["T1", "D1", "C1", "G1"])
    'gridwatch/alerts/T1/D1/C1/G1/#'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.analyze.incident import Hazard, Incident
from pipeline.config import CameraConfig, GridNode, SiteConfig
from pipeline.contract.examples import example_alert as example_alert
from pipeline.contract.ids import SAFE_ID_PATTERN as SAFE_ID
from pipeline.contract.messages import AlertBox as AlertBox
from pipeline.contract.messages import AlertV1 as AlertV1
from pipeline.contract.messages import CameraRef as CameraRef
from pipeline.contract.messages import Evidence as Evidence
from pipeline.contract.messages import GridRef as GridRef
from pipeline.contract.messages import ZoneRef as ZoneRef
from pipeline.contract.schemas import json_schema as _message_schema
from pipeline.contract.topics import alert_topic as alert_topic
from pipeline.contract.topics import cell_subscription as cell_subscription
from pipeline.contract.topics import health_topic as health_topic
from pipeline.contract.topics import status_topic as status_topic
from pipeline.scenes.config import SCENE_HAZARD

__all__ = ["SAFE_ID", "AlertBox", "AlertV1", "CameraRef", "Evidence", "GridRef", "ZoneRef", "alert_topic",
           "build_alert", "cell_subscription", "example_alert", "health_topic", "json_schema", "status_topic"]


# -- building ---------------------------------------------------------------------------------


def _grid_nodes(site: SiteConfig, cell: str) -> list[GridNode]:
    path = site.grid_path(cell)
    nodes: list[GridNode] = []
    level: list[GridNode] = site.grid
    for code in path:
        node = next(n for n in level if n.code == code)
        nodes.append(node)
        level = node.children
    return nodes


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def build_alert(incident: Incident, site: SiteConfig,
                evidence_urls: Evidence | Mapping[str, str | None] | None = None,
                camera: CameraConfig | None = None) -> AlertV1:
    """Turn an incident event into an ``AlertV1`` using the site config.

    Args:
        incident: the analyzer's event.
        site: site config (grid names and patrol, scenes; the camera when ``camera`` is None).
        evidence_urls: ``{"snapshot_url": ..., "clip_url": ...}`` (either may be missing/None).
        camera: the camera entry that raised it (name, zones), as the worker runs it: a run-time camera or
            zone change is not in the site YAML. None: the YAML's entry.

    Raises:
        KeyError: the camera (or its grid cell) is not in the site config.
    """
    cam = camera if camera is not None else site.camera(incident.camera_id)
    nodes = _grid_nodes(site, cam.grid)
    zone, hazard_name = _zone_ref(incident, site, cam)
    if isinstance(evidence_urls, Evidence):
        evidence = evidence_urls
    else:
        ev = dict(evidence_urls or {})
        evidence = Evidence(snapshot_url=ev.get("snapshot_url"), clip_url=ev.get("clip_url"))
    return AlertV1(
        schema_version=1,
        event=incident.event,
        incident_id=incident.id,
        hazard=incident.hazard,
        severity=incident.severity,
        ts=_utc(incident.ts),
        started_at=_utc(incident.started_at),
        camera=CameraRef(id=cam.id, name=cam.name),
        grid=GridRef(path=[n.code for n in nodes], names=[n.name for n in nodes], patrol=nodes[-1].patrol),
        zone=zone,
        confidence=max(0.0, min(1.0, incident.confidence)),
        boxes=[AlertBox(x1=_clip01(b.x1), y1=_clip01(b.y1), x2=_clip01(b.x2), y2=_clip01(b.y2),
                        label=b.label, confidence=_clip01(b.confidence)) for b in incident.boxes],
        details=_jsonable(dict(incident.details)),
        evidence=evidence,
        hazard_name=hazard_name,
    )


def _zone_ref(incident: Incident, site: SiteConfig, cam: CameraConfig) -> tuple[ZoneRef | None, str | None]:
    """The alert's zone and, for a scene, its display name (a scene's zone id is the scene id)."""
    if incident.zone_id is None:
        return None, None
    if incident.hazard is Hazard.SCENE:
        scene = next((s for s in site.scenes if s.id == incident.zone_id), None)
        if scene is not None:
            return ZoneRef(id=scene.id, kind=scene.kind or SCENE_HAZARD, name=scene.name), scene.name
    zc = next((z for z in cam.zones if z.id == incident.zone_id), None)
    return ZoneRef(id=incident.zone_id, kind=str(zc.kind) if zc else "unknown", name=zc.name if zc else None), None


def _clip01(v: float) -> float:
    return max(0.0, min(1.0, float(v)))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so numpy scalars/tuples become plain JSON values."""
    out: dict[str, Any] = json.loads(json.dumps(d, default=_default))
    return out


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, set | frozenset):
        return sorted(o)
    return str(o)


def json_schema() -> dict[str, Any]:
    """JSON Schema of ``AlertV1`` (serialization mode, what goes on the wire; ``docs/messages/alert.schema.json``)."""
    return _message_schema("alert")


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
