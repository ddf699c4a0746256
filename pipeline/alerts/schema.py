"""The versioned alert payload (``AlertV1``) and the MQTT topic layout.

An alert is the JSON form of one :class:`~pipeline.analyze.incident.Incident` event, enriched with
the camera's grid cell (names and patrol worker), the zone and links to the evidence. It travels on

    ``<prefix>/alerts/<town>/<district>/<community>/<cell>/<camera_id>/<hazard>``

so a patrol worker subscribes to ``<prefix>/alerts/T1/D1/C1/G1/#`` and gets exactly their cell.
``python -m pipeline.alerts.schema`` prints the JSON Schema (kept in ``docs/alert.schema.json``).

Example:
    >>> alert_topic("gridwatch", ["T1", "D1", "C1", "G1"], "cam1", "parking")
    'gridwatch/alerts/T1/D1/C1/G1/cam1/parking'
    >>> cell_subscription("gridwatch", ["T1", "D1", "C1", "G1"])
    'gridwatch/alerts/T1/D1/C1/G1/#'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator

from pipeline.analyze.incident import Hazard, Incident, IncidentEvent
from pipeline.config import GRID_LEVELS, GridNode, SiteConfig

SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
"""Incident ids: safe as a file name and as an MQTT topic level."""

_SAFE_ID_RE = re.compile(SAFE_ID)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraRef(_Strict):
    """The camera that saw the hazard."""

    id: str = Field(description="Camera id from the site config.")
    name: str | None = Field(default=None, description="Human-readable camera name.")


class GridRef(_Strict):
    """Where the camera sits in the four-level grid (town, district, community, cell)."""

    path: list[str] = Field(min_length=4, max_length=4,
                            description="Grid codes from town to micro-grid cell, e.g. [T1, D1, C1, G1].")
    names: list[str] = Field(min_length=4, max_length=4,
                             description="Human-readable names of the four levels.")
    patrol: str | None = Field(default=None, description="Patrol worker or team responsible for the cell.")


class ZoneRef(_Strict):
    """The zone the hazard lies in."""

    id: str = Field(description="Zone id, unique within its camera.")
    kind: str = Field(description="Zone kind, e.g. no_parking, fire_lane, corridor.")
    name: str | None = Field(default=None, description="Human-readable zone name.")


class AlertBox(_Strict):
    """One object behind the alert, normalised 0..1 image coordinates."""

    x1: float = Field(ge=0, le=1, description="Left edge, 0..1 of the image width.")
    y1: float = Field(ge=0, le=1, description="Top edge, 0..1 of the image height.")
    x2: float = Field(ge=0, le=1, description="Right edge, 0..1 of the image width.")
    y2: float = Field(ge=0, le=1, description="Bottom edge, 0..1 of the image height.")
    label: str = Field(description="Detector class name, e.g. 'car'.")
    confidence: float = Field(ge=0, le=1, description="Detector confidence 0..1.")


class Evidence(_Strict):
    """Links to the evidence; null while not (yet) available."""

    snapshot_url: str | None = Field(default=None, description="Annotated JPEG snapshot URL.")
    clip_url: str | None = Field(default=None, description="Short MP4 clip URL around the event.")


class AlertV1(_Strict):
    """Alert payload, version 1. Unknown fields are rejected; incompatible changes bump the version.

    Example:
        >>> a = AlertV1.model_validate_json(example_alert().model_dump_json())
        >>> str(a.event), str(a.hazard), a.grid.path[-1], a.model_dump(mode="json")["ts"]
        ('opened', 'parking', 'G1', '2024-05-01T08:02:00Z')
    """

    schema_version: Literal[1] = Field(description="Payload schema version; always 1 here (required).")
    event: IncidentEvent = Field(
        description="opened (new incident), updated (still present), cleared (gone).")
    incident_id: str = Field(pattern=SAFE_ID, max_length=200,
                             description="Stable id shared by all events of one incident (idempotency key).")
    hazard: Hazard = Field(description="Which hazard: parking, fire, clutter or poster.")
    severity: int = Field(ge=1, le=5, description="1 (low) .. 5 (critical).")
    ts: AwareDatetime = Field(description="Time of this event, ISO-8601 UTC, e.g. 2024-05-01T08:00:00Z.")
    started_at: AwareDatetime = Field(description="When the hazard was first seen, ISO-8601 UTC.")
    camera: CameraRef = Field(description="The camera.")
    grid: GridRef = Field(description="The camera's grid cell and its ancestors.")
    zone: ZoneRef | None = Field(default=None,
                                 description="The zone, or null for whole-frame hazards (fire).")
    confidence: float = Field(ge=0, le=1, description="Best detector confidence behind the incident.")
    boxes: list[AlertBox] = Field(default_factory=list, description="Objects behind the incident.")
    details: dict[str, Any] = Field(default_factory=dict,
                                    description="Hazard-specific extras (dwell_seconds, blocked share, ...).")
    evidence: Evidence = Field(default_factory=Evidence, description="Snapshot and clip links.")
    worker_id: str | None = Field(default=None, max_length=200,
                                  description="Id of the worker that published it (scope of `seq`); optional.")
    seq: int | None = Field(default=None, ge=1,
                            description="Per-worker sequence number, 1, 2, 3, ... across restarts (persisted in "
                            "the worker's outbox); a jump shows a lost alert. Optional.")

    @field_validator("ts", "started_at")
    @classmethod
    def _to_utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)

    @field_serializer("ts", "started_at")
    def _iso_z(self, v: datetime) -> str:
        return v.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON, the MQTT payload (``worker_id``/``seq`` left out while unset)."""
        unset = {name for name in _OPTIONAL_TRAILER if getattr(self, name) is None}
        return self.model_dump_json(exclude=unset or None).encode("utf-8")


