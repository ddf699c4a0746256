"""LatestFrameMailbox: latest wins, drops counted, blocking get, thread safety."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pipeline.ingest import CameraHealth, Frame, LatestFrameMailbox


def _frame(seq: int) -> Frame:
    return Frame("cam1", np.zeros((2, 2, 3), np.uint8), ts=float(seq), pts=None, seq=seq, keyframe=False)


@pytest.mark.parametrize("puts", [1, 2, 5, 50])
def test_put_replaces_unread_and_counts_drops(puts: int) -> None:
    box = LatestFrameMailbox()
    for i in range(puts):
        box.put(_frame(i))
    got = box.get(timeout=0)
    assert got is not None and got.seq == puts - 1
    assert box.dropped == puts - 1
    assert box.get(timeout=0) is None
    assert box.dropped == puts - 1  # taking a frame is not a drop


def test_read_frames_are_not_dropped() -> None:
    box = LatestFrameMailbox()
    for i in range(5):
        box.put(_frame(i))
        assert box.get(timeout=0) is not None
    assert box.dropped == 0 and box.put_count == 5


@pytest.mark.parametrize("timeout", [0.0, 0.15])
def test_get_times_out(timeout: float) -> None:
    box = LatestFrameMailbox()
    t = time.monotonic()
    assert box.get(timeout=timeout) is None
    assert timeout <= time.monotonic() - t < timeout + 0.5


def test_get_wakes_on_put() -> None:
    box = LatestFrameMailbox()
    threading.Timer(0.1, box.put, args=(_frame(7),)).start()
    t = time.monotonic()
    got = box.get(timeout=5)
    assert got is not None and got.seq == 7
    assert time.monotonic() - t < 2


def test_concurrent_producer_consumer_accounting() -> None:
    box = LatestFrameMailbox()
    received: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            f = box.get(timeout=0.01)
            if f is not None:
                received.append(f.seq)

    th = threading.Thread(target=consume)
    th.start()
    for i in range(5000):
        box.put(_frame(i))
    done.set()
    th.join(5)
    leftover = box.get(timeout=0)
    taken = len(received) + (leftover is not None)
    assert received == sorted(received)  # latest-wins never goes back in time
    assert taken + box.dropped == 5000


def test_health_to_dict_roundtrip() -> None:
    h = CameraHealth("cam1", state="streaming", frames_decoded=3, last_error="x")
    d = h.to_dict()
    assert d == {"camera_id": "cam1", "state": "streaming", "last_frame_ts": None, "frames_decoded": 3,
                 "frames_dropped": 0, "reconnects": 0, "last_error": "x", "decode_mode": None,
                 "decode_mode_effective": None, "required_fps": 0.0, "fps": None, "keyframe_interval_s": None,
                 "analysis_fps": None, "rate_warning": None, "decode_errors": 0, "truncated_loops": 0}
    assert CameraHealth(**d) == h
