"""CameraReader on local files: decode modes, throttling, real-time pacing and looping, stop()."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.config import DecodeMode
from pipeline.ingest import backoff_delay, is_network_url
from tests.ingest.conftest import Cam, decode_file, wait_for

CAR_FPS = 12.5
GOP_S = 2.0


def test_keyframes_mode_yields_only_keyframes_every_gop(cams: Callable[..., Cam],
                                                        h264_clips: dict[str, Path]) -> None:
    cam = cams("kf", str(h264_clips["car"]), DecodeMode.KEYFRAMES)
    time.sleep(4.5)  # key frames at 0, 2, 4 s of the clip
    h = cam.reader.health()
    cam.close()
    frames = cam.collector.frames
    assert h.state == "streaming" and h.last_error is None
    assert 2 <= len(frames) <= 4 and h.frames_decoded == len(frames) + h.frames_dropped
    assert all(f.keyframe for f in frames)
    assert cam.collector.shapes == {(432, 768, 3)}
    # Paced at real time: one key frame per GOP, by stream time and by wall clock.
    pts = [f.pts for f in frames]
    steps = [b - a for a, b in zip(pts, pts[1:], strict=False)]  # type: ignore[operator]
    assert steps == pytest.approx([GOP_S] * (len(pts) - 1), abs=0.01)
    gaps = [b.ts - a.ts for a, b in zip(frames, frames[1:], strict=False)]
    assert all(GOP_S - 0.3 < g < GOP_S + 0.3 for g in gaps), gaps
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    # Every packet, not only key frames, went into the ring.
    assert len(cam.ring) >= (len(frames) - 1) * GOP_S * CAR_FPS


@pytest.mark.parametrize(("max_fps", "analysis_interval", "min_gap"), [(4.0, 0.0, 0.25), (10.0, 0.5, 0.5)])
def test_interval_mode_respects_max_fps(cams: Callable[..., Cam], h264_clips: dict[str, Path], max_fps: float,
                                        analysis_interval: float, min_gap: float) -> None:
    cam = cams("iv", str(h264_clips["car"]), DecodeMode.INTERVAL, max_fps=max_fps,
               analysis_interval=analysis_interval)
    run_s = 3.0
    assert wait_for(lambda: cam.reader.health().frames_decoded > 0, 5)
    t = time.monotonic()
    time.sleep(run_s)
    h = cam.reader.health()
    elapsed = time.monotonic() - t
    cam.close()
    frames = [f for f in cam.collector.frames]
    # Every frame is decoded (at real-time pace) but at most 1/min_gap per second are handed over.
    assert h.frames_decoded == pytest.approx((elapsed + 0.1) * CAR_FPS, abs=6)
    gaps = [b.ts - a.ts for a, b in zip(frames, frames[1:], strict=False)]
    # analysis_interval is a hard minimum; max_fps is a rate kept on a stream-time schedule, so one gap
    # may be a frame shorter when the one before it was a frame longer.
    slack = 0.01 if analysis_interval else 1 / CAR_FPS + 0.01
    assert gaps and min(gaps) >= min_gap - slack
    handed = len(frames) + h.frames_dropped
    assert handed <= (elapsed + 0.5) / min_gap + 1
    assert handed >= (elapsed - 0.5) / (min_gap + 1 / CAR_FPS)  # and not starved
    assert any(not f.keyframe for f in frames)


@pytest.fixture
def short_clip(h264_clips: dict[str, Path], tmp_path: Path) -> Path:
    """First 3 s of the car clip (key frames at 0 and 2 s), to see the loop quickly."""
    out = tmp_path / "short.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(h264_clips["car"]), "-t", "3",
                    "-c", "copy", str(out)], check=True, timeout=60)
    return out


def test_file_loops_with_increasing_timestamps(cams: Callable[..., Cam], short_clip: Path,
                                               tmp_path: Path) -> None:
    n_clip, _, _ = decode_file(short_clip)
    cam = cams("loop", str(short_clip), DecodeMode.INTERVAL, max_fps=60)
    t = time.monotonic()
    assert wait_for(lambda: cam.reader.health().frames_decoded >= n_clip + 15, 10)
    elapsed = time.monotonic() - t
    cam.reader.stop()
    frames = cam.collector.frames
    # Paced at real time (not decoded as fast as possible) ...
    assert elapsed >= (n_clip + 15) / CAR_FPS - 0.6
    # ... and still going after the end of the file, with pts continuing past the clip length.
    pts = [f.pts for f in frames if f.pts is not None]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert max(pts) > n_clip / CAR_FPS
    pkts = cam.ring.packets()
    assert [p.dts for p in pkts] == sorted(p.dts for p in pkts if p.dts is not None)
    # A clip across the loop point remuxes and plays.
    first, last = cam.ring.span()  # type: ignore[misc]
    out = cam.ring.write_clip(tmp_path / "loop.mp4", first, last)
    assert out is not None
    assert decode_file(out)[0] == len(pkts)


def test_stop_is_prompt_and_final(cams: Callable[..., Cam], h264_clips: dict[str, Path]) -> None:
    cam = cams("stop", str(h264_clips["person"]), DecodeMode.KEYFRAMES)
    assert wait_for(lambda: cam.reader.health().state == "streaming", 5)
    t = time.monotonic()
    cam.reader.stop()
    assert time.monotonic() - t < 2.0
    assert not cam.reader.running
    h = cam.reader.health()
    assert h.state == "stopped"
    time.sleep(0.3)
    assert cam.reader.health().frames_decoded == h.frames_decoded


def test_missing_file_is_error_and_retried(cams: Callable[..., Cam], tmp_path: Path) -> None:
    cam = cams("nofile", str(tmp_path / "nope.mp4"))
    assert wait_for(lambda: cam.reader.health().reconnects >= 2, 5)
    h = cam.reader.health()
    assert h.state == "error" and h.last_error is not None and "nope.mp4" in h.last_error


@pytest.mark.parametrize(("url", "network"), [("rtsp://h/x", True), ("RTSP://h/x", True),
                                              ("http://h/a.m3u8", True), ("clips/a.mp4", False),
                                              ("/abs/a.mp4", False)])
def test_is_network_url(url: str, network: bool) -> None:
    assert is_network_url(url) is network


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    import random

    rng = random.Random(1)
    for failures, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)]:
        samples = [backoff_delay(failures, 0.5, 30, rng) for _ in range(200)]
        assert base * 0.75 <= min(samples) and max(samples) <= base * 1.25
        assert max(samples) - min(samples) > base * 0.2  # jittered
    assert all(backoff_delay(30, 0.5, 8, rng) <= 8 for _ in range(100))
