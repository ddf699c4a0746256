"""Open incidents survive a worker restart (IncidentJournal + CameraAnalyzer.restore_incidents), at real Unix
times: a car still parked after the restart goes on under the same incident id, one that left is cleared, an
incident whose zone was removed from the config is cleared at start, and a camera that stays down clears."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.incident import Hazard, Incident, IncidentEvent
from pipeline.analyze.journal import IncidentJournal, JournalEntry, orphan_cleared
from pipeline.config import SiteConfig
from pipeline.detect.detections import Detections
from pipeline.ingest.frame import Frame

from .test_analyzer import GRID

T0 = 1_796_000_000.25
ZONE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
OPENED, UPDATED, CLEARED = IncidentEvent.OPENED, IncidentEvent.UPDATED, IncidentEvent.CLEARED


def _site() -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": GRID,
        "cameras": [{"id": "cam1", "url": "x.mp4", "grid": "G",
                     "zones": [{"id": "gate", "kind": "no_parking", "polygon": ZONE}]}],
        "hazards": {"parking": {"dwell_seconds": 10, "clear_seconds": 20, "update_interval_seconds": 30,
                                "confirm_k": 1, "confirm_n": 1}},
    })


def _car(present: bool) -> dict[str, Detections]:
    if not present:
        return {"coco": Detections.empty()}
    return {"coco": Detections.from_arrays([[400, 200, 600, 400]], [0.9], [2], {2: "car"})}


def _run(a: CameraAnalyzer, journal: IncidentJournal, t_from: float, t_to: float, car: bool) -> list[Incident]:
    out: list[Incident] = []
    ts = t_from
    while ts <= t_to:
        f = Frame("cam1", np.zeros((500, 1000, 3), np.uint8), ts=ts, pts=ts - T0, seq=int(ts - T0), keyframe=True)
        for inc in a.analyze(f, _car(car)):
            journal.record(inc)  # what the worker does after queueing the alert
            out.append(inc)
        ts += 1.0
    return out


def test_restart_continues_the_same_incident(tmp_path: Path) -> None:
    cfg = _site()
    journal = IncidentJournal(tmp_path / "incidents.db")
    first = _run(CameraAnalyzer(cfg, cfg.cameras[0]), journal, T0, T0 + 15, car=True)
    assert [e.event for e in first] == [OPENED]
    opened = first[0]
    assert opened.started_at == T0 and opened.ts == T0 + 10
    (entry,) = journal.open_incidents("cam1")
    assert (entry.incident_id, entry.started_at, entry.opened_at) == (opened.id, T0, T0 + 10)
    journal.close()

    # The worker is killed; 60 s later a new process starts with the same journal and the car is still there.
    journal = IncidentJournal(tmp_path / "incidents.db")
    restart = T0 + 75
    a = CameraAnalyzer(cfg, cfg.cameras[0])
    assert a.restore_incidents(journal.open_incidents("cam1"), restart) == []
    again = _run(a, journal, restart, restart + 40, car=True)
    assert OPENED not in [e.event for e in again]
    # The new process tracks the car anew: it is ripe again after dwell_seconds, the update comes on time.
    assert [(e.event, e.ts) for e in again] == [(UPDATED, restart + 30)]
    assert {e.id for e in again} == {opened.id} and all(e.started_at == T0 for e in again)
    # The car leaves: the same incident clears after clear_seconds, and the journal forgets it.
    gone = _run(a, journal, restart + 41, restart + 70, car=False)
    assert [(e.event, e.id) for e in gone] == [(CLEARED, opened.id)]
    assert gone[0].ts == restart + 40 + 20  # last seen at +40, clear_seconds 20
    assert journal.open_incidents() == []
    # The next car opens a new incident whose id does not reuse the restored one's number.
    a.rules[0].lifecycle.cooldown_until = 0.0
    later = _run(a, journal, restart + 100, restart + 115, car=True)
    assert [e.event for e in later] == [OPENED] and later[0].id.endswith("-2") and later[0].id != opened.id


def test_restored_incident_clears_when_the_hazard_is_gone_after_restart(tmp_path: Path) -> None:
    cfg = _site()
    journal = IncidentJournal(tmp_path / "incidents.db")
    (opened,) = _run(CameraAnalyzer(cfg, cfg.cameras[0]), journal, T0, T0 + 12, car=True)
    a = CameraAnalyzer(cfg, cfg.cameras[0])
    a.restore_incidents(journal.open_incidents("cam1"), T0 + 300)
    events = _run(a, journal, T0 + 300, T0 + 340, car=False)
    # Given dwell_seconds (10) to be seen again, then clear_seconds (20).
    assert [(e.event, e.id, e.ts) for e in events] == [(CLEARED, opened.id, T0 + 330)]


def test_incident_of_a_removed_zone_is_returned_for_clearing(tmp_path: Path) -> None:
    cfg = _site()
    gone = JournalEntry("cam1-old-parking-1796000000-1", "cam1", "old", Hazard.PARKING, T0, T0 + 10, T0 + 10, 0.8)
    a = CameraAnalyzer(cfg, cfg.cameras[0])
    assert a.restore_incidents([gone], T0 + 50) == [gone]
    cleared = orphan_cleared(gone, T0 + 50, "rule_removed")
    assert (cleared.event, cleared.id, cleared.details["clear_reason"]) == (CLEARED, gone.incident_id,
                                                                             "rule_removed")
    assert cleared.details["duration_seconds"] == 50.0


def test_camera_down_clears_open_incidents(tmp_path: Path) -> None:
    cfg = _site()
    journal = IncidentJournal(tmp_path / "incidents.db")
    a = CameraAnalyzer(cfg, cfg.cameras[0])
    (opened,) = _run(a, journal, T0, T0 + 12, car=True)
    (cleared,) = a.clear_open(T0 + 700, "camera_down")
    assert (cleared.event, cleared.id, cleared.details["clear_reason"]) == (CLEARED, opened.id, "camera_down")
    assert cleared.ts == T0 + 700 and a.clear_open(T0 + 701, "camera_down") == []
