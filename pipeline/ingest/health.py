"""Camera health as seen by its reader; published as retained JSON by the worker."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class CameraState(StrEnum):
    """Life-cycle states of a camera reader."""

    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass(slots=True)
class CameraHealth:
    """Snapshot of one camera's reader.

    Attributes:
        camera_id: id of the camera.
        state: one of ``starting|streaming|reconnecting|error|stopped``.
        last_frame_ts: wall-clock time of the last decoded frame, or None before the first.
        frames_decoded: frames decoded since start (across reconnects).
        frames_dropped: frames overwritten in the mailbox before the consumer took them.
        reconnects: how many times the source was (re)opened after the first attempt.
        last_error: message of the latest failure (kept after recovery, for diagnosis), or None.
        decode_mode: the configured ``decode`` mode (``auto|keyframes|interval``).
        decode_mode_effective: what the reader decodes now (``keyframes`` or ``interval``).
        required_fps: highest analysis rate the camera's hazards need (0: key frames suffice).
        fps: the stream's frame rate, measured from its packets (else the container's), or None.
        keyframe_interval_s: measured key-frame interval (longest of the last few GOPs), or None.
        analysis_fps: frames/s handed to analysis in the effective mode, or None while unknown.
        rate_warning: why the camera cannot give a hazard the rate it needs, or None.
        decode_errors: packets the decoder rejected since start.
        truncated_loops: passes over a file that ended before its declared duration (truncated file).

    Example:
        >>> CameraHealth("cam1").to_dict()["state"]
        'starting'
    """

    camera_id: str
    state: str = CameraState.STARTING.value
    last_frame_ts: float | None = None
    frames_decoded: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    last_error: str | None = None
    decode_mode: str | None = None
    decode_mode_effective: str | None = None
    required_fps: float = 0.0
    fps: float | None = None
    keyframe_interval_s: float | None = None
    analysis_fps: float | None = None
    rate_warning: str | None = None
    decode_errors: int = 0
    truncated_loops: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields."""
        return asdict(self)
