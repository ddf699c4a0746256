"""A resize hands a camera to another shard: the old shard's journal must not keep its incident open forever.

Found by scripts/shard_proof.py (60 cameras, 3 -> 4): two moved cameras had a parking incident open when
their shard stopped; the new owner never saw the car again, so nobody ever sent the ``cleared`` and the
ticket stayed active (and would have swallowed the camera's next, unrelated incident through the
duplicate-open guard). Now the shard clears, at start, every journalled incident of a camera it no longer
owns (``details.clear_reason: camera_moved``) and keeps restoring its own.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from pipeline.analyze.incident import Hazard, Incident, IncidentEvent
from pipeline.analyze.journal import IncidentJournal
from pipeline.sharding import ShardSpec, cameras_for, shard_of, shard_site, shard_worker_id
from pipeline.worker import Worker
from tests.test_sharding import _site

IDS = [f"cam-{i:03d}" for i in range(40)]


def _opened(camera_id: str, ts: float) -> Incident:
    return Incident(id=f"{camera_id}-z-parking-{int(ts)}-1", event=IncidentEvent.OPENED, hazard=Hazard.PARKING,
                    camera_id=camera_id, zone_id="z", started_at=ts - 5, ts=ts, confidence=0.9)


def test_a_shard_clears_the_incidents_of_cameras_a_resize_moved_away(tmp_path: Path) -> None:
    site = _site(tmp_path, ids=IDS)
    moved = next(c for c in IDS if shard_of(c, 3) == 1 and shard_of(c, 4) == 3)
    kept = next(c for c in IDS if shard_of(c, 3) == 1 and shard_of(c, 4) == 1)
    old, new = ShardSpec(1, 3), ShardSpec(1, 4)
    journal_path = Path(shard_site(site, old).worker.outbox_path + ".incidents")
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    journal = IncidentJournal(journal_path)
    for cam in (moved, kept):  # shard 1 of 3 had both open when it was stopped for the resize
        journal.record(_opened(cam, now - 30))
    journal.close()
    worker = Worker(shard_site(site, new), worker_id=shard_worker_id(new, False, ""),
                    camera_ids=cameras_for(site, new.index, new.count), shard=new)
    worker.start()  # no broker (port 1): the alert waits in the outbox, which is what is checked
    try:
        outbox = sqlite3.connect(worker.publisher.outbox.path)
        payloads = [json.loads(p) for (p,) in outbox.execute("SELECT payload FROM outbox ORDER BY id")]
        outbox.close()
        assert [(a["camera"]["id"], a["event"], a["details"]["clear_reason"]) for a in payloads] == [
            (moved, "cleared", "camera_moved")]
        assert payloads[0]["incident_id"] == _opened(moved, now - 30).id and payloads[0]["worker_id"] == "shard-1"
        assert [e.camera_id for e in worker.journal.open_incidents()] == [kept]  # its own stays, restored
        assert kept in worker.slots and moved not in worker.slots
    finally:
        worker.stop()


def test_an_unsharded_worker_clears_nothing(tmp_path: Path) -> None:
    site = _site(tmp_path, ids=IDS[:3])
    journal_path = Path(site.worker.outbox_path + ".incidents")
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    journal = IncidentJournal(journal_path)
    journal.record(_opened("cam-elsewhere", time.time() - 30))  # not in this config: left alone
    journal.close()
    worker = Worker(site, worker_id="w")
    try:
        assert worker._moved == []
        assert [e.camera_id for e in worker.journal.open_incidents()] == ["cam-elsewhere"]
    finally:
        worker.journal.close()
        worker.publisher.outbox.close()
