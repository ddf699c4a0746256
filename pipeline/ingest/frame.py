"""The decoded frame handed from ingest to detect/analyze."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame of one camera.

    Attributes:
        camera_id: id of the camera (from the site config).
        image: BGR uint8 array of shape (H, W, 3).
        ts: wall-clock capture time (Unix seconds) when the frame was received.
        pts: presentation time in stream seconds (monotonic within one connection), or None.
        seq: running number of decoded frames of this camera (across reconnects).
        keyframe: whether the frame was a key frame.

    Example:
        >>> import numpy as np
        >>> f = Frame("cam1", np.zeros((4, 6, 3), np.uint8), ts=0.0, pts=0.0, seq=0, keyframe=True)
        >>> f.width, f.height
        (6, 4)
    """

    camera_id: str
    image: np.ndarray
    ts: float
    pts: float | None
    seq: int
    keyframe: bool

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])
