"""Parsing and checking of MQTT payloads the ticket consumer receives.

The models are the contract's (:mod:`pipeline.contract.messages`): an alert is validated as an
:class:`~pipeline.contract.messages.AlertV1` (:class:`AlertIn` only adds what parsing repaired), camera
health as a :class:`~pipeline.contract.messages.CameraHealthV1`. The topic must agree with the payload:
``<prefix>/alerts/<l1>/<l2>/<l3>/<l4>/<camera_id>/<hazard>``, ``<prefix>/health/<camera_id>``.

What stays here is the bounded parsing. Every message is bounded by
:class:`~pipeline.tickets.limits.PayloadLimits` first: size before anything else, bracket depth before
``json.loads``, then strings are made storable (lone surrogates and NUL become U+FFFD) and lengths are
checked against the ticket store's columns (:data:`COLUMN_LIMITS`), so that a message either parses into
something the database can store or raises :class:`PayloadError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import PrivateAttr, ValidationError, field_validator

from pipeline.contract.messages import AlertV1, CameraHealthV1
from pipeline.contract.topics import parse_health_topic, topic_levels
from pipeline.tickets.limits import DEFAULT_LIMITS, PayloadLimits, json_depth, sanitize

__all__ = ["COLUMN_LIMITS", "AlertIn", "HealthIn", "PayloadError", "parse_alert", "parse_health", "topic_levels"]

_DB_INT_MAX = 2**31 - 1  # INTEGER columns are 32-bit in PostgreSQL


class PayloadError(ValueError):
    """A payload that cannot be used; ``kind`` is a short label for metrics, ``str()`` the detail.

    Kinds: ``too_large``, ``too_deep``, ``invalid_json``, ``schema``, ``topic_mismatch``.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class AlertIn(AlertV1):
    """An :class:`~pipeline.contract.messages.AlertV1` as the consumer received it (no field of its own)."""

    _sanitized: int = PrivateAttr(default=0)

    @property
    def sanitized_strings(self) -> int:
        """How many strings of the raw payload had unstorable characters replaced by U+FFFD."""
        return self._sanitized

    @property
    def message_key(self) -> str:
        """Identity of this message within its incident (redelivery yields the same key)."""
        return f"alert:{self.event}:{self.ts.isoformat()}"


class HealthIn(CameraHealthV1):
    """A :class:`~pipeline.contract.messages.CameraHealthV1` with its counters saturated at the column range."""

    _sanitized: int = PrivateAttr(default=0)

    @property
    def sanitized_strings(self) -> int:
        """How many strings of the raw payload had unstorable characters replaced by U+FFFD."""
        return self._sanitized

    @field_validator("frames_decoded", "frames_dropped", "reconnects")
    @classmethod
    def _clamp(cls, v: int) -> int:
        # Counters of a long-running camera may pass the column's range; saturate instead of failing.
        return max(0, min(v, _DB_INT_MAX))


COLUMN_LIMITS: dict[str, tuple[Callable[[AlertIn], str | None], int]] = {
    "camera.id": (lambda a: a.camera.id, 100),
    "grid.path.0": (lambda a: a.grid.path[0], 64),
    "grid.path.1": (lambda a: a.grid.path[1], 64),
    "grid.path.2": (lambda a: a.grid.path[2], 64),
    "grid.path.3": (lambda a: a.grid.path[3], 64),
    "zone.id": (lambda a: a.zone.id if a.zone is not None else None, 100),
}
"""Alert strings stored in length-bounded columns of the ticket store: field -> (getter, max length)."""
_HEALTH_STATE_MAX = 32  # camera_health.state


def _check_columns(alert: AlertIn) -> None:
    """Refuse (``schema``) an alert whose ids would not fit their columns, or are empty."""
    for name, (get, limit) in COLUMN_LIMITS.items():
        value = get(alert)
        if value is not None and not 1 <= len(value) <= limit:
            raise PayloadError("schema", f"{name}: String should have 1..{limit} characters, got {len(value)}")


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
        alert = AlertIn.model_validate(data)
    except ValidationError as exc:
        raise PayloadError("schema", _short(exc)) from exc
    _check_columns(alert)
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
    camera_id = parse_health_topic(topic, prefix)
    if camera_id is None or len(camera_id) > 100:
        raise PayloadError("topic_mismatch", f"unexpected health topic {topic[:300]!r}")
    _check_size(payload, limits.max_health_bytes, "health message")
    data, changed = _load_json(payload, limits)
    try:
        health = HealthIn.model_validate(data)
    except ValidationError as exc:
        raise PayloadError("schema", _short(exc)) from exc
    if len(health.state) > _HEALTH_STATE_MAX:
        raise PayloadError("schema", f"state: String should have at most {_HEALTH_STATE_MAX} characters")
    if health.last_error is not None and len(health.last_error) > limits.max_last_error_chars:
        cut = limits.max_last_error_chars
        health.last_error = f"{health.last_error[:cut]}... [{len(health.last_error) - cut} chars cut]"
    health._sanitized = changed
    if health.camera_id is not None and health.camera_id != camera_id:
        raise PayloadError("topic_mismatch", f"topic camera {camera_id!r} != payload {health.camera_id!r}")
    return camera_id, health