_OPTIONAL_TRAILER = ("worker_id", "seq")
"""Fields added to version 1 after its release: omitted when None, so a payload without them is byte-for-byte
what older producers sent and older consumers accept it."""


# -- topics -----------------------------------------------------------------------------------


def _check_level(value: str, what: str) -> str:
    if not value or any(ch in value for ch in "/+#\x00"):
        raise ValueError(f"{what} {value!r} is not a valid MQTT topic level "
                         "(empty or contains '/', '+', '#')")
    return value


def _check_prefix(prefix: str) -> str:
    if not prefix or any(ch in prefix for ch in "+#\x00") or prefix.startswith("$"):
        raise ValueError(f"topic prefix {prefix!r} must be non-empty, without '+', '#' or a leading '$'")
    for level in prefix.split("/"):
        _check_level(level, "topic prefix level")
    return prefix


def alert_topic(prefix: str, grid_path: Sequence[str], camera_id: str, hazard: str) -> str:
    """``<prefix>/alerts/<l1>/<l2>/<l3>/<l4>/<camera>/<hazard>``.

    Raises:
        ValueError: ``grid_path`` is not four levels, or a level contains '/', '+' or '#'.
    """
    if len(grid_path) != len(GRID_LEVELS):
        raise ValueError(f"grid path needs {len(GRID_LEVELS)} levels, got {list(grid_path)}")
    levels = [_check_level(str(g), "grid code") for g in grid_path]
    return "/".join([_check_prefix(prefix), "alerts", *levels, _check_level(camera_id, "camera id"),
                     _check_level(str(hazard), "hazard")])


def cell_subscription(prefix: str, grid_path: Sequence[str]) -> str:
    """Subscription filter for every alert under a grid node (1..4 levels), e.g. ``.../T1/D1/#``."""
    if not 1 <= len(grid_path) <= len(GRID_LEVELS):
        raise ValueError(f"grid path needs 1..{len(GRID_LEVELS)} levels, got {list(grid_path)}")
    levels = [_check_level(str(g), "grid code") for g in grid_path]
    return "/".join([_check_prefix(prefix), "alerts", *levels, "#"])


def status_topic(prefix: str, worker_id: str) -> str:
    """Retained worker status topic ``<prefix>/status/workers/<worker_id>``."""
    return f"{_check_prefix(prefix)}/status/workers/{_check_level(worker_id, 'worker id')}"


def health_topic(prefix: str, camera_id: str) -> str:
    """Retained camera health topic ``<prefix>/health/<camera_id>``."""
    return f"{_check_prefix(prefix)}/health/{_check_level(camera_id, 'camera id')}"


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
                evidence_urls: Evidence | Mapping[str, str | None] | None = None) -> AlertV1:
    """Turn an incident event into an ``AlertV1`` using the site config.

    Args:
        incident: the analyzer's event.
        site: site config (camera name, grid names and patrol, zone kind/name).
        evidence_urls: ``{"snapshot_url": ..., "clip_url": ...}`` (either may be missing/None).

    Raises:
        KeyError: the camera (or its grid cell) is not in the site config.
    """
    cam = site.camera(incident.camera_id)
    nodes = _grid_nodes(site, cam.grid)
    zone: ZoneRef | None = None
    if incident.zone_id is not None:
        zc = next((z for z in cam.zones if z.id == incident.zone_id), None)
        zone = ZoneRef(id=incident.zone_id, kind=str(zc.kind) if zc else "unknown",
                       name=zc.name if zc else None)
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
    )


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


def example_alert() -> AlertV1:
    """A valid sample alert (docs and tests)."""
    return AlertV1(
        schema_version=1, event=IncidentEvent.OPENED, incident_id="cam1-z1-parking-1714550400-1",
        hazard=Hazard.PARKING,
        severity=2, ts=_utc(1714550520.0), started_at=_utc(1714550400.0),
        camera=CameraRef(id="cam1", name="North gate"),
        grid=GridRef(path=["T1", "D1", "C1", "G1"], names=["Town", "District", "Community", "Cell 1"],
                     patrol="Li Wei"),
        zone=ZoneRef(id="z1", kind="fire_lane", name="Fire lane A"), confidence=0.87,
        boxes=[AlertBox(x1=0.1, y1=0.2, x2=0.3, y2=0.4, label="car", confidence=0.87)],
        details={"dwell_seconds": 120.0},
        evidence=Evidence(snapshot_url="http://127.0.0.1:8080/evidence/cam1-z1-parking-1714550400-1/snapshot.jpg"),
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema of ``AlertV1`` (serialization mode, what goes on the wire)."""
    schema = AlertV1.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://gridwatch.example/alert.schema.json"
    return schema


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
