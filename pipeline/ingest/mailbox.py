"""A one-slot, latest-wins hand-over of frames from a camera reader to its consumer.

Detection is slower than decoding on most hosts; queueing frames would only add latency and
memory, so the reader overwrites a frame nobody has taken yet and counts it as dropped.
"""

from __future__ import annotations

import threading

from pipeline.ingest.frame import Frame


class LatestFrameMailbox:
    """Thread-safe single-slot mailbox that always holds the newest unread frame.

    Example:
        >>> import numpy as np
        >>> box = LatestFrameMailbox()
        >>> for i in range(3):
        ...     box.put(Frame("cam1", np.zeros((2, 2, 3), np.uint8), ts=i, pts=None, seq=i, keyframe=True))
        >>> box.get(timeout=0).seq, box.dropped
        (2, 2)
        >>> box.get(timeout=0) is None
        True
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._dropped = 0
        self._put = 0

    @property
    def dropped(self) -> int:
        """Frames that were replaced before anyone read them."""
        with self._cond:
            return self._dropped

    @property
    def put_count(self) -> int:
        """Frames ever put into the mailbox."""
        with self._cond:
            return self._put

    def put(self, frame: Frame) -> None:
        """Store ``frame``, replacing (and counting as dropped) an unread one; wakes a waiting reader."""
        with self._cond:
            if self._frame is not None:
                self._dropped += 1
            self._frame = frame
            self._put += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """Take the newest frame, waiting up to ``timeout`` seconds for one.

        Args:
            timeout: Seconds to wait; ``None`` waits forever, ``0`` polls.

        Returns:
            The frame, or ``None`` when none arrived in time.
        """
        with self._cond:
            if self._frame is None and (timeout is None or timeout > 0):
                self._cond.wait_for(lambda: self._frame is not None, timeout)
            frame, self._frame = self._frame, None
            return frame

    def clear(self) -> None:
        """Forget an unread frame without counting it as dropped (e.g. when a camera restarts)."""
        with self._cond:
            self._frame = None
