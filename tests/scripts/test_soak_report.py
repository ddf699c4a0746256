"""The soak's verdict (scripts/_soak_report.py) on hand-made tickets: it must see a lost alert, an alert that
never reached the broker, a burst alert without a ticket, an incident split over two tickets and a ticket
opened while another of the same camera, zone and hazard was open."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from _soak_observe import TapRecord, alert_key  # noqa: E402
from _soak_report import duplicate_opens, verdict  # noqa: E402

T0 = 1_796_000_000.0  # a real Unix time (2026)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _alert(incident: str, event: str, ts: float) -> dict[str, Any]:
    return {"incident_id": incident, "event": event, "ts": _iso(ts), "camera": {"id": "cam0"}}


def _ticket(tid: int, incident: str, opened: float, cleared: float | None, camera: str = "cam0",
            zone: str | None = "np1") -> dict[str, Any]:
    return {"id": tid, "incident_id": incident, "camera_id": camera, "zone_id": zone, "hazard": "parking",
            "opened_at": _iso(opened), "cleared_at": None if cleared is None else _iso(cleared)}


def _detail(ticket: dict[str, Any], *alerts: dict[str, Any], kind: str = "alert_opened") -> dict[str, Any]:
    return {**ticket, "events": [{"kind": kind, "payload": a} for a in alerts]}


def _tap(*alerts: dict[str, Any]) -> list[TapRecord]:
    out = []
    for a in alerts:
        key = alert_key(a)
        assert key is not None
        out.append(TapRecord(key, a["camera"]["id"], 0.0))
    return out


def test_clean_run_is_clean() -> None:
    opened, cleared = _alert("i1", "opened", T0), _alert("i1", "cleared", T0 + 30)
    t1 = _ticket(1, "i1", T0, T0 + 30)
    burst = _ticket(2, "b1", T0, None, camera="soak-burst", zone="burst-1")
    v = verdict(tap=_tap(opened, cleared, opened), cameras={"cam0"}, tickets=[t1, burst],
                details=[_detail(t1, opened, cleared)], burst_ids={"b1"}, produced=2, pending=0)
    assert (v["lost"], v["duplicated"]) == (0, 0)
    assert (v["worker_alerts_on_broker"], v["worker_deliveries_on_broker"], v["burst_tickets"]) == (2, 3, 1)


def test_losses_are_counted_where_they_happened() -> None:
    opened, cleared = _alert("i1", "opened", T0), _alert("i1", "cleared", T0 + 30)
    t1 = _ticket(1, "i1", T0, None)
    v = verdict(tap=_tap(opened, cleared), cameras={"cam0"}, tickets=[t1], details=[_detail(t1, opened)],
                burst_ids={"b1", "b2"}, produced=4, pending=1)
    d = v["lost_detail"]
    assert d["worker_on_broker_not_applied"] == [["i1", "cleared", round(T0 + 30, 6)]]
    assert (d["worker_never_on_broker"], d["worker_left_in_outbox"], d["burst_without_ticket"]) == (1, 1, 2)
    assert v["lost"] == 1 + 1 + 1 + 2


def test_an_incident_on_two_tickets_is_a_duplicate() -> None:
    opened, updated = _alert("i1", "opened", T0), _alert("i1", "updated", T0 + 10)
    t1, t2 = _ticket(1, "i1", T0, T0 + 20), _ticket(2, "i2", T0 + 50, None)
    v = verdict(tap=_tap(opened, updated), cameras={"cam0"}, tickets=[t1, t2],
                details=[_detail(t1, opened), _detail(t2, updated, kind="incident_attached")], burst_ids=set(),
                produced=2, pending=0)
    assert v["duplicate_detail"]["incident_on_several_tickets"] == {"i1": [1, 2]}
    assert v["duplicated"] == 1


def test_opened_while_open_is_a_duplicate_open() -> None:
    tickets = [_ticket(1, "i1", T0, None), _ticket(2, "i2", T0 + 60, T0 + 90),  # 2 opened while 1 open
               _ticket(3, "i3", T0 + 200, None, zone="other"),  # another zone: fine
               _ticket(4, "i4", T0 + 300, None, camera="cam1")]
    assert duplicate_opens(tickets) == [{"camera": "cam0", "zone": "np1", "hazard": "parking", "ticket": 2,
                                         "while_open": 1}]
    cleared_before = [_ticket(1, "i1", T0, T0 + 30), _ticket(2, "i2", T0 + 60, None)]
    assert duplicate_opens(cleared_before) == []
