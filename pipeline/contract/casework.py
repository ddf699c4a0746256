"""Messages of the closed loop (issue 9): camera check request/result and notifications.

The ticket service sends the check requests and the notifications and reads the check results
(:mod:`pipeline.tickets.camera_check`, :mod:`pipeline.tickets.escalation`); the worker answers the
requests. Version 1 is frozen like ``AlertV1`` from here on: new optional fields only.

* :class:`CameraCheckRequestV1` on ``<prefix>/check/request/<camera_id>`` (service -> the worker running
  the camera, QoS 1): after a camera ticket is resolved, re-judge the incident's zone for
  ``window_seconds``.
* :class:`CameraCheckResultV1` on ``<prefix>/check/result/<camera_id>`` (worker -> service, QoS 1):
  ``passed`` (the hazard is gone for the window), ``failed`` (still there; the ticket goes back to
  in_progress) or ``unavailable`` (the camera gave no usable frames).
* :class:`NotificationV1` on ``<prefix>/notify/<grid path>`` (service -> patrol users and dispatchers of
  that node, QoS 1): a case was created, escalated, became overdue or was closed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator

from pipeline.contract.enums import Hazard
from pipeline.contract.ids import SAFE_ID_MAX_LENGTH, SAFE_ID_PATTERN
from pipeline.contract.messages import iso_z


class _Planned(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, v: object) -> object:
        return v.astimezone(UTC) if isinstance(v, datetime) else v

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON, the MQTT payload."""
        return self.model_dump_json().encode("utf-8")


class CameraCheckRequestV1(_Planned):
    """Service -> worker: re-judge a resolved ticket's zone."""

    schema_version: Literal[1] = Field(description="Payload schema version; always 1 here.")
    check_id: str = Field(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH,
                          description="Id of this check; the result carries it back (idempotency key).")
    ticket_id: int = Field(ge=1, description="The ticket being checked.")
    incident_id: str = Field(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH,
                             description="The ticket's incident.")
    camera_id: str = Field(description="Camera to look through (the topic's last level).")
    zone_id: str | None = Field(default=None, description="Zone to re-judge; null for whole-frame hazards.")
    hazard: Hazard = Field(description="The hazard that must be gone.")
    window_seconds: float = Field(gt=0, le=3600, description="How long the hazard must stay absent to pass.")
    requested_at: AwareDatetime = Field(description="When the service asked, ISO-8601 UTC.")

    @field_serializer("requested_at")
    def _iso_z(self, v: datetime) -> str:
        return iso_z(v)


class CameraCheckResultV1(_Planned):
    """Worker -> service: the outcome of one camera check."""

    schema_version: Literal[1] = Field(description="Payload schema version; always 1 here.")
    check_id: str = Field(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH,
                          description="The request's check_id.")
    ticket_id: int = Field(ge=1, description="The ticket checked.")
    camera_id: str = Field(description="The camera looked through.")
    outcome: Literal["passed", "failed", "unavailable"] = Field(
        description="passed: hazard gone for the whole window; failed: still there; unavailable: no usable "
        "frames (camera down) - a person decides.")
    checked_at: AwareDatetime = Field(description="End of the check window, ISO-8601 UTC.")
    confidence: float | None = Field(default=None, ge=0, le=1,
                                     description="Best confidence of the hazard seen in the window (failed).")
    snapshot_url: str | None = Field(default=None, description="Fresh snapshot of the zone.")
    detail: str | None = Field(default=None, max_length=2000, description="Why, in words (e.g. the error).")
    worker_id: str | None = Field(default=None, max_length=200, description="Worker that ran the check.")

    @field_serializer("checked_at")
    def _iso_z(self, v: datetime) -> str:
        return iso_z(v)


class NotificationV1(_Planned):
    """Service -> people of a grid node: something happened to a case."""

    schema_version: Literal[1] = Field(description="Payload schema version; always 1 here.")
    kind: Literal["created", "dispatched", "escalated", "overdue", "check_passed", "check_failed",
                  "check_timeout", "closed", "reopened"] = Field(
        description="What happened to the case: overdue goes to the ticket's cell when a deadline passes; "
        "escalated goes one grid level up (community, district, town) each time the case stays overdue; "
        "check_timeout goes to the community (its dispatchers) when the camera check got no answer in time.")
    ticket_id: int = Field(ge=1, description="The ticket.")
    grid_path: list[str] = Field(min_length=1, max_length=4,
                                 description="The node notified (the topic's levels), town first.")
    hazard: Hazard = Field(description="The ticket's hazard.")
    severity: int = Field(ge=1, le=5, description="The ticket's severity, 1 .. 5.")
    title: str = Field(max_length=300, description="The ticket's title.")
    status: str = Field(description="The ticket's state after the change (e.g. dispatched).")
    reason: str | None = Field(default=None, max_length=2000,
                               description="Why (e.g. which deadline passed); null when obvious.")
    deadline: AwareDatetime | None = Field(default=None, description="The deadline now running, if any.")
    escalation_level: int | None = Field(
        default=None, ge=0, le=3,
        description="For overdue/escalated: 0 cell, 1 community, 2 district, 3 town (the node notified).")
    stage: Literal["verify", "dispatch", "resolve"] | None = Field(
        default=None, description="For overdue/escalated: the step whose deadline passed.")
    ts: AwareDatetime = Field(description="When it happened, ISO-8601 UTC.")
    url: str | None = Field(default=None, description="Link to the ticket in the web app.")

    @field_serializer("deadline", "ts")
    def _iso_z(self, v: datetime | None) -> str | None:
        return None if v is None else iso_z(v)
