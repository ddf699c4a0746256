"""The decode rate follows the hazards: `decode: auto`, the measured GOP, and the warnings when a mode falls short.

The house fire that never alerted had a key frame every 3 s; fire needs 2 analysed frames/s. Files here
are real x264 encodes with B-frames and the GOPs that matter: 3 s (decode every frame for fire) and
0.4 s (key frames alone give 2.5/s).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.analyze.incident import Hazard
from pipeline.config import CameraConfig, DecodeMode, SiteConfig
from pipeline.ingest.decode_plan import (
    GopMeter,
    StreamProbe,
    camera_rate_warnings,
    effective_mode,
    hazard_rates,
    probe_file,
    rule_rate_warnings,
)
from tests.ingest.conftest import Cam, encode_test_pattern, wait_for

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

FIRE = {"fire": 2.0}


@pytest.fixture(scope="module")
def gop_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8 s 25 fps x264 files with 3 B-frames: a key frame every 3 s ("long") and every 0.4 s ("short")."""
    d = tmp_path_factory.mktemp("gops")
    return {"long": encode_test_pattern(d / "gop3s.mp4", 8.0, gop=75),
            "short": encode_test_pattern(d / "gop04s.mp4", 8.0, gop=10)}


def _site(cameras: list[dict[str, object]], hazards: dict[str, object] | None = None) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
            {"code": "C", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}],
        "cameras": cameras, "hazards": hazards or {},
        "detectors": {"coco": {"model": "coco"}, "fire": {"model": "fire"}}})


def test_fire_needs_two_frames_per_second_parking_clutter_posters_key_frames() -> None:
    site = _site([{"id": "fire", "url": "a.mp4", "grid": "G1", "hazards": ["fire"]},
                  {"id": "lot", "url": "b.mp4", "grid": "G1", "zones": [
                      {"id": "z", "kind": "fire_lane", "polygon": [[0, 0], [1, 0], [1, 1]]},
                      {"id": "w", "kind": "wall", "polygon": [[0, 0], [1, 0], [1, 1]]}]}])
    assert site.cameras[0].decode is DecodeMode.AUTO  # the default
    assert hazard_rates(site.hazards, site.cameras[0]) == FIRE
    assert hazard_rates(site.hazards, site.cameras[1]) == {}
    tuned = _site([{"id": "fire", "url": "a.mp4", "grid": "G1", "hazards": ["fire"]}],
                  {"fire": {"min_analysis_fps": 4}, "poster": {"min_analysis_fps": 0.5}})
    assert hazard_rates(tuned.hazards, tuned.cameras[0]) == {"fire": 4.0}
    assert tuned.hazards[Hazard.FIRE].confirm_k == 3  # tuning one field keeps the other defaults
    off = _site([{"id": "fire", "url": "a.mp4", "grid": "G1", "hazards": ["fire"]}], {"fire": {"enabled": False}})
    assert hazard_rates(off.hazards, off.cameras[0]) == {}


@pytest.mark.parametrize(("mode", "need", "gop_s", "expected"), [
    (DecodeMode.AUTO, 2.0, 3.0, DecodeMode.INTERVAL), (DecodeMode.AUTO, 2.0, 0.4, DecodeMode.KEYFRAMES),
    (DecodeMode.AUTO, 2.0, 0.5, DecodeMode.KEYFRAMES), (DecodeMode.AUTO, 2.0, None, DecodeMode.INTERVAL),
    (DecodeMode.AUTO, 0.0, None, DecodeMode.KEYFRAMES), (DecodeMode.KEYFRAMES, 2.0, 3.0, DecodeMode.KEYFRAMES),
    (DecodeMode.INTERVAL, 0.0, 0.4, DecodeMode.INTERVAL)])
def test_effective_mode(mode: DecodeMode, need: float, gop_s: float | None, expected: DecodeMode) -> None:
    assert effective_mode(mode, need, gop_s) is expected


def test_gop_meter_ignores_the_loop_point_and_keeps_the_longest_recent_gop() -> None:
    meter = GopMeter(fallback_fps=30.0)
    assert meter.probe() == StreamProbe(30.0, None)
    for i in range(200):  # 25 fps, key frame every 3 s
        meter.add(1.8e9 + i / 25, i % 75 == 0)
    assert meter.probe() == StreamProbe(25.0, 3.0)
    meter.break_run()
    meter.add(1.8e9 + 8.2, True)  # the loop restarts the file 0.2 s after its last key frame
    assert meter.probe().keyframe_interval_s == 3.0


