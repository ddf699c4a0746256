"""Config of the case life cycle (``casework`` in the site YAML): deadlines, escalation, auto-dispatch and
the camera re-check, per hazard and severity.

A ticket's deadline for a step runs from the moment the step before it was reached: ``verify`` from the
ticket's opening, ``dispatch`` from its verification, ``resolve`` from its dispatch. When it passes the
ticket is overdue (its cell is notified); every ``escalate_every_minutes`` more it escalates one grid level
up (community, district, town). See ``docs/operations.md`` (Deadlines and escalation).

Example:
    >>> cfg = CaseworkConfig.model_validate({"hazards": {"parking": {"resolve_minutes": 120,
    ...     "by_severity": {"5": {"resolve_minutes": 30}}}}})
    >>> cfg.deadlines("parking", 3).resolve_minutes, cfg.deadlines("parking", 5).resolve_minutes
    (120.0, 30.0)
    >>> cfg.policy("fire").auto_dispatch
    True
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.contract.enums import Hazard


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Deadlines(_Model):
    """Minutes allowed for each step (null: no deadline for that step)."""

    verify_minutes: float | None = Field(default=None, gt=0, le=525_600,
                                         description="From opening (received) to verified or false alarm.")
    dispatch_minutes: float | None = Field(default=None, gt=0, le=525_600,
                                           description="From verification to dispatch to a patrol user.")
    resolve_minutes: float | None = Field(default=None, gt=0, le=525_600,
                                          description="From dispatch to resolved (proof submitted).")

    def merged(self, override: Deadlines | None) -> Deadlines:
        """These deadlines with the fields ``override`` sets replacing them."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_unset=True))


class HazardCasePolicy(Deadlines):
    """How cases of one hazard are handled."""

    auto_dispatch: bool = Field(default=False, description="Dispatch at once to a patrol user of the cell "
                                "(skips manual verification: a fire goes straight out).")
    camera_check: bool = Field(default=True, description="When a camera ticket is resolved, ask the camera's "
                               "worker to re-judge the zone (CameraCheckRequestV1).")
    check_passes: bool = Field(default=True, description="A passed camera check moves the ticket to "
                               "`checked` (false: a dispatcher still checks it, the camera's result is an event).")
    by_severity: dict[int, Deadlines] = Field(default_factory=dict, description="Deadlines per severity "
                                              "(1..5) replacing the hazard's own where set.")


def _default_policies() -> dict[Hazard, HazardCasePolicy]:
    return {
        Hazard.FIRE: HazardCasePolicy(auto_dispatch=True, verify_minutes=2, dispatch_minutes=2,
                                      resolve_minutes=30),
        Hazard.PARKING: HazardCasePolicy(verify_minutes=30, dispatch_minutes=30, resolve_minutes=240),
        Hazard.CLUTTER: HazardCasePolicy(verify_minutes=60, dispatch_minutes=60, resolve_minutes=1440),
        Hazard.POSTER: HazardCasePolicy(verify_minutes=240, dispatch_minutes=240, resolve_minutes=2880),
    }


class CaseworkConfig(_Model):
    """Deadlines, escalation and camera checks of the ticket service."""

    hazards: dict[Hazard, HazardCasePolicy] = Field(
        default_factory=_default_policies,
        description="Per-hazard policy over the defaults (fire: auto-dispatch, verify/dispatch/resolve 2/2/30 "
        "min; parking 30/30/240; clutter 60/60/1440; poster 240/240/2880); the keys given replace only those.")
    escalate_every_minutes: float = Field(default=30.0, gt=0, le=525_600,
                                          description="Once overdue, a case goes one grid level up each time "
                                          "this much more passes (cell -> community -> district -> town).")
    loop_interval_seconds: float = Field(default=30.0, gt=0, le=3600,
                                         description="How often the service looks for overdue cases and "
                                         "unsent notifications.")
    lock_lease_seconds: float = Field(default=120.0, gt=0, le=86_400,
                                      description="SQLite only: how long a replica's hold on the case loop "
                                      "lasts without renewal (PostgreSQL uses an advisory lock).")
    check_window_seconds: float = Field(default=60.0, gt=0, le=3600,
                                        description="How long the hazard must stay absent for a camera "
                                        "check to pass (CameraCheckRequestV1.window_seconds).")
    check_timeout_seconds: float = Field(default=600.0, gt=0, le=86_400,
                                         description="How long after a camera check was requested the "
                                         "service waits for the worker's result; then the ticket gets a "
                                         "`camera_check: timeout` event and is flagged for a dispatcher's "
                                         "manual check (stays resolved). More than check_window_seconds + 15 "
                                         "(when the worker itself gives up).")
    public_url: str | None = Field(default=None, description="Base URL of the web app for links in "
                                   "notifications (e.g. https://gw.example.org); none without it.")

    @field_validator("hazards", mode="before")
    @classmethod
    def _over_defaults(cls, v: Any) -> Any:
        # A YAML that tunes one hazard keeps the default policy of the others, and a hazard's own keys
        # replace only those keys of its default.
        if not isinstance(v, dict):
            return v
        merged: dict[str, Any] = {h.value: p.model_dump(exclude_unset=True) for h, p in _default_policies().items()}
        for k, policy in v.items():
            base = merged.get(str(k), {})
            merged[str(k)] = {**base, **policy} if isinstance(policy, dict) else policy
        return merged

    @model_validator(mode="after")
    def _timeout_after_the_worker_gives_up(self) -> CaseworkConfig:
        # The worker answers `unavailable` at window + 15 s at the latest; timing out earlier would flag
        # tickets whose answer is still on its way.
        if self.check_timeout_seconds <= self.check_window_seconds + 15:
            raise ValueError(f"check_timeout_seconds ({self.check_timeout_seconds:g}) must be more than "
                             f"check_window_seconds + 15 ({self.check_window_seconds + 15:g})")
        return self

    def policy(self, hazard: str) -> HazardCasePolicy:
        """The policy of ``hazard`` (an empty policy for a hazard not configured)."""
        try:
            return self.hazards.get(Hazard(hazard)) or HazardCasePolicy()
        except ValueError:
            return HazardCasePolicy()

    def deadlines(self, hazard: str, severity: int) -> Deadlines:
        """The deadlines of a case of ``hazard`` at ``severity`` (severity overrides applied)."""
        p = self.policy(hazard)
        base = Deadlines(verify_minutes=p.verify_minutes, dispatch_minutes=p.dispatch_minutes,
                         resolve_minutes=p.resolve_minutes)
        return base.merged(p.by_severity.get(severity))
