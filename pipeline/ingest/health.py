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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields."""
        return asdict(self)
