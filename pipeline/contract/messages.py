"""The payloads workers send today: alert, camera health, parking occupancy, worker status, debug request.

Each model is versioned by its name (``V1``). ``AlertV1`` also carries ``schema_version: 1`` and rejects
unknown fields (an incompatible change is a new version). The gauges (health, occupancy) *ignore*
unknown fields, so a newer worker may add a field without an older service losing the message; the
worker status and the debug request are small enough to stay closed.

Producers serialise with ``to_bytes()`` where the model has one; the retained gauges are written by the
worker as plain JSON dicts (``MqttPublisher.publish_gauge``), and a test keeps those dicts inside the
models. Topics are in :mod:`pipeline.contract.topics`, the planned messages of issue 9 in
:mod:`pipeline.contract.casework`.

Example:
    >>> from pipeline.contract.examples import example_alert
    >>> a = AlertV1.model_validate_json(example_alert().to_bytes())
    >>> str(a.event), str(a.hazard), a.grid.path[-1], a.model_dump(mode="json")["ts"]
    ('opened', 'parking', 'G1', '2024-05-01T08:02:00Z')
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator

from pipeline.contract.enums import Hazard, IncidentEvent
from pipeline.contract.ids import SAFE_ID_MAX_LENGTH, SAFE_ID_PATTERN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="ignore")


def iso_z(v: datetime) -> str:
    """ISO-8601 UTC with a ``Z`` (the wire form of every timestamp field that is a datetime)."""
    return v.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- alert -----------------------------------------------------------------------------------------


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
    kind: str = Field(description="Zone kind, e.g. no_parking, fire_lane, corridor; a scene's crop (hazard `scene`): "
                      "the scene's `kind`, or `scene`.")
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
    """Alert payload, version 1. Unknown fields are rejected; incompatible changes bump the version."""

    schema_version: Literal[1] = Field(description="Payload schema version; always 1 here (required).")
    event: IncidentEvent = Field(
        description="opened (new incident), updated (still present), cleared (gone).")
    incident_id: str = Field(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH,
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
    models: list[str] | None = Field(default=None, max_length=16,
                                     description="The model version(s) behind the incident, `name@version` "
                                     "(e.g. `fire@v3`; the canary's on a canary camera). Optional, added in 1.")
    hazard_name: str | None = Field(default=None, max_length=100,
                                    description="Display name of what was seen when `hazard` alone does not say "
                                    "it: a scene's `name` (e.g. 消防通道占用) for hazard `scene`. Optional, added "
                                    "in 1.")

    @field_validator("ts", "started_at")
    @classmethod
    def _to_utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)

    @field_serializer("ts", "started_at")
    def _iso_z(self, v: datetime) -> str:
        return iso_z(v)

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON, the MQTT payload (the optional trailer fields left out while unset)."""
        unset = {name for name in _OPTIONAL_TRAILER if getattr(self, name) is None}
        return self.model_dump_json(exclude=unset or None).encode("utf-8")


_OPTIONAL_TRAILER = ("worker_id", "seq", "models", "hazard_name")
"""Fields added to version 1 after its release: omitted when None, so a payload without them is byte-for-byte
what older producers sent and older consumers accept it."""


# -- retained gauges -------------------------------------------------------------------------------


