"""Abort a camera thread's blocked FFmpeg network read on demand (for :meth:`CameraReader.stop`)."""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import av.container.core


class AbortClock:
    """Stand-in for the ``time`` module inside ``av.container.core`` that can abort blocked I/O.

    PyAV installs an FFmpeg interrupt callback (polled every ~100 ms during network I/O) that only
    compares ``time.monotonic()`` against the container's open/read timeout; it offers no way to
    interrupt on demand. Returning a far-future time to a thread that asked to stop makes that
    callback fire at once, so :meth:`CameraReader.stop` returns promptly even during a blocked
    read. Other threads see the real clock. If a PyAV upgrade stops looking up ``time`` there,
    nothing breaks: stopping then just waits for the socket timeout.
    """

    def __init__(self, real: ModuleType) -> None:
        self._real = real
        self._aborting: set[int] = set()
        self._bump = 0.0

    def monotonic(self) -> float:
        now: float = self._real.monotonic()
        if self._aborting and threading.get_ident() in self._aborting:
            # Strictly increasing, so even a timeout window started after the abort expires.
            self._bump += 1e6
            return now + 1e9 + self._bump
        return now

    def abort(self, ident: int) -> None:
        self._aborting.add(ident)

    def release(self, ident: int) -> None:
        self._aborting.discard(ident)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install_abort_clock() -> AbortClock | None:
    """Put an :class:`AbortClock` in place of ``time`` inside ``av.container.core`` (once)."""
    current = getattr(av.container.core, "time", None)
    if isinstance(current, AbortClock):
        return current
    if isinstance(current, ModuleType) and hasattr(current, "monotonic"):
        clock = AbortClock(current)
        av.container.core.time = clock  # type: ignore[attr-defined]
        return clock
    return None


ABORT_CLOCK = install_abort_clock()
