"""Body of a ``format: json`` webhook delivery: :class:`WebhookEventV1` (ticket service -> case systems).

The service POSTs it as compact UTF-8 JSON, fields in the order below, and signs exactly those bytes
(``X-Gridwatch-Signature``, see docs/operations.md). The body is fixed when the event is queued: every
retry of one delivery sends the same bytes with the same ``delivery_id`` (the receiver's idempotency key).
It carries no credentials and no evidence files, only links that need a login.

Example:
    >>> from datetime import UTC, datetime
    >>> t = WebhookTicketV1(id=7, incident_id="cam1-z1-fire-1", hazard="fire", severity=5, status="received",
    ...     title="Fire at North gate", camera_id="cam1", camera_name="North gate",
    ...     grid_path=["T1", "D1", "C1", "G1"], zone_id="z1",
    ...     opened_at=datetime(2027, 1, 15, 8, 0, tzinfo=UTC), url=None)
    >>> e = WebhookEventV1(schema_version=1, delivery_id="0" * 32, event="ticket_created", site="demo",
    ...     ts=datetime(2027, 1, 15, 8, 0, 1, tzinfo=UTC), reason=None, ticket=t)
    >>> e.to_bytes()[:35]
    b'{"schema_version":1,"delivery_id":"'
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator

from pipeline.contract.enums import Hazard
from pipeline.contract.messages import iso_z


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, v: object) -> object:
        return v.astimezone(UTC) if isinstance(v, datetime) else v


class WebhookTicketV1(_Frozen):
    """The ticket an event is about, as it was when the event was queued."""

    id: int = Field(ge=1, description="Ticket id in the gridwatch service.")
    incident_id: str = Field(description="The detection incident the ticket was opened for.")
    hazard: Hazard = Field(description="fire, parking, clutter or poster.")
    severity: int = Field(ge=1, le=5, description="1 (low) .. 5 (critical).")
    status: str = Field(description="The ticket's life-cycle state after the event.")
    title: str = Field(max_length=300, description="Short title, e.g. `Fire at North gate / Stairwell`.")
    camera_id: str = Field(description="Camera that saw the hazard.")
    camera_name: str | None = Field(description="Its human-readable name, if configured.")
    grid_path: list[str] = Field(min_length=1, max_length=4, description="Grid codes, town first.")
    zone_id: str | None = Field(description="Zone of the camera, null for whole-frame hazards.")
    opened_at: AwareDatetime = Field(description="When the incident was first alerted, ISO-8601 UTC.")
    url: str | None = Field(description="Link to the ticket in the web app (login needed); null when "
                            "`api.public_url` is not set.")

    @field_serializer("opened_at")
    def _iso_z(self, v: datetime) -> str:
        return iso_z(v)


class WebhookEventV1(_Frozen):
    """One ticket event sent to a webhook target."""

    schema_version: Literal[1] = Field(description="Body schema version; always 1 here.")
    delivery_id: str = Field(pattern=r"^[0-9a-f]{32}$",
                             description="Unique per event and target; the same on every retry (deduplicate on it).")
    event: Literal["ticket_created", "ticket_overdue", "ticket_escalated", "ticket_closed"] = Field(
        description="What happened: opened; its deadline passed; escalated up the grid; closed or false alarm.")
    site: str = Field(description="The gridwatch site (`site` in its config).")
    ts: AwareDatetime = Field(description="When it happened, ISO-8601 UTC.")
    reason: str | None = Field(max_length=2000, description="Why, in words: which deadline passed (overdue, "
                               "escalated) or the closing note; null when there is none.")
    ticket: WebhookTicketV1 = Field(description="The ticket.")

    @field_serializer("ts")
    def _iso_z(self, v: datetime) -> str:
        return iso_z(v)

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON (non-ASCII kept as is), the request body."""
        return self.model_dump_json().encode("utf-8")