class CameraHealthV1(_Open):
    """Camera health, retained on ``<prefix>/health/<camera_id>`` every ``worker.health_interval_seconds``.

    The reader's ``CameraHealth.to_dict()`` plus the worker's analysis counters. Only ``state`` is
    required; unknown fields are ignored (a newer worker may add some).
    """

    camera_id: str | None = Field(default=None, description="Camera id; equal to the topic's last level.")
    state: str = Field(min_length=1, description="Reader state: starting, streaming, reconnecting, error, "
                       "stopped.")
    last_frame_ts: float | None = Field(default=None, description="Unix seconds of the last decoded frame; "
                                        "null before the first.")
    frames_decoded: int = Field(default=0, description="Frames decoded since start (across reconnects).")
    frames_dropped: int = Field(default=0, description="Frames overwritten before analysis took them.")
    reconnects: int = Field(default=0, description="Times the source was reopened after the first attempt.")
    last_error: str | None = Field(default=None, description="Latest failure (kept after recovery), "
                                   "credentials masked.")
    decode_mode: str | None = Field(default=None, description="Configured decode mode: auto, keyframes, "
                                    "interval.")
    decode_mode_effective: str | None = Field(default=None, description="What is decoded now: keyframes or "
                                              "interval.")
    required_fps: float = Field(default=0.0, description="Highest analysis rate the camera's hazards need "
                                "(0: key frames suffice).")
    fps: float | None = Field(default=None, description="Measured stream frame rate.")
    keyframe_interval_s: float | None = Field(default=None, description="Measured key-frame interval, s.")
    analysis_fps: float | None = Field(default=None, description="Frames/s handed to analysis.")
    rate_warning: str | None = Field(default=None, description="Why a hazard cannot get the rate it needs.")
    decode_errors: int = Field(default=0, description="Packets the decoder rejected since start.")
    truncated_loops: int = Field(default=0, description="Passes over a file shorter than it declares.")
    frames_analysed: int = Field(default=0, description="Frames analysed since start.")
    frames_skipped: int = Field(default=0, description="Frames not analysed (analysis busy).")
    analysis_error: str | None = Field(default=None, description="Latest analysis failure, or null.")
    worker_id: str | None = Field(default=None, description="Id of the worker running the camera.")
    url: str | None = Field(default=None, description="Camera source URL, credentials masked.")
    ts: float | None = Field(default=None, description="Unix seconds when this report was made.")


class OccupancyV1(_Open):
    """Parking occupancy of one ``parking`` zone with a capacity, retained on
    ``<prefix>/occupancy/<camera_id>/<zone_id>`` with each health report."""

    used: int = Field(ge=0, description="Vehicles counted in the zone (median over the last frames); may "
                      "exceed capacity.")
    free: int = Field(ge=0, description="max(0, capacity - used).")
    capacity: int = Field(ge=0, description="Parking spaces of the zone (site config).")
    ts: float | None = Field(default=None, description="Unix seconds of the last analysed frame counted.")
    camera_id: str = Field(description="Camera id (the topic's camera level).")
    zone_id: str = Field(description="Zone id (the topic's last level).")
    grid_path: list[str] = Field(min_length=4, max_length=4, description="The camera's grid cell, town first.")


class WorkerStatusV1(_Strict):
    """Worker liveness, retained on ``<prefix>/status/workers/<worker_id>``: ``online`` after each connect,
    ``offline`` after a clean stop or, as the MQTT last will, when the worker dies."""

    state: Literal["online", "offline"] = Field(description="online or offline.")
    ts: AwareDatetime = Field(description="When the worker set this state, ISO-8601 UTC.")
    last_seq: int | None = Field(default=None, ge=1,
                                 description="The last alert sequence number (`AlertV1.seq`) this worker has "
                                 "queued; the service asks for a resend when it has seen less. Optional (absent "
                                 "before the first alert and in the last will).")

    @field_serializer("ts")
    def _iso_z(self, v: datetime) -> str:
        return iso_z(v)

    def to_bytes(self) -> bytes:
        """The payload, ``{"state": "online", "ts": "...Z"}`` (``json.dumps`` spacing; ``last_seq`` only when set)."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True)).encode()


# -- debug view ------------------------------------------------------------------------------------


class DebugRequestV1(_Open):
    """A request for a camera's debug picture on ``<prefix>/debug/request/<camera_id>`` (QoS 0).

    The worker running the camera publishes the JPEG on ``reply_to`` (an empty payload: no analysed
    frame within its wait). Unknown fields are ignored.
    """

    reply_to: str = Field(min_length=1, max_length=1024,
                          description="Topic of the answer: <prefix>/debug/reply/<camera_id>/<request id>.")

    def to_bytes(self) -> bytes:
        """The payload, ``{"reply_to": "..."}``."""
        return json.dumps({"reply_to": self.reply_to}).encode()