def test_warnings_say_which_mode_cannot_give_a_hazard_its_rate() -> None:
    def cam(**kw: object) -> CameraConfig:
        return CameraConfig.model_validate({"id": "c1", "url": "a.mp4", "grid": "G1", **kw})

    gop3 = StreamProbe(25.0, 3.0)
    [kf] = camera_rate_warnings(cam(decode="keyframes"), FIRE, gop3)
    assert "c1" in kf and "0.33 frames/s" in kf and "3.00 s" in kf and "fire needs 2" in kf and "auto" in kf
    assert "key frame every 0.50 s or less" in camera_rate_warnings(cam(decode="keyframes"), FIRE)[0]
    assert camera_rate_warnings(cam(decode="keyframes"), FIRE, StreamProbe(25.0, 0.4)) == []
    assert camera_rate_warnings(cam(), FIRE, gop3) == []  # auto decodes what fire needs
    assert camera_rate_warnings(cam(decode="keyframes"), {}, gop3) == []
    assert "max_fps 1" in camera_rate_warnings(cam(decode="interval", max_fps=1), FIRE, gop3)[0]
    assert "analysis_interval 1 s" in camera_rate_warnings(cam(analysis_interval=1.0), FIRE, gop3)[0]
    assert "only 1.00 frames/s" in camera_rate_warnings(cam(), FIRE, StreamProbe(1.0, 3.0))[0]
    site = _site([], {"fire": {"analysis_interval_seconds": 1.0}})
    assert "hazards.fire: analysis_interval_seconds 1" in rule_rate_warnings(site.hazards)[0]
    assert rule_rate_warnings(_site([]).hazards) == []


def test_probe_file_measures_gop_and_frame_rate(gop_files: dict[str, Path]) -> None:
    assert probe_file(gop_files["long"]) == StreamProbe(25.0, 3.0)
    assert probe_file(gop_files["short"]) == StreamProbe(25.0, 0.4)


def test_auto_decodes_a_long_gop_fire_camera_at_two_frames_per_second(cams: Callable[..., Cam],
                                                                     gop_files: dict[str, Path]) -> None:
    cam = cams("house", str(gop_files["long"]), DecodeMode.AUTO, hazard_rates=FIRE)
    assert wait_for(lambda: cam.reader.health().keyframe_interval_s is not None, 6)
    time.sleep(1.0)
    h = cam.reader.health()
    cam.close()
    assert (h.decode_mode, h.decode_mode_effective, h.required_fps) == ("auto", "interval", 2.0)
    assert (h.fps, h.keyframe_interval_s, h.analysis_fps, h.rate_warning) == (25.0, 3.0, 2.0, None)
    # Two analysed frames per second of stream from the first second on, not one per 3 s GOP.
    pts = [f.pts for f in cam.collector.frames if f.pts is not None]
    span = pts[-1] - pts[0]
    assert span >= 3.5 and len(pts) + h.frames_dropped >= 2 * span
    assert max(b - a for a, b in zip(pts, pts[1:], strict=False)) <= 0.5 + 0.04 + 1e-6
    assert sum(not f.keyframe for f in cam.collector.frames) >= len(pts) - 2


def test_keyframes_mode_on_a_long_gop_fire_camera_warns(cams: Callable[..., Cam], gop_files: dict[str, Path],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.ingest.reader")
    cam = cams("house-kf", str(gop_files["long"]), DecodeMode.KEYFRAMES, hazard_rates=FIRE)
    assert wait_for(lambda: cam.reader.health().keyframe_interval_s is not None, 6), cam.reader.health()
    h = cam.reader.health()
    cam.close()
    assert (h.decode_mode_effective, h.keyframe_interval_s, h.analysis_fps) == ("keyframes", 3.0, 0.333)
    assert h.rate_warning and "fire needs 2 frames/s" in h.rate_warning and "a key frame every 3.00 s" in h.rate_warning
    assert all(f.keyframe for f in cam.collector.frames)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "fire needs" in r.getMessage()]
    assert len(warned) == 1 and "house-kf" in warned[0].getMessage()


