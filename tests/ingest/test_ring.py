"""PacketRing: trimming to key frames, clip selection, remux validity (decoded back with PyAV)."""

from __future__ import annotations

import dataclasses
import math
import subprocess
from pathlib import Path

import av
import pytest

from pipeline.ingest import PacketRing
from tests.ingest.conftest import decode_file

T0 = 1_700_000_000.0  # wall clock of the clip's first packet
GOP_S = 2.0


def feed(ring: PacketRing, path: Path, limit_s: float | None = None) -> list[float]:
    """Push every packet of ``path`` with wall time T0 + pts; returns the wall times pushed."""
    times: list[float] = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ring.set_stream(s)
        fps = float(s.average_rate or 25)
        for i, p in enumerate(c.demux(s)):
            if p.size == 0:
                continue
            sec = float(p.pts * s.time_base) if p.pts is not None and s.time_base else i / fps
            if limit_s is not None and sec > limit_s:
                break
            ring.push(p, T0 + sec)
            times.append(T0 + sec)
        ring.end_stream()
    return times


@pytest.mark.parametrize("max_seconds", [3.0, 6.0, 10.0])
def test_ring_trims_to_keyframe_and_keeps_max_seconds(h264_clips: dict[str, Path],
                                                      max_seconds: float) -> None:
    ring = PacketRing(max_seconds)
    times = feed(ring, h264_clips["car"])
    pkts = ring.packets()
    assert pkts[0].is_keyframe
    first, last = ring.span()  # type: ignore[misc]
    assert last == times[-1]
    # At least max_seconds of history, at most one GOP more (to start at a key frame).
    assert max_seconds - 0.1 <= last - first < max_seconds + GOP_S
    assert [p.ts for p in pkts] == sorted(p.ts for p in pkts)
    assert sum(p.is_keyframe for p in pkts) >= math.floor(max_seconds / GOP_S)


def test_ring_drops_leading_non_key_packets(h264_clips: dict[str, Path]) -> None:
    ring = PacketRing(10)
    with av.open(str(h264_clips["car"])) as c:
        s = c.streams.video[0]
        ring.set_stream(s)
        pkts = [p for p in c.demux(s) if p.size]
        for i, p in enumerate(pkts[1:30]):  # starts after the first key frame (GOP = 25 packets)
            ring.push(p, T0 + i * 0.08)
        ring.end_stream()
    got = ring.packets()
    assert got and got[0].is_keyframe and len(got) == 29 - 24


def test_ring_clears_on_timestamp_discontinuity(h264_clips: dict[str, Path]) -> None:
    ring = PacketRing(30)
    feed(ring, h264_clips["car"], limit_s=5)
    n = len(ring)
    assert n > 50
    feed(ring, h264_clips["car"], limit_s=1)  # pts restart at 0: old packets cannot precede these
    assert len(ring) < n and ring.packets()[0].pts == 0


@pytest.mark.parametrize(("start", "end"), [(9.0, 13.0), (10.0, 10.5), (7.3, 15.9), (0.0, 2.5)])
def test_write_clip_remuxes_playable_mp4(h264_clips: dict[str, Path], tmp_path: Path,
                                         start: float, end: float) -> None:
    ring = PacketRing(20)
    times = feed(ring, h264_clips["car"], limit_s=18)
    out = ring.write_clip(tmp_path / "sub" / "clip.mp4", T0 + start, T0 + end)
    assert out is not None and out.is_file()
    # Expected: from the key frame at/before start (GOPs of exactly 2 s) through end.
    kf = math.floor(start / GOP_S) * GOP_S
    expected = [t for t in times if T0 + kf - 1e-6 <= t <= T0 + end]
    n, pts, keys = decode_file(out)
    assert n == len(expected)
    assert keys[0] and pts[0] == pytest.approx(0.0, abs=1e-3)  # rebased, starts decodable
    assert pts[-1] == pytest.approx(expected[-1] - expected[0], abs=0.01)
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height) == ("h264", 768, 432)
        assert float((c.duration or 0) / av.time_base) == pytest.approx(len(expected) * 0.08, abs=0.1)


def test_write_clip_outside_buffer_returns_none(h264_clips: dict[str, Path], tmp_path: Path) -> None:
    ring = PacketRing(5)
    assert ring.write_clip(tmp_path / "a.mp4", T0, T0 + 1) is None  # nothing buffered
    feed(ring, h264_clips["car"], limit_s=8)
    assert ring.write_clip(tmp_path / "b.mp4", T0 + 100, T0 + 101) is None  # after the buffer: nothing
    assert ring.write_clip(tmp_path / "c.mp4", T0 - 100, T0 - 99) is None  # before the buffer
    assert not list(tmp_path.iterdir())


@pytest.fixture
def annexb_clip(h264_clips: dict[str, Path], tmp_path: Path) -> Path:
    """The car clip as a raw Annex B H.264 stream (SPS/PPS in-band, like RTSP; no timestamps)."""
    out = tmp_path / "car.h264"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(h264_clips["car"]),
                    "-t", "12", "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(out)],
                   check=True, timeout=60)
    return out


@pytest.mark.parametrize("drop_extradata", [False, True])
def test_write_clip_from_annexb_source(annexb_clip: Path, tmp_path: Path, drop_extradata: bool) -> None:
    ring = PacketRing(20)
    times = feed(ring, annexb_clip)
    if drop_extradata:
        # White-box: a camera whose SDP had no sprop-parameter-sets gives a stream without
        # extradata; the muxer must then build avcC from the key frame's in-band SPS/PPS.
        assert ring._params is not None
        ring._params = dataclasses.replace(ring._params, extradata=b"")
    out = ring.write_clip(tmp_path / "clip.mp4", T0 + 2.0, T0 + 6.0)
    assert out is not None
    expected = [t for t in times if T0 + 2.0 - 1e-6 <= t <= T0 + 6.0]
    n, pts, keys = decode_file(out)
    assert n == len(expected) and keys[0]
    assert pts == sorted(pts) and pts[0] == pytest.approx(0.0, abs=1e-3)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.extradata_size > 0  # avcC written
