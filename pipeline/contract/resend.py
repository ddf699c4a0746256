"""Resend request (issue 8): the ticket service asks a worker to publish archived alerts again.

:class:`ResendRequestV1` goes on ``<prefix>/resend/request/<worker_id>`` (service -> that worker, QoS 1, not
retained) when the service sees numbers of the worker's alert sequence (``AlertV1.seq``) missing: a gap
between two alerts, or a retained worker status whose ``last_seq`` is above the last number that arrived.
The worker looks the ranges up in its bounded archive of published alerts and queues each one found again
through its durable outbox, byte for byte the payload it sent the first time (the service applies alerts
idempotently by incident and event, so a copy that did arrive changes nothing).

Version 1 rejects unknown fields, like ``AlertV1``; new optional fields only from here on. The bounds below
are part of the contract: a request over them is refused whole by the worker (and never sent by the
service), so one message can never make a worker re-publish more than :data:`MAX_RESEND_ALERTS` alerts.

Example:
    >>> r = ResendRequestV1(schema_version=1, request_id="r1", worker_id="w1",
    ...                     ranges=[SeqRange(first=4, last=6)], requested_at="2026-12-01T19:00:00Z")
    >>> r.count(), r.to_bytes()[:40]
    (3, b'{"schema_version":1,"request_id":"r1","w')
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from pipeline.contract.ids import SAFE_ID_MAX_LENGTH, SAFE_ID_PATTERN
from pipeline.contract.messages import iso_z

MAX_RESEND_RANGES = 64
"""Most ranges in one request."""
MAX_RESEND_ALERTS = 1000
"""Most sequence numbers one request may name, all ranges together."""
MAX_RESEND_REQUEST_BYTES = 16 * 1024
"""Largest payload a worker reads (a full request is under 4 KiB); larger ones are refused unparsed."""


class SeqRange(BaseModel):
    """Sequence numbers ``first`` .. ``last`` (both included) of one worker."""

    model_config = ConfigDict(extra="forbid")

    first: int = Field(ge=1, le=2**63 - 1, description="First missing sequence number (included).")
    last: int = Field(ge=1, le=2**63 - 1, description="Last missing sequence number (included), >= first.")

    @model_validator(mode="after")
    def _ordered(self) -> SeqRange:
        if self.last < self.first:
            raise ValueError(f"range {self.first}..{self.last}: last is below first")
        return self

    def count(self) -> int:
        """How many numbers the range names."""
        return self.last - self.first + 1


class ResendRequestV1(BaseModel):
    """A request to publish archived alerts again, version 1 (unknown fields are rejected)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = Field(description="Payload schema version; always 1 here (required).")
    request_id: str = Field(pattern=SAFE_ID_PATTERN, max_length=SAFE_ID_MAX_LENGTH,
                            description="Id of this request (a redelivered copy has the same id and is "
                            "answered once).")
    worker_id: str = Field(min_length=1, max_length=200,
                           description="The worker asked; equal to the topic's last level and to the "
                           "alerts' `worker_id`.")
    ranges: list[SeqRange] = Field(min_length=1, max_length=MAX_RESEND_RANGES,
                                   description=f"Missing sequence numbers, 1..{MAX_RESEND_RANGES} ranges naming "
                                   f"at most {MAX_RESEND_ALERTS} numbers in all.")
    requested_at: AwareDatetime = Field(description="When the service sent it, ISO-8601 UTC.")

    @field_validator("requested_at")
    @classmethod
    def _to_utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)

    @field_serializer("requested_at")
    def _iso_z(self, v: datetime) -> str:
        return iso_z(v)

    @model_validator(mode="after")
    def _bounded(self) -> ResendRequestV1:
        if self.count() > MAX_RESEND_ALERTS:
            raise ValueError(f"the ranges name {self.count()} sequence numbers, more than {MAX_RESEND_ALERTS}")
        return self

    def count(self) -> int:
        """Sequence numbers named, all ranges together (overlaps counted twice)."""
        return sum(r.count() for r in self.ranges)

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON, the MQTT payload."""
        return self.model_dump_json().encode("utf-8")
