"""Open incidents that outlive the worker process (SQLite), so a restart neither reopens nor orphans a case.

The worker records every incident event it emits: ``opened``/``updated`` upsert the incident, ``cleared``
deletes it. At start each camera's :class:`~pipeline.analyze.analyzer.CameraAnalyzer` takes back the
incidents its previous run left open (:meth:`CameraAnalyzer.restore_incidents`): a car still parked goes
on under the same incident id (``updated``), one that left meanwhile is ``cleared`` after the rule's
``clear_seconds``. An incident whose zone or hazard is no longer configured is cleared at start.

Example:
    >>> import dataclasses, tempfile, os
    >>> from pipeline.analyze.incident import Hazard, Incident, IncidentEvent
    >>> j = IncidentJournal(os.path.join(tempfile.mkdtemp(), "incidents.db"))
    >>> inc = Incident("c1-z1-parking-100-1", IncidentEvent.OPENED, Hazard.PARKING, "c1", "z1", 100.0, 101.0, 0.9)
    >>> j.record(inc); [e.incident_id for e in j.open_incidents("c1")]
    ['c1-z1-parking-100-1']
    >>> j.record(dataclasses.replace(inc, event=IncidentEvent.CLEARED)); j.open_incidents("c1")
    []
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from pipeline.analyze.incident import Hazard, Incident, IncidentEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_incidents (
    incident_id TEXT PRIMARY KEY,
    camera_id TEXT NOT NULL,
    zone_id TEXT,
    hazard TEXT NOT NULL,
    started_at REAL NOT NULL,
    opened_at REAL NOT NULL,
    last_event_ts REAL NOT NULL,
    confidence REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One incident a worker left open (times in float64 Unix seconds)."""

    incident_id: str
    camera_id: str
    zone_id: str | None
    hazard: Hazard
    started_at: float
    opened_at: float
    last_event_ts: float
    confidence: float


class IncidentJournal:
    """The open incidents of the cameras a worker runs, kept in a SQLite file.

    Args:
        path: SQLite file (created with its folder).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def record(self, incident: Incident) -> None:
        """Remember an emitted event: open incidents are upserted, cleared ones forgotten."""
        with self._lock:
            if incident.event is IncidentEvent.CLEARED:
                self._db.execute("DELETE FROM open_incidents WHERE incident_id = ?", (incident.id,))
                return
            opened_at = incident.ts if incident.event is IncidentEvent.OPENED else None
            self._db.execute(
                "INSERT INTO open_incidents VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(incident_id) DO UPDATE "
                "SET last_event_ts = excluded.last_event_ts, confidence = excluded.confidence",
                (incident.id, incident.camera_id, incident.zone_id, incident.hazard.value, incident.started_at,
                 opened_at if opened_at is not None else incident.started_at, incident.ts, incident.confidence))

    def open_incidents(self, camera_id: str | None = None) -> list[JournalEntry]:
        """The incidents left open (of one camera, or all), oldest first."""
        sql = "SELECT * FROM open_incidents"
        args: tuple[str, ...] = ()
        if camera_id is not None:
            sql, args = sql + " WHERE camera_id = ?", (camera_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY opened_at", args).fetchall()
        return [JournalEntry(r[0], r[1], r[2], Hazard(r[3]), float(r[4]), float(r[5]), float(r[6]), float(r[7]))
                for r in rows if r[3] in Hazard._value2member_map_]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def orphan_cleared(entry: JournalEntry, ts: float, reason: str) -> Incident:
    """The ``cleared`` event of a journalled incident that no configured rule can take back."""
    return Incident(id=entry.incident_id, event=IncidentEvent.CLEARED, hazard=entry.hazard,
                    camera_id=entry.camera_id, zone_id=entry.zone_id, started_at=entry.started_at, ts=ts,
                    confidence=entry.confidence,
                    details={"clear_reason": reason, "duration_seconds": round(ts - entry.started_at, 3)})


__all__ = ["IncidentJournal", "JournalEntry", "orphan_cleared"]
