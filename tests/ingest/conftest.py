"""Helpers shared by the ingest tests: readers with test-friendly timings, frame collectors."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.config import CameraConfig, DecodeMode, WorkerConfig
from pipeline.ingest import CameraReader, Frame, LatestFrameMailbox, PacketRing

FAST_WORKER = WorkerConfig(reconnect_min_seconds=0.2, reconnect_max_seconds=1.0, open_timeout_seconds=3.0)


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred`` until true or ``timeout`` seconds passed; returns the last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


class Collector:
    """Drains a mailbox in a thread, keeping every frame it got (images dropped to save memory)."""

    def __init__(self, mailbox: LatestFrameMailbox) -> None:
        self.mailbox = mailbox
        self.frames: list[Frame] = []
        self.shapes: set[tuple[int, ...]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            f = self.mailbox.get(0.05)
            if f is not None:
                self.shapes.add(f.image.shape)
                self.frames.append(f)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class Cam:
    """A started reader plus its mailbox, ring and collector."""

    def __init__(self, cam_id: str, url: str, decode: DecodeMode = DecodeMode.KEYFRAMES,
                 max_fps: float = 2.0, analysis_interval: float = 0.0, worker: WorkerConfig = FAST_WORKER,
                 ring_s: float = 10.0, hazard_rates: dict[str, float] | None = None) -> None:
        self.config = CameraConfig(id=cam_id, url=url, grid="G1", decode=decode, max_fps=max_fps,
                                   analysis_interval=analysis_interval)
        self.mailbox = LatestFrameMailbox()
        self.ring = PacketRing(ring_s)
        self.started_at = time.time()
        self.reader = CameraReader(self.config, url, self.mailbox, self.ring, worker, hazard_rates)
        self.collector = Collector(self.mailbox)
        self.reader.start()

    def close(self) -> None:
        self.reader.stop()
        self.collector.stop()


@pytest.fixture
def cams() -> Iterator[Callable[..., Cam]]:
    """Factory of started :class:`Cam` objects; all stopped at teardown."""
    made: list[Cam] = []

    def factory(*args: object, **kwargs: object) -> Cam:
        cam = Cam(*args, **kwargs)  # type: ignore[arg-type]
        made.append(cam)
        return cam

    yield factory
    for cam in made:
        cam.close()


def decode_file(path: Path) -> tuple[int, list[float], list[bool]]:
    """Decode every frame of ``path``: (count, pts seconds, key-frame flags)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts, keys = [], []
        for fr in c.decode(s):
            pts.append(float(fr.pts * s.time_base) if fr.pts is not None and s.time_base else float("nan"))
            keys.append(bool(fr.key_frame))
    return len(pts), pts, keys


def encode_test_pattern(out: Path, seconds: float, codec: str = "libx264", gop: int = 25, bframes: int = 3,
                        fps: int = 25, extra: tuple[str, ...] = ()) -> Path:
    """Encode FFmpeg's moving ``testsrc2`` pattern with a real encoder: fixed GOP, ``bframes`` B-frames."""
    args = ["-c:v", codec, "-bf", str(bframes), "-g", str(gop), "-pix_fmt", "yuv420p"]
    if codec == "libx264":
        args += ["-preset", "veryfast", "-keyint_min", str(gop), "-sc_threshold", "0"]
    else:
        args += ["-q:v", "5"]
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=320x240:rate={fps}", "-t", str(seconds), *args, *extra,
                    "-movflags", "+faststart", str(out)], check=True, timeout=120)
    return out


def keyframe_pictures(path: Path) -> dict[float, np.ndarray]:
    """Every key frame of ``path`` (full decode, in order) as {pts seconds: BGR image}."""
    out: dict[float, np.ndarray] = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for fr in c.decode(s):
            if fr.key_frame and fr.pts is not None and s.time_base is not None:
                out[round(float(fr.pts * s.time_base), 3)] = fr.to_ndarray(format="bgr24")
    return out
