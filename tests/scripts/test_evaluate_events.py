"""scripts/evaluate_events.py: matching incidents to labelled events, and the table over two real clips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.replay import IncidentSpan, ReplaySummary
from tests.fixtures.replay_media import HOLD_AT, held_car_clip
from tests.scripts_loader import load_script

REPO = Path(__file__).resolve().parents[2]
ev = load_script("evaluate_events")


def _summary(duration: float, *spans: tuple[str, str | None, float]) -> ReplaySummary:
    s = ReplaySummary("clip.mp4", "cam", 1.8e9, duration_s=duration)
    s.incidents = [IncidentSpan(f"i{n}", h, z, t - 1, t) for n, (h, z, t) in enumerate(spans)]
    return s


def test_score_matches_by_hazard_zone_and_window() -> None:
    events = ev.parse_events([{"hazard": "parking", "window": [10, 30]},
                              {"hazard": "clutter", "window": [40, None], "zone": "floor"},
                              {"hazard": "fire", "window": [5, 20]}], "clip")
    summary = _summary(1800.0,
                       ("parking", "lane", 4.0),    # before its window: false, and does not count for it
                       ("parking", "lane", 18.5),   # found: 8.5 s after the event began
                       ("clutter", "door", 50.0),   # wrong zone: false
                       ("clutter", "floor", 700.0),  # open-ended window: found after 660 s
                       ("fire", None, 25.0))        # after the fire window closed: false; fire missed
    r = ev.ClipResult("clip", [])
    ev.score(events, summary, r)
    assert (r.expected, r.alerts, r.found, r.missed, r.false) == (3, 5, 2, 1, 3)
    assert r.time_to_alert == [8.5, 660.0]
    assert r.false_per_hour == pytest.approx(6.0)  # 3 in half an hour
    assert r.false_events == ["parking@lane 4.0s", "clutter@door 50.0s", "fire@frame 25.0s"]


@pytest.mark.parametrize(("raw", "message"), [
    ({"hazard": "fire"}, "want `none` or a list"),
    ([{"hazard": "fire"}], "events[0]: want {hazard, window"),
    ([{"hazard": "fire", "window": [3]}], "events[0].window: want [start, end]"),
    ([{"hazard": "fire", "window": [9, 3]}], "end 3.0 is before start 9.0"),
])
def test_bad_event_labels_are_named(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match="clip7") as exc:
        ev.parse_events(raw, "clip7")
    assert message in str(exc.value)


def test_two_clip_list_gives_the_table(shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    control = shared_dir / "clips" / "street-highway-01.mp4"
    if not control.is_file():
        pytest.skip(f"missing {control}")
    events = tmp_path / "events.yaml"
    events.write_text(yaml.safe_dump({
        "defaults": {"config": str(REPO / "configs" / "demo.yaml"), "start_ts": 1_800_000_000},
        "clips": [
            {"name": "held-car", "clip": str(held_car_clip(shared_dir)), "camera": "lot-1",
             "events": [{"hazard": "parking", "window": [HOLD_AT, None]}]},
            {"name": "highway", "clip": str(control), "spec": {"hazards": ["fire"], "decode": "keyframes"},
             "events": "none"},
            {"name": "not-made", "clip": str(tmp_path / "nothing.mp4"), "make": "python scripts/x.py",
             "events": "none"},
        ]}))
    assert ev.main([str(events), "--markdown"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| clip | hazards | video s | expected | alerts | time to alert s | missed |")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table[2:]}
    assert list(rows) == ["held-car", "highway", "not-made", "**all**"]
    hazards, video_s, expected, alerts, tta, missed, false, per_hour, _ = rows["held-car"]
    assert (hazards, expected, alerts, missed, false, per_hour) == ("parking", "1", "1", "0", "0", "0")
    assert 7.5 <= float(tta) <= 10.0 and int(video_s) >= 15  # parking dwell 8 s, key frames every second
    assert rows["highway"][:8] == ["fire", rows["highway"][1], "0", "0", "-", "0", "0", "0"]
    assert rows["not-made"][-1] == "missing (python scripts/x.py)"
    assert rows["**all**"][2:7] == ["1", "1", f"median {float(tta):.1f}", "0", "0"]
    # --strict turns the missing clip into a failure; --json gives one object per clip.
    assert ev.main([str(events), "--strict", "--json", "--only", "not-made"]) == 1
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert json.loads(line)["status"] == "missing (python scripts/x.py)"
