"""Settings of the motion gate (:mod:`pipeline.analyze.motion_gate`): skip a camera's detectors while nothing
changed in their zones, carry the last detections forward, re-check at a slow interval.

Set site-wide under ``worker.motion_gate`` or per camera under ``cameras[].motion_gate`` (the camera's
block replaces the worker's whole).

Example:
    >>> MotionGateConfig.model_validate({"enabled": True}).recheck_seconds
    10.0
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MotionGateConfig(BaseModel):
    """When a camera's detectors may skip a frame (fire's detectors never do)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False,
                          description="Skip the detectors of a frame in which nothing changed in their zones "
                          "since the frame they last ran on, and hand the rules those detections again "
                          "(marked carried). Fire is never gated.")
    work_width: int = Field(default=64, ge=16, le=640,
                            description="Width in pixels of the grey, downscaled frame the change is measured "
                            "on (64: a 1080p frame becomes 64x36, ~30x30 source pixels per cell).")
    pixel_threshold: int = Field(default=10, ge=1, le=255,
                                 description="Grey-level difference (0..255, on the downscaled frame) above "
                                 "which a cell counts as changed; sensor noise and compression stay below.")
    min_changed_fraction: float = Field(default=0.004, ge=0, le=1,
                                        description="A zone has changed when at least this share of its cells "
                                        "changed (and at least `min_changed_cells`).")
    min_changed_cells: int = Field(default=2, ge=1,
                                   description="A zone has changed when at least this many of its cells changed "
                                   "(a far-off person is one or two cells at 64 px).")
    recheck_seconds: float = Field(default=10.0, gt=0, le=3600,
                                   description="Run the detectors at least this often even on a still scene "
                                   "(a full re-check: slow changes, a detector's second look).")
