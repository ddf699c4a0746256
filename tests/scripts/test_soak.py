"""Smoke run of scripts/soak.py: the real system (Mosquitto, RTSP camera, `gridwatch api` on SQLite,
`gridwatch worker`) for 36 s under every kind of fault (seed 3 puts them at 26-30 s, as late after start as the
former 45 s run had them, so the camera's first parking alert still comes first), then its JSON report must say
nothing was lost or duplicated. The full 10-minute soak is recorded in docs/reliability.md ("Soak")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.media import CACHE
from tests.fixtures.mqtt import MOSQUITTO_BIN
from tests.fixtures.rtsp import gst_rtsp_available

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"
FAULTS = {"burst", "worker_kill", "broker_restart", "camera_kill", "api_restart"}


def test_short_soak_loses_and_duplicates_nothing(shared_dir: Path, tmp_path: Path) -> None:
    if not Path(MOSQUITTO_BIN).exists() or not gst_rtsp_available():
        pytest.skip("needs mosquitto and GStreamer's RTSP server")
    # A plain subscription: with the default shared group, Mosquitto 2.0.11 does not restore the offline
    # consumer's shared subscription after a broker restart, and this seed's burst (sent then, while the API
    # restarts) is lost whole: docs/reliability.md, "Soak". The 10-minute soak runs the default.
    cmd = [sys.executable, str(SCRIPT), "--minutes", "0.6", "--cameras", "1", "--burst", "200",
           "--chaos-interval", "6", "--warmup-seconds", "22", "--seed", "3", "--drain-timeout", "90",
           "--shared-group", "none",
           "--clip", str(CACHE / "soak-parks-16-27.6-20.mp4"), "--workdir", str(tmp_path / "soak"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip(), f"no report (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    alerts = report["alerts"]
    detail = json.dumps({k: alerts[k] for k in ("lost_detail", "duplicate_detail")}, indent=1)
    assert alerts["lost"] == 0, detail
    assert alerts["duplicated"] == 0, detail
    assert alerts["burst_tickets"] == alerts["burst_sent"] == 200
    assert alerts["worker_alerts_queued"] >= 1  # the camera -> detector -> rule -> outbox path ran
    assert alerts["worker_alerts_applied"] == alerts["worker_alerts_on_broker"] >= 1
    assert {e["action"] for e in report["chaos"] if "skipped" not in e} == FAULTS
    assert report["drain"]["drained"], proc.stderr[-4000:]
    assert report["unexpected_exits"] == []
    burst_series = [s for w, s in report["sequences"].items() if w.startswith("soak-burst-")]
    assert burst_series == [{"last_seq": 200, "missing_total": 0, "late_total": 0}]
    assert proc.returncode == 0, proc.stderr[-4000:]
