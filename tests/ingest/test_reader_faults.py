"""Sources that open but are no usable video: still images (files, snapshot URLs) and truncated files.

A still image used to loop "reconnecting" forever and a truncated file looped its first seconds
silently. Now a still image is `error` with the reason and retried only after
``worker.source_error_retry_seconds``; a truncated file keeps looping what it can, with every short pass
counted and explained in the health.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.config import DecodeMode, WorkerConfig
from tests.ingest.conftest import Cam, encode_test_pattern, wait_for

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

# Short reconnect delays as in the other ingest tests, but a still image waits a minute.
WORKER = WorkerConfig(reconnect_min_seconds=0.2, reconnect_max_seconds=1.0, open_timeout_seconds=3.0,
                      source_error_retry_seconds=60.0)


def _picture(out: Path, frames: int = 1, extra: tuple[str, ...] = ()) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-frames:v", str(frames), *extra, str(out)],
                   check=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("stills")
    return {"jpg": _picture(d / "snap.jpg"), "png": _picture(d / "snap.png"),
            "mp4": _picture(d / "one-frame.mp4", extra=("-c:v", "libx264", "-pix_fmt", "yuv420p"))}


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """Serve files over real HTTP from a thread; the factory returns a file's URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()

    def url(path: Path) -> str:
        shutil.copy(path, tmp_path / path.name)
        return f"http://127.0.0.1:{server.server_address[1]}/{path.name}"

    yield url
    server.shutdown()
    server.server_close()
    th.join(2)


def _assert_still_image_error(cam: Cam) -> None:
    assert wait_for(lambda: cam.reader.health().state == "error", 5), cam.reader.health()
    time.sleep(1.5)  # several normal backoffs: a still image must not be retried in them
    h = cam.reader.health()
    assert h.state == "error" and h.reconnects == 0 and h.frames_decoded == 0
    assert h.last_error and "still image" in h.last_error and "not a video" in h.last_error
    assert cam.collector.frames == [] and cam.reader.running  # no picture analysed; retried much later


@pytest.mark.parametrize("kind", ["jpg", "png", "mp4"])
def test_still_image_file_is_an_error_not_a_loop(cams: Callable[..., Cam], pictures: dict[str, Path],
                                                 kind: str) -> None:
    cam = cams(f"still-{kind}", str(pictures[kind]), DecodeMode.AUTO, worker=WORKER)
    if kind == "mp4":  # a one-frame video: its picture is decoded before its end shows it is all there is
        assert wait_for(lambda: cam.reader.health().state == "error", 5), cam.reader.health()
        h = cam.reader.health()
        assert h.last_error and "still image" in h.last_error and h.reconnects == 0 and h.frames_decoded == 1
        return
    _assert_still_image_error(cam)


@pytest.mark.integration
def test_snapshot_url_is_an_error_not_a_reconnect_loop(cams: Callable[..., Cam], pictures: dict[str, Path],
                                                       http_dir: Callable[[Path], str]) -> None:
    url = http_dir(pictures["jpg"])
    cam = cams("snapshot", url, DecodeMode.AUTO, worker=WORKER)
    _assert_still_image_error(cam)
    assert url in (cam.reader.health().last_error or "")


def test_truncated_file_loops_its_readable_part_visibly(cams: Callable[..., Cam], tmp_path: Path) -> None:
    full = encode_test_pattern(tmp_path / "full.mp4", 6.0, gop=25)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 5])  # the index survives (+faststart)
    cam = cams("cut", str(cut), DecodeMode.KEYFRAMES)
    assert wait_for(lambda: cam.reader.health().truncated_loops >= 1, 8), cam.reader.health()
    assert wait_for(lambda: len(cam.collector.frames) >= 5, 5)
    h = cam.reader.health()
    cam.close()
    assert h.state == "streaming" and h.reconnects == 0
    assert h.last_error and "file ends early" in h.last_error and "of its declared 6.0 s" in h.last_error
    readable = float(h.last_error.split("early: ")[1].split(" s")[0])
    assert 1.0 < readable < 4.0
    # Still looping what is readable, with stream time going on.
    pts = [f.pts for f in cam.collector.frames if f.pts is not None]
    assert len(pts) == len(cam.collector.frames) and pts == sorted(pts) and max(pts) > readable


def test_whole_file_is_not_truncated(cams: Callable[..., Cam], tmp_path: Path) -> None:
    cam = cams("whole", str(encode_test_pattern(tmp_path / "whole.mp4", 2.0, gop=25)), DecodeMode.KEYFRAMES)
    assert wait_for(lambda: len(cam.collector.frames) >= 4, 6)  # key frames at 0, 1, 2 (loop), 3
    h = cam.reader.health()
    assert h.truncated_loops == 0 and h.last_error is None and h.decode_errors == 0
