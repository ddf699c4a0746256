"""`gridwatch replay` on real clips: stream-time incidents, JSON Lines, the annotated video, clean controls."""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path
from typing import Any

import av
import pytest
from typer.testing import CliRunner

from pipeline import annotate, detect_requests, replay_report
from pipeline.cli import app
from tests.fixtures.replay_media import CLIP_SECONDS, HOLD_AT, held_car_clip

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
START = 1_800_000_000.0
"""A real Unix time (2027): timers must hold sub-second precision at this magnitude."""
runner = CliRunner()


@pytest.fixture(scope="module")
def parking_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    """JSON records and annotated video of the held-car clip replayed as demo.yaml's lot-1 camera."""
    clip = held_car_clip(shared_dir)
    video = tmp_path_factory.mktemp("replay") / "annotated.mp4"
    result = runner.invoke(app, ["replay", str(clip), "-c", str(DEMO), "--camera", "lot-1", "--start-ts",
                                 str(START), "--json", "--annotate", str(video)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()], video


def test_parked_car_opens_one_incident_at_stream_time(parking_run: tuple[list[dict[str, Any]], Path]) -> None:
    records, _ = parking_run
    assert [records[0]["type"], records[-1]["type"]] == ["start", "summary"]
    assert records[0]["rules"] == [{"hazard": "parking", "zone": "no-parking-1", "rule": "NoParkingRule"}]
    incidents = [r for r in records if r["type"] == "incident"]
    assert [(r["event"], r["hazard"], r["zone"]) for r in incidents] == [("opened", "parking", "no-parking-1")]
    opened = incidents[0]
    # demo.yaml: dwell 8 s; key frames (analysed frames) come every second.
    assert HOLD_AT - 1.0 <= opened["started_t"] <= HOLD_AT + 1.5
    assert opened["started_t"] + 8.0 - 1e-6 <= opened["t"] <= opened["started_t"] + 9.5
    frames = [r for r in records if r["type"] == "frame"]
    summary = records[-1]
    assert len(frames) == summary["frames_analysed"] >= CLIP_SECONDS - 2
    # Stamped from the stream (start + pts), never the wall clock: exact, and one key frame a second.
    assert all(f["ts"] == pytest.approx(START + f["t"], abs=1e-3) for f in frames)
    gaps = {round(b["t"] - a["t"], 1) for a, b in zip(frames, frames[1:], strict=False)}
    assert gaps == {1.0}
    assert summary["duration_s"] == pytest.approx(frames[-1]["t"], abs=1e-3)
    # Detections per class with their best score, and each rule's state after the frame.
    cars = [f["detections"]["vehicles"]["car"] for f in frames if "car" in f["detections"].get("vehicles", {})]
    assert cars and all(c["n"] >= 1 and 0 < c["max"] <= 1 for c in cars)
    after = next(f for f in frames if f["events"])
    assert after["events"] == [f"opened:{opened['id']}"]
    assert after["rules"][0]["state"]["lifecycle"]["incident_id"] == opened["id"]
    assert frames[0]["rules"][0]["state"]["lifecycle"]["incident_id"] is None
    assert [(s["hazard"], s["opened_t"], s["cleared_t"]) for s in summary["incidents"]] == [
        ("parking", opened["t"], None)]


def test_annotated_video_has_one_frame_per_analysed_frame(parking_run: tuple[list[dict[str, Any]], Path]) -> None:
    records, video = parking_run
    summary = records[-1]
    with av.open(str(video)) as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 768, 432)
    assert len(frames) == summary["frames_analysed"]
    # Each frame shows at its own stream time, so the video plays in real time.
    last = frames[-1]
    assert last.pts is not None and last.time_base is not None
    assert float(last.pts * last.time_base) == pytest.approx(summary["duration_s"], abs=0.05)
    # The zone outline is drawn: red (open incident) on the last frame, in the zone's top-left corner region.
    img = last.to_ndarray(format="bgr24")
    edge = img[int(0.70 * 432) - 2:int(0.70 * 432) + 3, int(0.1 * 768):int(0.45 * 768)]
    assert ((edge[..., 2] > 180) & (edge[..., 1] < 80) & (edge[..., 0] < 80)).any()


def test_clean_control_opens_nothing_and_prints_a_timeline(shared_dir: Path) -> None:
    clip = shared_dir / "clips" / "street-highway-01.mp4"  # a motorway, no event; a red car at 3-9 s
    if not clip.is_file():
        pytest.skip(f"missing {clip}")
    # Key frames only (one every 3 s, in a stream with B-frames): cheap, and each one must come out.
    result = runner.invoke(app, ["replay", str(clip), "--hazard", "fire", "--hazard", "clutter", "--decode",
                                 "keyframes", "--start-ts", str(START)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "no incidents" in out and "OPENED" not in out
    m = re.search(r"(\d+) frames analysed of (\d+) decoded, ([\d.]+) s of video", out)
    assert m is not None, out
    assert (int(m[1]), int(m[2]), float(m[3])) == (4, 4, 9.0)
    timeline = [line for line in out.splitlines() if re.match(r"\s+\d+\.\d\ds ", line)]
    assert [line.split()[0] for line in timeline] == ["0.00s", "3.00s", "6.01s", "9.01s"]
    assert all(" K " in line and "fire@frame:" in line and "clutter@frame:" in line for line in timeline)


@pytest.mark.parametrize(("args", "code", "message"), [
    ([], 2, "pass -c SITE.yaml --camera ID"),
    (["--hazard", "smoke-ish", "x.mp4"], 2, "hazards: parking, fire, clutter, poster"),
    (["-c", str(DEMO), "--camera", "nope"], 2, "no camera 'nope' (cameras: lot-1, corridor-1)"),
    (["--zone", "0,0 1,0 1,1"], 2, "--zone needs --hazard"),
    (["--hazard", "clutter", "--zone", "0,0 1,x 1,1", "x.mp4"], 2, "bad point '1,x'"),
    (["--hazard", "fire", "missing.mp4"], 2, "no such video file: missing.mp4"),
])
def test_usage_errors_say_what_to_pass(args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["replay", *args])
    assert result.exit_code == code
    assert message in " ".join(result.output.split())


def test_a_file_that_is_no_video_fails_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    result = runner.invoke(app, ["replay", str(bad), "--hazard", "fire"])
    assert result.exit_code == 1
    assert "replay failed:" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("module", [annotate, replay_report, detect_requests], ids=lambda m: m.__name__)
def test_docstring_examples(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
