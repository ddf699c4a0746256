"""Run-time camera config: the ticket service tells the workers what each camera is (retained MQTT).

* :class:`CameraConfigV1` on ``<prefix>/config/cameras/<camera_id>`` (service -> workers, QoS 1, **retained**):
  the camera entry exactly as in the site YAML (``camera``: the ``cameras[]`` item, zones and hazards
  included, the URL *with* its credentials: the broker ACL lets only workers and the service read it). An
  empty retained payload on the topic means the camera was deleted.
* :class:`CameraIndexV1` on ``<prefix>/config/index`` (service -> workers, QoS 1, retained): every camera id
  the database holds. A worker that was down while a camera was deleted never sees the empty message (the
  broker dropped the retained copy); the index tells it, and it also retires a site-YAML camera that the
  database no longer has.

``revision`` is one counter over all cameras (it grows with every change in the database), so a worker can
tell an old message from a new one whatever the topic: it applies a camera message only when its revision
is higher than the one it runs, and lets an index retire a camera only when the index is at least as new.

The ``camera`` object is validated by the worker with the site YAML's own model
(``pipeline.config.CameraConfig``); this package stays a leaf and keeps it as an object here.

Example:
    >>> m = CameraConfigV1(schema_version=1, camera_id="cam1", revision=3, ts=datetime(2026, 12, 1, tzinfo=UTC),
    ...                    camera={"id": "cam1", "url": "rtsp://10.0.0.7/ch1", "grid": "G1"})
    >>> CameraConfigV1.model_validate_json(m.to_bytes()).revision
    3
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from pipeline.contract.ids import CONFIG_ID_PATTERN
from pipeline.contract.messages import iso_z


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("ts", mode="after", check_fields=False)
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)

    @field_serializer("ts", check_fields=False)
    def _ts_z(self, v: datetime) -> str:
        return iso_z(v)

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON, the MQTT payload."""
        return self.model_dump_json().encode("utf-8")


class CameraConfigV1(_Config):
    """Service -> workers: one camera's current config (retained; empty payload = deleted)."""

    schema_version: Literal[1] = Field(description="Payload schema version; always 1 here.")
    camera_id: str = Field(pattern=CONFIG_ID_PATTERN, description="The camera; equals `camera.id` and the topic level.")
    revision: int = Field(ge=1, description="Site-wide change counter at this camera's last change; a worker "
                          "ignores a message whose revision is not above the one it runs.")
    ts: AwareDatetime = Field(description="When the change was stored, ISO-8601 UTC.")
    camera: dict[str, Any] = Field(description="The camera entry as in the site YAML `cameras[]` (id, url, grid, "
                                   "enabled, decode, max_fps, analysis_interval, zones, hazards).")

    @model_validator(mode="after")
    def _same_id(self) -> CameraConfigV1:
        if self.camera.get("id") != self.camera_id:
            raise ValueError(f"camera.id {self.camera.get('id')!r} differs from camera_id {self.camera_id!r}")
        return self


class CameraIndexV1(_Config):
    """Service -> workers: every camera id in the database (retained)."""

    schema_version: Literal[1] = Field(description="Payload schema version; always 1 here.")
    revision: int = Field(ge=0, description="The highest revision in the database when the index was built.")
    ts: AwareDatetime = Field(description="When the index was built, ISO-8601 UTC.")
    camera_ids: list[str] = Field(description="Ids of every camera the database holds (enabled or not).")
