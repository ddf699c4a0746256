"""Config of the ticket service's outbound webhooks (``api.webhooks`` in the site YAML).

Each target receives the ticket events it subscribes to (``ticket_created``, ``ticket_overdue``,
``ticket_escalated``, ``ticket_closed``) for the grid nodes and hazards it filters on, in the body shape
of its ``format``; delivery, signature and retries are described in ``docs/operations.md`` (Webhooks).

Example:
    >>> cfg = WebhooksConfig.model_validate({"targets": [
    ...     {"name": "town-12345", "url": "https://cases.example.org/hook", "secret": "s" * 32,
    ...      "grid": ["T1/D1"], "hazards": ["fire"]}]})
    >>> cfg.targets[0].matches("T1/D1/C1/G1", "fire"), cfg.targets[0].matches("T1/D2/C2/G3", "fire")
    (True, False)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.contract.enums import Hazard
from pipeline.contract.ids import CONFIG_ID_PATTERN


class WebhookEvent(StrEnum):
    """Ticket events a webhook target can subscribe to."""

    TICKET_CREATED = "ticket_created"
    TICKET_OVERDUE = "ticket_overdue"
    TICKET_ESCALATED = "ticket_escalated"
    TICKET_CLOSED = "ticket_closed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookTarget(_Model):
    """One receiver: a case system, a WeCom or DingTalk group bot."""

    name: str = Field(pattern=CONFIG_ID_PATTERN, max_length=64,
                      description="Unique name of the target; shown in the queue, the metrics and the logs "
                      "(the URL is not: bot URLs carry their key).")
    url: str = Field(max_length=2000, description="http(s) URL the events are POSTed to.")
    secret: str | None = Field(default=None, min_length=16, max_length=512,
                               description="HMAC-SHA256 key: `format: json` bodies are signed in the "
                               "`X-Gridwatch-Signature` header; `format: dingtalk` uses it for DingTalk's "
                               "own `timestamp`/`sign` query signature. Unset = unsigned.")
    format: Literal["json", "wecom", "dingtalk"] = Field(
        default="json", description="Body shape: `json` (the gridwatch event, schema in docs/operations.md), "
        "`wecom` (WeCom group bot markdown message) or `dingtalk` (DingTalk group bot markdown message).")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(WebhookEvent), min_length=1,
        description="Events sent to this target (default: all).")
    grid: list[str] = Field(default_factory=list,
                            description="Grid path prefixes whose tickets are sent, e.g. `T1` or `T1/D1/C1`; "
                            "empty = the whole site.")
    hazards: list[Hazard] = Field(default_factory=list, description="Hazards sent; empty = all.")
    enabled: bool = Field(default=True, description="Set false to stop queueing for this target.")
    max_attempts: int = Field(default=8, ge=1, le=100,
                              description="Attempts before a delivery is dead-lettered (status `dead`).")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="Connect and read timeout per attempt.")
    backoff_base_seconds: float = Field(default=10.0, gt=0, le=86400,
                                        description="Wait after the first failed attempt; doubles after each "
                                        "further failure.")
    backoff_max_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400, description="Cap of that wait.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return v

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, v: list[str]) -> list[str]:
        cleaned = [p.strip("/") for p in v]
        bad = [p for p in cleaned if not p or len(p.split("/")) > 4]
        if bad:
            raise ValueError(f"grid prefixes are 1 to 4 codes joined by '/', e.g. T1/D1: {bad}")
        return cleaned

    def matches(self, grid_path: str, hazard: str) -> bool:
        """Whether a ticket at ``grid_path`` (``T1/D1/C1/G1``) with ``hazard`` goes to this target."""
        if self.hazards and hazard not in {h.value for h in self.hazards}:
            return False
        return not self.grid or any(grid_path == p or grid_path.startswith(p + "/") for p in self.grid)

    def backoff_seconds(self, failed_attempts: int) -> float:
        """Wait before the next attempt after ``failed_attempts`` (>= 1) failures: base * 2^(n-1), capped."""
        return float(min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** min(failed_attempts - 1, 40)))


class WebhooksConfig(_Model):
    """Outbound webhooks of the ticket service and their sender."""

    targets: list[WebhookTarget] = Field(default_factory=list, description="Receivers; none = no sender runs.")
    poll_interval_seconds: float = Field(default=2.0, gt=0, le=300,
                                         description="How often the sender looks for due deliveries.")
    lease_seconds: float = Field(default=300.0, gt=0, le=86400,
                                 description="How long a replica holds a claimed delivery; another replica "
                                 "takes it over only after that (a crashed sender's items are retried). Must be "
                                 "more than twice every target's timeout_seconds.")
    batch_size: int = Field(default=20, ge=1, le=1000, description="Deliveries claimed per poll.")

    @model_validator(mode="after")
    def _check_targets(self) -> WebhooksConfig:
        names = [t.name for t in self.targets]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"webhook target names must be unique: {dupes}")
        # A lease shorter than a request could let a second replica send the same item again.
        if slow := [t.name for t in self.targets if t.timeout_seconds * 2 >= self.lease_seconds]:
            raise ValueError(f"lease_seconds must exceed twice timeout_seconds of targets {slow}")
        return self

    def target(self, name: str) -> WebhookTarget | None:
        """The target called ``name``, or None (removed from the config since the item was queued)."""
        return next((t for t in self.targets if t.name == name), None)
