"""CameraReader against a real RTSP server (GStreamer), and its behaviour under faults."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.config import DecodeMode, WorkerConfig
from tests.fixtures.media import corrupt_copy
from tests.fixtures.rtsp import RtspServer, free_port
from tests.ingest.conftest import Cam, decode_file, wait_for


@pytest.mark.integration
@pytest.mark.parametrize("mode", [DecodeMode.KEYFRAMES, DecodeMode.INTERVAL])
def test_reader_streams_rtsp_and_clips(cams: Callable[..., Cam], rtsp_server: Callable[..., RtspServer],
                                       h264_clips: dict[str, Path], tmp_path: Path, mode: DecodeMode) -> None:
    srv = rtsp_server({"car": h264_clips["car"]})
    cam = cams("rtsp1", srv.url("car"), mode, max_fps=5)
    assert wait_for(lambda: cam.reader.health().frames_decoded >= 3, 15), cam.reader.health()
    time.sleep(2.5)
    h = cam.reader.health()
    assert h.state == "streaming" and h.reconnects == 0
    frames = cam.collector.frames
    assert frames and cam.collector.shapes == {(432, 768, 3)}
    if mode is DecodeMode.KEYFRAMES:
        assert all(f.keyframe for f in frames)
    else:
        assert any(not f.keyframe for f in frames)
        gaps = [b.ts - a.ts for a, b in zip(frames, frames[1:], strict=False)]
        assert min(gaps) >= 0.2 - 1 / 12.5 - 0.01  # 5/s on a stream-time schedule: a gap may lose a frame
        assert len(frames) + cam.reader.health().frames_dropped <= (frames[-1].ts - frames[0].ts) * 5 + 2
    # The ring holds the RTSP packets (Annex B) and remuxes them into a playable MP4.
    first, last = cam.ring.span()  # type: ignore[misc]
    assert last - first >= 2.0
    out = cam.ring.write_clip(tmp_path / "rtsp.mp4", last - 2.0, last)
    assert out is not None
    n, pts, keys = decode_file(out)
    assert n >= 2.0 * 12.5 - 2 and keys[0] and pts == sorted(pts)


@pytest.mark.integration
def test_server_restart_reconnects_while_other_camera_streams(
        cams: Callable[..., Cam], rtsp_server: Callable[..., RtspServer],
        h264_clips: dict[str, Path]) -> None:
    srv_a = rtsp_server({"a": h264_clips["car"]})
    srv_b = rtsp_server({"b": h264_clips["person"]})
    cam_a = cams("cam_a", srv_a.url("a"))
    cam_b = cams("cam_b", srv_b.url("b"))
    assert wait_for(lambda: all(c.reader.health().state == "streaming" for c in (cam_a, cam_b)), 15)

    # Watch both cameras' states in the background for the whole fault.
    seen_a: list[str] = []
    b_states: list[str] = []
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            seen_a.append(cam_a.reader.health().state)
            b_states.append(cam_b.reader.health().state)
            time.sleep(0.05)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    b_before = cam_b.reader.health().frames_decoded
    srv_a.stop(kill=True)  # camera A's server dies mid-stream
    assert wait_for(lambda: cam_a.reader.health().state in ("reconnecting", "error"), 10)
    time.sleep(1.5)
    srv_a.start()  # same port
    assert wait_for(lambda: cam_a.reader.health().state == "streaming", 15), (cam_a.reader.health(),
                                                                             srv_a.alive, srv_a.output)
    watching.clear()
    th.join(2)

    h_a = cam_a.reader.health()
    assert h_a.reconnects >= 1 and h_a.last_error
    assert "reconnecting" in seen_a and "streaming" in seen_a[seen_a.index("reconnecting"):] + [h_a.state]
    # B never noticed: streaming at every sample and still decoding.
    assert set(b_states) == {"streaming"}
    assert cam_b.reader.health().frames_decoded > b_before
    assert time.time() - (cam_b.reader.health().last_frame_ts or 0) < 5


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["truncate", "garbage"])
def test_corrupt_file_is_error_other_camera_fine(cams: Callable[..., Cam], h264_clips: dict[str, Path],
                                                 tmp_path: Path, mode: str) -> None:
    bad = corrupt_copy(h264_clips["car"], tmp_path / "bad.mp4", mode=mode)
    good = cams("good", str(h264_clips["person"]))
    broken = cams("bad", str(bad))
    assert wait_for(lambda: broken.reader.health().reconnects >= 2, 10)
    h = broken.reader.health()
    assert h.state == "error" and h.last_error and h.frames_decoded == 0
    assert any(w in h.last_error for w in ("Invalid data", "undecodable", "no decodable")), h.last_error
    assert broken.reader.running  # keeps retrying, never raised
    assert good.reader.health().state == "streaming"
    assert good.reader.health().frames_decoded >= 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections but never answers (a hung camera)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield int(srv.getsockname()[1])
    stop.set()
    th.join(2)
    for c in conns:
        c.close()
    srv.close()


@pytest.mark.integration
def test_unreachable_url_backs_off_and_stops_promptly(cams: Callable[..., Cam]) -> None:
    worker = WorkerConfig(reconnect_min_seconds=0.2, reconnect_max_seconds=0.8, open_timeout_seconds=2)
    cam = cams("gone", f"rtsp://127.0.0.1:{free_port()}/x", worker=worker)
    t = time.monotonic()
    assert wait_for(lambda: cam.reader.health().reconnects >= 3, 10)
    elapsed = time.monotonic() - t
    h = cam.reader.health()
    assert h.state == "error" and h.last_error
    # Backoff 0.2, 0.4, 0.8 (+-25 %) before the 3rd reconnect, not a busy loop.
    assert elapsed >= (0.2 + 0.4) * 0.75
    t = time.monotonic()
    cam.reader.stop()
    assert time.monotonic() - t < 2.0 and not cam.reader.running


@pytest.mark.integration
def test_stop_interrupts_blocked_network_read(cams: Callable[..., Cam], silent_server: int) -> None:
    # A long socket timeout: without the interrupt, stop() would wait ~10 s for the read to fail.
    worker = WorkerConfig(reconnect_min_seconds=0.2, reconnect_max_seconds=1, open_timeout_seconds=10)
    cam = cams("hung", f"rtsp://127.0.0.1:{silent_server}/x", worker=worker)
    other = cams("other", "/nonexistent/never.mp4", worker=worker)
    time.sleep(1.0)  # reader "hung" is now blocked waiting for the RTSP OPTIONS reply
    assert cam.reader.health().state == "starting" and cam.reader.running
    assert other.reader.health().reconnects >= 1  # the hung camera does not block others
    t = time.monotonic()
    cam.reader.stop()
    assert time.monotonic() - t < 2.0
    assert not cam.reader.running and cam.reader.health().state == "stopped"


@pytest.mark.integration
def test_server_loops_short_file(cams: Callable[..., Cam], rtsp_server: Callable[..., RtspServer],
                                 h264_clips: dict[str, Path], tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(h264_clips["car"]), "-t", "3",
                    "-c", "copy", str(short)], check=True, timeout=60)
    srv = rtsp_server({"s": short})
    cam = cams("loop", srv.url("s"))
    # Key frames at 0 and 2 s of a 3 s file: 4+ key frames only if the server wraps around.
    assert wait_for(lambda: cam.reader.health().frames_decoded >= 4, 12), cam.reader.health()
    h = cam.reader.health()
    assert h.state == "streaming" and h.reconnects == 0


@pytest.mark.integration
def test_server_late_client_after_wrap(cams: Callable[..., Cam], rtsp_server: Callable[..., RtspServer],
                                       h264_clips: dict[str, Path], tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(h264_clips["car"]), "-t", "3",
                    "-c", "copy", str(short)], check=True, timeout=60)
    srv = rtsp_server({"s": short})
    cam = cams("loop", srv.url("s"))
    assert wait_for(lambda: cam.reader.health().frames_decoded >= 4, 12)
    late = cams("late", srv.url("s"))
    assert wait_for(lambda: late.reader.health().frames_decoded >= 1, 8)
    assert cam.reader.health().reconnects == 0
