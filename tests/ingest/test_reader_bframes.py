"""Keyframe-only decoding of streams with B-frames: every key frame arrives at once, with its own pts.

A decoder that reorders B-frames holds a lone key frame back until more pictures arrive; fed only
key packets it handed each key frame over one or two GOPs late, and the loop flush dropped the held
ones. The files here are encoded by real encoders (x264 with 3 B-frames, FFmpeg's MPEG-4 Part 2 with
2) and the reader runs them at real time, as it runs cameras.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DecodeMode
from pipeline.ingest import Frame
from tests.fixtures.rtsp import RtspServer
from tests.ingest.conftest import Cam, encode_test_pattern, keyframe_pictures, wait_for

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

RUN_S = 4.6  # the 3 s files loop once: key frames from both passes


@pytest.fixture(scope="module")
def bframe_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """3 s test-pattern files with B-frames and a 1 s GOP: H.264 (x264, -bf 3) and MPEG-4 Part 2 (-bf 2)."""
    d = tmp_path_factory.mktemp("bframes")
    return {"h264": encode_test_pattern(d / "h264-bf3.mp4", 3.0, "libx264", gop=25, bframes=3),
            "mpeg4": encode_test_pattern(d / "mpeg4-bf2.mp4", 3.0, "mpeg4", gop=25, bframes=2)}


def _key_packets(cam: Cam) -> dict[float, float]:
    """{pts seconds: wall ts} of every key packet the reader demuxed (from its ring)."""
    tb = cam.ring.time_base
    assert tb is not None
    return {round(float(p.pts * tb), 3): p.ts for p in cam.ring.packets() if p.is_keyframe and p.pts is not None}


def _assert_every_key_frame_at_once(cam: Cam, frames: list[Frame]) -> None:
    keys = _key_packets(cam)
    got = {round(f.pts, 3): f for f in frames if f.pts is not None}
    # Every key packet gave its frame, and nothing else came out.
    assert sorted(got) == sorted(keys), (sorted(got), sorted(keys))
    assert all(f.keyframe for f in frames) and len(got) == len(frames)
    # ... in the same step as its packet: the frame carries the packet's receive time, not a later one.
    assert [got[p].ts for p in sorted(got)] == [keys[p] for p in sorted(keys)]


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_keyframes_mode_gives_every_key_frame_immediately(cams: Callable[..., Cam], bframe_files: dict[str, Path],
                                                          codec: str) -> None:
    path = bframe_files[codec]
    reference = keyframe_pictures(path)
    cam = cams(f"bf-{codec}", str(path), DecodeMode.KEYFRAMES)
    time.sleep(RUN_S)
    cam.reader.stop()
    time.sleep(0.2)  # the collector takes the last frame
    cam.collector.stop()
    h = cam.reader.health()
    frames = cam.collector.frames
    assert h.frames_dropped == 0 and h.decode_errors == 0 and h.last_error is None
    _assert_every_key_frame_at_once(cam, frames)
    # All key frames of both passes, in order, the first one at once (not held for a GOP or two).
    file_keys = sorted(reference)
    loop = 3.0
    expected = [p for p in file_keys + [k + loop for k in file_keys] if p <= RUN_S - 0.3]
    assert [f.pts for f in frames][: len(expected)] == pytest.approx(expected, abs=0.01)
    assert frames[0].ts - cam.started_at < 0.5
    # Each is the picture at its own pts (compared with a full decode of the file).
    for f in frames:
        ref = reference[round((f.pts or 0) % loop, 3)]
        assert float(np.abs(f.image.astype(np.int16) - ref.astype(np.int16)).mean()) < 1.0


@pytest.mark.integration
def test_keyframes_over_rtsp_with_bframes(cams: Callable[..., Cam], rtsp_server: Callable[..., RtspServer],
                                          bframe_files: dict[str, Path]) -> None:
    srv = rtsp_server({"bf": bframe_files["h264"]})
    cam = cams("rtsp-bf", srv.url("bf"), DecodeMode.KEYFRAMES)
    assert wait_for(lambda: cam.reader.health().frames_decoded >= 4, 15), cam.reader.health()
    cam.reader.stop()
    time.sleep(0.2)
    cam.collector.stop()
    frames = cam.collector.frames
    _assert_every_key_frame_at_once(cam, frames)
    pts = [f.pts for f in frames]
    steps = [b - a for a, b in zip(pts, pts[1:], strict=False)]  # type: ignore[operator]
    # None missing (a 2 s step), across the server's loop too (it may shorten that step by a frame).
    assert steps == pytest.approx([1.0] * len(steps), abs=0.05)
