"""Parsing and checking of MQTT payloads the ticket consumer receives.

Alerts are validated with the producer's :class:`pipeline.alerts.schema.AlertV1`, then read into
:class:`AlertIn`, the subset of fields the ticket store uses (so the store does
not depend on the producer model's Python types). The topic must agree with the payload:
``<prefix>/alerts/<l1>/<l2>/<l3>/<l4>/<camera_id>/<hazard>``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.alerts.schema import AlertV1
from pipeline.analyze.incident import Hazard


class PayloadError(ValueError):
    """A payload that cannot be used; ``kind`` is a short label for metrics, ``str()`` the detail."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CameraRef(_In):
    """Camera named in an alert."""

    id: str = Field(min_length=1, max_length=100)
    name: str | None = None


class GridRef(_In):
    """Grid position of the camera: four codes town -> cell."""

    path: list[str] = Field(min_length=4, max_length=4)
    names: list[str] = Field(default_factory=list)
    patrol: str | None = None


class ZoneRef(_In):
    """Zone an alert is about."""

    id: str
    kind: str | None = None
    name: str | None = None


class BoxIn(_In):
    """One object box, normalised coordinates."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    confidence: float


class EvidenceRef(_In):
    """Evidence links (the clip may arrive in a later ``updated``)."""

    snapshot_url: str | None = None
    clip_url: str | None = None


class AlertIn(_In):
    """The fields of an ``AlertV1`` payload that the ticket store reads."""

    schema_version: Literal[1]
    event: Literal["opened", "updated", "cleared"]
    incident_id: str = Field(min_length=1, max_length=200)
    hazard: Hazard
    severity: int = Field(ge=1, le=5)
    ts: datetime
    started_at: datetime
    camera: CameraRef
    grid: GridRef
    zone: ZoneRef | None = None
    confidence: float = Field(ge=0.0, le=1.0)
    boxes: list[BoxIn] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    evidence: EvidenceRef = Field(default_factory=EvidenceRef)

    @field_validator("ts", "started_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @property
    def message_key(self) -> str:
        """Identity of this message within its incident (redelivery yields the same key)."""
        return f"alert:{self.event}:{self.ts.isoformat()}"


class HealthIn(_In):
    """Camera health JSON (``CameraHealth.to_dict()``) from ``<prefix>/health/<camera_id>``."""

    camera_id: str | None = None
    state: str = Field(min_length=1, max_length=32)
    last_frame_ts: float | None = None
    frames_decoded: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    last_error: str | None = None


def _producer_validate(data: dict[str, Any]) -> dict[str, Any]:
    """Validate with the producer's strict :class:`AlertV1`; returns its JSON dump."""
    dumped: dict[str, Any] = AlertV1.model_validate(data).model_dump(mode="json")
    return dumped


def _load_json(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError("invalid_json", str(exc)) from exc
    if not isinstance(data, dict):
        raise PayloadError("schema", f"expected a JSON object, got {type(data).__name__}")
    return data


def _short(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)


def topic_levels(topic: str, prefix: str, kind: str) -> list[str] | None:
    """Levels after ``<prefix>/<kind>/`` of ``topic``, or None when it is not under that branch."""
    head = [*prefix.split("/"), kind]
    levels = topic.split("/")
    if levels[: len(head)] != head:
        return None
    return levels[len(head):]


def parse_alert(topic: str, payload: bytes, prefix: str) -> AlertIn:
    """Parse and check an alert message.

    Args:
        topic: the MQTT topic it arrived on.
        payload: raw bytes.
        prefix: configured topic prefix.

    Returns:
        The alert.

    Raises:
        PayloadError: not JSON (``invalid_json``), wrong shape (``schema``) or the topic disagrees with
            the payload (``topic_mismatch``).
    """
    data = _load_json(payload)
    try:
        alert = AlertIn.model_validate(_producer_validate(data))
    except ValidationError as exc:
        raise PayloadError("schema", _short(exc)) from exc
    levels = topic_levels(topic, prefix, "alerts")
    expected = [*alert.grid.path, alert.camera.id, alert.hazard.value]
    if levels != expected:
        raise PayloadError("topic_mismatch",
                           f"topic {topic!r} does not match payload levels {'/'.join(expected)!r}")
    return alert


def parse_health(topic: str, payload: bytes, prefix: str) -> tuple[str, HealthIn]:
    """Parse a camera health message; returns ``(camera_id, health)``.

    Raises:
        PayloadError: as :func:`parse_alert`.
    """
    levels = topic_levels(topic, prefix, "health")
    if not levels or len(levels) != 1 or not levels[0]:
        raise PayloadError("topic_mismatch", f"unexpected health topic {topic!r}")
    data = _load_json(payload)
    try:
        health = HealthIn.model_validate(data)
    except ValidationError as exc:
        raise PayloadError("schema", _short(exc)) from exc
    if health.camera_id is not None and health.camera_id != levels[0]:
        raise PayloadError("topic_mismatch", f"topic camera {levels[0]!r} != payload {health.camera_id!r}")
    return levels[0], health
