"""Parsing and checking of MQTT payloads the ticket consumer receives.

Alerts are validated with the producer's :class:`pipeline.alerts.schema.AlertV1`, then read into
:class:`AlertIn`, the subset of fields the ticket store uses (so the store does
not depend on the producer model's Python types). The topic must agree with the payload:
``<prefix>/alerts/<l1>/<l2>/<l3>/<l4>/<camera_id>/<hazard>``.

Every message is bounded by :class:`~pipeline.tickets.limits.PayloadLimits` first: size before
anything else, bracket depth before ``json.loads``, then strings are made storable (lone surrogates and
NUL become U+FFFD) and lengths are checked against the ticket store's columns, so that a message either
parses into something the database can store or raises :class:`PayloadError`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from pipeline.alerts.schema import AlertV1
from pipeline.analyze.incident import Hazard
from pipeline.tickets.limits import DEFAULT_LIMITS, PayloadLimits, json_depth, sanitize

_DB_INT_MAX = 2**31 - 1  # INTEGER columns are 32-bit in PostgreSQL
GridCode = Annotated[str, Field(max_length=64)]


class PayloadError(ValueError):
    """A payload that cannot be used; ``kind`` is a short label for metrics, ``str()`` the detail.

    Kinds: ``too_large``, ``too_deep``, ``invalid_json``, ``schema``, ``topic_mismatch``.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")

    _sanitized: int = PrivateAttr(default=0)

    @property
    def sanitized_strings(self) -> int:
        """How many strings of the raw payload had unstorable characters replaced by U+FFFD."""
        return self._sanitized


class CameraRef(_In):
    """Camera named in an alert."""

    id: str = Field(min_length=1, max_length=100)
    name: str | None = None


class GridRef(_In):
    """Grid position of the camera: four codes town -> cell."""

    path: list[GridCode] = Field(min_length=4, max_length=4)
    names: list[str] = Field(default_factory=list)
    patrol: str | None = None


class ZoneRef(_In):
    """Zone an alert is about."""

    id: str = Field(min_length=1, max_length=100)
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
    worker_id: str | None = Field(default=None, max_length=200)
    seq: int | None = Field(default=None, ge=1)

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

    @field_validator("frames_decoded", "frames_dropped", "reconnects")
    @classmethod
    def _clamp(cls, v: int) -> int:
        # Counters of a long-running camera may pass the column's range; saturate instead of failing.
        return max(0, min(v, _DB_INT_MAX))


def _producer_validate(data: dict[str, Any]) -> dict[str, Any]:
    """Validate with the producer's strict :class:`AlertV1`; returns its JSON dump."""
    dumped: dict[str, Any] = AlertV1.model_validate(data).model_dump(mode="json")
    return dumped


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_size(payload: bytes, limit: int, what: str) -> None:
    if len(payload) > limit:
        raise PayloadError("too_large", f"{what} of {len(payload)} bytes exceeds the limit of {limit} bytes")


def _load_json(payload: bytes, limits: PayloadLimits) -> tuple[dict[str, Any], int]:
    """Depth-check, parse and sanitize a JSON object; returns ``(data, strings sanitized)``."""
    depth = json_depth(payload, stop_above=limits.max_json_depth)
    if depth > limits.max_json_depth:
        raise PayloadError("too_deep", f"JSON nesting deeper than {limits.max_json_depth} levels")
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, NaN/Infinity and integers past Python's digit limit.
        raise PayloadError("invalid_json", str(exc)[:500]) from exc
    if not isinstance(data, dict):
        raise PayloadError("schema", f"expected a JSON object, got {type(data).__name__}")
    clean, changed = sanitize(data)
    return clean, changed


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


def parse_alert(topic: str, payload: bytes, prefix: str, limits: PayloadLimits = DEFAULT_LIMITS) -> AlertIn:
    """Parse and check an alert message.

    Args:
        topic: the MQTT topic it arrived on.
        payload: raw bytes.
        prefix: configured topic prefix.
        limits: size and depth bounds.

    Returns:
        The alert (``sanitized_strings`` tells whether strings had to be repaired).

    Raises:
        PayloadError: over a limit (``too_large``, ``too_deep``), not JSON (``invalid_json``), wrong shape
            (``schema``) or the topic disagrees with the payload (``topic_mismatch``).
    """
    _check_size(payload, limits.max_alert_bytes, "alert")
    data, changed = _load_json(payload, limits)
    try:
        alert = AlertIn.model_validate(_producer_validate(data))
    except ValidationError as exc:
        raise PayloadError("schema", _short(exc)) from exc
    details_size = len(json.dumps(alert.details, separators=(",", ":"), ensure_ascii=False).encode())
    if details_size > limits.max_details_bytes:
        raise PayloadError("too_large", f"details of {details_size} bytes exceed the limit of "
                           f"{limits.max_details_bytes} bytes")
    alert._sanitized = changed
    levels = topic_levels(topic, prefix, "alerts")
    expected = [*alert.grid.path, alert.camera.id, alert.hazard.value]
    if levels != expected:
        raise PayloadError("topic_mismatch",
                           f"topic {topic!r} does not match payload levels {'/'.join(expected)!r}")
    return alert


def parse_health(topic: str, payload: bytes, prefix: str,
                 limits: PayloadLimits = DEFAULT_LIMITS) -> tuple[str, HealthIn]:
    """Parse a camera health message; returns ``(camera_id, health)``.

    ``last_error`` is truncated to ``limits.max_last_error_chars`` (health is state, not evidence).

    Raises:
        PayloadError: as :func:`parse_alert`.
    """
    levels = topic_levels(topic, prefix, "health")
    if not levels or len(levels) != 1 or not levels[0] or len(levels[0]) > 100:
        raise PayloadError("topic_mismatch", f"unexpected health topic {topic[:300]!r}")
    _check_size(payload, limits.max_health_bytes, "health message")
    data, changed = _load_json(payload, limits)
    try:
        health = HealthIn.model_validate(data)
    except ValidationError as exc:
        raise PayloadError("schema", _short(exc)) from exc
    if health.last_error is not None and len(health.last_error) > limits.max_last_error_chars:
        cut = limits.max_last_error_chars
        health.last_error = f"{health.last_error[:cut]}... [{len(health.last_error) - cut} chars cut]"
    health._sanitized = changed
    if health.camera_id is not None and health.camera_id != levels[0]:
        raise PayloadError("topic_mismatch", f"topic camera {levels[0]!r} != payload {health.camera_id!r}")
    return levels[0], health