def test_auto_keeps_key_frames_when_they_come_often_enough(cams: Callable[..., Cam],
                                                           gop_files: dict[str, Path]) -> None:
    fire = cams("short-fire", str(gop_files["short"]), DecodeMode.AUTO, hazard_rates=FIRE)
    parking = cams("long-parking", str(gop_files["long"]), DecodeMode.AUTO)
    time.sleep(3.5)
    hf, hp = fire.reader.health(), parking.reader.health()
    fire.close()
    parking.close()
    # 2.5 key frames/s meet fire's 2/s: after the first GOP (measured), key frames only, 2 of them per second.
    assert (hf.decode_mode_effective, hf.keyframe_interval_s, hf.analysis_fps) == ("keyframes", 0.4, 2.0)
    late = [f for f in fire.collector.frames if (f.pts or 0) >= 0.4]
    assert late and all(f.keyframe for f in late)
    span = (late[-1].pts or 0) - (late[0].pts or 0)
    assert 2 * span - 1 <= len(late) + hf.frames_dropped <= 2 * span + 1
    # Parking needs no rate: key frames from the start, one per 3 s GOP.
    assert (hp.decode_mode_effective, hp.required_fps, hp.rate_warning) == ("keyframes", 0.0, None)
    assert [f.pts for f in parking.collector.frames] == [0.0, 3.0]


def test_check_config_warns_when_a_cameras_mode_cannot_give_fire_its_rate(gop_files: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from pipeline.cli import app

    grid = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
        {"code": "C", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}]
    shutil.copy(gop_files["long"], tmp_path / "house.mp4")
    cams = [{"id": "house-kf", "url": "house.mp4", "grid": "G1", "decode": "keyframes", "hazards": ["fire"]},
            {"id": "house-auto", "url": "house.mp4", "grid": "G1", "hazards": ["fire"]},
            {"id": "lot-kf", "url": "house.mp4", "grid": "G1", "decode": "keyframes", "zones": [
                {"id": "z", "kind": "no_parking", "polygon": [[0, 0], [1, 0], [1, 1]]}]},
            {"id": "street", "url": "rtsp://192.0.2.1/1", "grid": "G1", "decode": "keyframes", "hazards": ["fire"]}]
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"grid": grid, "cameras": cams, "hazards": {"poster": {"enabled": False}},
                                    "detectors": {"coco": {"model": "coco"}, "fire": {"model": "fire"}}}))
    result = CliRunner().invoke(app, ["check-config", str(site)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    # The file is probed (a key frame every 3 s); the RTSP camera is judged by its config alone.
    assert len(warnings) == 2, result.output
    assert "house-kf" in warnings[0] and "0.33 frames/s" in warnings[0] and "fire needs 2" in warnings[0]
    assert "street" in warnings[1] and "key frame every 0.50 s or less" in warnings[1]


def test_auto_caps_an_intra_only_stream_at_max_fps(cams: Callable[..., Cam], tmp_path: Path) -> None:
    # MJPEG in Matroska: every packet is a key frame, and the container does not count its frames
    # (the reader first reads two packets to tell it from a still image, then keeps them).
    mjpeg = encode_test_pattern(tmp_path / "mjpeg.mkv", 6.0, "mjpeg", gop=1, bframes=0)
    cam = cams("mjpeg", str(mjpeg), DecodeMode.AUTO, max_fps=2.0)
    assert wait_for(lambda: cam.reader.health().keyframe_interval_s is not None, 5)
    time.sleep(2.0)
    h = cam.reader.health()
    cam.close()
    assert (h.decode_mode_effective, h.keyframe_interval_s, h.fps, h.analysis_fps) == ("keyframes", 0.04, 25.0, 2.0)
    pts = [f.pts for f in cam.collector.frames if f.pts is not None]
    assert pts[0] == 0.0  # the packets read to rule out a still image were decoded too
    assert 2 * (pts[-1] - pts[0]) - 1 <= len(pts) + h.frames_dropped <= 2 * (pts[-1] - pts[0]) + 1
    assert h.frames_decoded >= 25 * (pts[-1] - pts[0])  # every key frame decoded, 2/s analysed
