"""The sharded proof (scripts/shard_proof.py) small: 9 simulated cameras over 3 worker processes on a real
Mosquitto and ``gridwatch api`` (SQLite), one ``kill -9``, then 3 -> 4 shards. Nothing may be lost or
duplicated, no camera owned by two workers at once, and the moved cameras must be exactly the ones rendezvous
hashing moves. Plus the ownership checks themselves on hand-made health messages (they must see a double
owner). The 60-camera run on PostgreSQL is recorded in docs/deploy.md ("Sharded proof")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pipeline.sharding import shard_of
from tests.fixtures.media import CACHE
from tests.fixtures.mqtt import MOSQUITTO_BIN
from tests.scripts_loader import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "shard_proof.py"
T0 = 1_790_000_000.0  # a real Unix time


def _owners() -> ModuleType:
    return load_script("_shard_owners")


def test_overlapping_ownership_and_a_wrong_owner_are_found() -> None:
    owners = _owners()
    Rec, Life = owners.HealthRecord, owners.Lifetime
    cam = next(f"cam-{i:03d}" for i in range(100) if shard_of(f"cam-{i:03d}", 3) != shard_of(f"cam-{i:03d}", 4))
    old, new = shard_of(cam, 3), shard_of(cam, 4)
    lives = [Life(f"shard-{old}", old, 3, 1, T0, T0 + 10), Life(f"shard-{new}", new, 4, 1, T0 + 8, None)]
    records = [Rec(cam, f"shard-{old}", T0 + 1, 1), Rec(cam, f"shard-{old}", T0 + 9, 5),
               Rec(cam, f"shard-{new}", T0 + 8.5, 1), Rec(cam, f"shard-{new}", T0 + 12, 3),
               Rec(cam, "shard-99", T0 + 2, 1)]
    observed, orphans = owners.observed_intervals(records, lives, T0 + 20)
    assert orphans == 1  # shard-99 never ran
    found = owners.overlaps(observed)
    assert [(f["camera"], round(f["overlap_s"], 1)) for f in found] == [(cam, 0.5)]
    assert len(owners.overlaps(owners.process_intervals([cam], lives, T0 + 20))) == 1
    # Back to back (the second starts after the first ended) is no overlap.
    apart = [Life("shard-0", 0, 1, 1, T0, T0 + 5), Life("shard-0", 0, 1, 2, T0 + 6, T0 + 9)]
    assert owners.overlaps(owners.process_intervals([cam], apart, T0 + 20)) == []
    wrong = owners.wrong_owners([Rec(cam, f"shard-{(old + 1) % 3}", T0, 1)],
                                {f"shard-{i}": 3 for i in range(3)})
    assert wrong == [{"camera": cam, "worker": f"shard-{(old + 1) % 3}"}]
    pick = owners.pick_up([Rec(cam, "shard-1", T0 + 3, 0), Rec(cam, "shard-1", T0 + 5, 2)],
                          [cam, "cam-001"], "shard-1", T0 + 2, T0)
    assert pick["picked_up"] == 1 and pick["missing"] == ["cam-001"] and pick["after_start_s"]["max"] == 3.0


@pytest.mark.integration
@pytest.mark.slow
def test_nine_cameras_three_to_four_shards_with_a_kill(shared_dir: Path, tmp_path: Path) -> None:
    if not Path(MOSQUITTO_BIN).exists():
        pytest.skip("needs mosquitto")
    # Loops of 12 and 14 s (the car parked 8 s of each), every key frame analysed: each camera opens and clears
    # a parking incident every loop, so alerts flow in every phase.
    cmd = [sys.executable, str(SCRIPT), "--cameras", "9", "--database-url", "sqlite", "--phase-seconds", "3",
           "--down-seconds", "2", "--analysis-interval", "1", "--health-interval", "1", "--dwell", "2",
           "--clear", "3", "--clip-starts", "26,24", "--hold", "8", "--clip-dir", str(CACHE),
           "--cut-wait", "15", "--warmup-timeout", "90", "--drain-timeout", "60", "--workdir", str(tmp_path / "proof"),
           "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.stdout.strip(), f"no report (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    alerts = report["alerts"]
    assert alerts["lost"] == 0 and alerts["duplicated"] == 0, json.dumps(report["loss_detail"], indent=1)
    assert alerts["worker_alerts_applied"] == alerts["worker_alerts_on_broker"] == alerts["worker_alerts_queued"] > 0
    assert report["sequence_gaps"] == 0, report["sequences"]
    cameras = [f"cam-{i:03d}" for i in range(9)]
    moved = sorted(c for c in cameras if shard_of(c, 3) != shard_of(c, 4))
    assert moved and report["resize"]["moved_cameras"] == moved
    assert report["resize"]["moved_exactly_as_hashed"] and report["resize"]["moved_to"] == ["shard-3"]
    assert report["resize"]["picked_up"] == len(moved)
    assert report["resize"]["never_cleared"] == 0  # a moved camera's open incident is cleared (camera_moved)
    own = report["ownership"]
    assert own["observed_overlaps"] == [] and own["process_overlaps"] == []
    assert own["wrong_owner_before_resize"] == [] and own["wrong_owner_after_resize"] == []
    assert own["cameras_seen"] == 9 and own["unattributed_messages"] == 0
    killed = [c for c in cameras if shard_of(c, 3) == 1]
    assert report["kill"]["cameras"] == len(killed) > 0 and report["kill"]["missing"] == []
    # The kill hit an open incident; the restarted shard went on with it under the same id (its journal).
    assert report["kill"]["continued_same_id"] == report["kill"]["incidents_open_at_cut"] >= 1, report["kill"]
    ends = [(lf["worker"], lf["ended_by"]) for lf in report["lifetimes"]]
    assert ("shard-1/3#1", "kill -9") in ends and ("shard-1/3#2", "SIGTERM") in ends
    assert {w for w, _ in ends} >= {"shard-0/4#2", "shard-3/4#1"}
    assert report["ok"] and proc.returncode == 0, proc.stderr[-4000:]
