"""The report of scripts/shard_proof.py: incidents open across a cut, and the text table.

Kept apart from the run itself so the two stay readable; both are plain functions of the report's data.
"""

from __future__ import annotations

from typing import Any


def open_across(keys: list[tuple[str, str, float]], camera_of: dict[str, str], cameras: set[str], cut: float,
                resumed: float) -> dict[str, int]:
    """Incidents of ``cameras`` open at ``cut`` (opened before, not cleared before); those of them that got an
    event after ``resumed`` under the same incident id (continued by the restarted worker); and those that were
    never cleared at all (for cameras a resize moved: stranded, nobody will clear them)."""
    events: dict[str, list[tuple[float, str]]] = {}
    for incident, event, ts in keys:
        if camera_of.get(incident) in cameras:
            events.setdefault(incident, []).append((ts, event))
    open_at = {i for i, evs in events.items()
               if any(e == "opened" and ts < cut for ts, e in evs) and not any(e == "cleared" and ts < cut
                                                                                 for ts, e in evs)}
    continued = {i for i in open_at if any(ts >= resumed for ts, _ in events[i])}
    never_cleared = {i for i in open_at if not any(e == "cleared" for _, e in events[i])}
    return {"incidents_open_at_cut": len(open_at), "continued_same_id": len(continued),
            "never_cleared": len(never_cleared)}


def render(r: dict[str, Any]) -> str:
    """The report as a short text table."""
    al, k, rs, own = r["alerts"], r["kill"], r["resize"], r["ownership"]
    rows = [
        ("result", "OK" if r["ok"] else "FAILED"),
        ("cameras / shards / database", f"{r['run']['cameras']} / {r['run']['shards']} / {r['run']['database']}"),
        ("wall time; load average start / end", f"{r['run']['wall_s']} s; {r['run'].get('load_avg_start')} / "
                                                 f"{r['run']['load_avg_end']}"),
        ("alerts queued by workers (outboxes)", al["worker_alerts_queued"]),
        ("  on the broker (distinct / deliveries)", f"{al['worker_alerts_on_broker']} / "
                                                   f"{al['worker_deliveries_on_broker']}"),
        ("  applied by the ticket service", al["worker_alerts_applied"]),
        ("incidents / tickets / attached", f"{r['incidents']} / {al['worker_tickets']} / {al['attached_incidents']}"),
        ("LOST / DUPLICATED", f"{al['lost']} / {al['duplicated']}"),
        ("sequence gaps (missing - late, all shards)", r["sequence_gaps"]),
        (f"kill -9 shard {k['shard']}: cameras picked up", f"{k['picked_up']} of {k['cameras']}"),
        ("  incidents open at the kill / continued (same id)", f"{k['incidents_open_at_cut']} / "
                                                              f"{k['continued_same_id']}"),
        ("  after restart s (min/median/max)", "/".join(str(v) for v in k["after_start_s"].values())),
        ("  unwatched s (kill -> analysed again)", "/".join(str(v) for v in k["unwatched_s"].values())),
        ("resize: moved (hashed / observed, share)", f"{rs['moved_expected']} / {rs['moved_observed']}, "
                                                     f"{rs['moved_share']:.1%}, to {', '.join(rs['moved_to'])}"),
        ("  moved exactly as hashed", rs["moved_exactly_as_hashed"]),
        ("  moved cameras' incidents open at the stop / never cleared", f"{rs['incidents_open_at_cut']} / "
                                                                       f"{rs['never_cleared']}"),
        ("  moved picked up after start s (max)", rs["after_start_s"]["max"]),
        ("  moved unwatched s (stop -> analysed, max)", rs["unwatched_s"]["max"]),
        ("double ownership (health / processes)", f"{len(own['observed_overlaps'])} / "
                                                  f"{len(own['process_overlaps'])}"),
        ("health from a non-owner (before / after)", f"{len(own['wrong_owner_before_resize'])} / "
                                                     f"{len(own['wrong_owner_after_resize'])}"),
        ("drained", f"{r['drain']['drained']} in {r['drain']['seconds']} s"),
    ]
    width = max(len(str(w)) for w, _ in rows)
    return "\n".join(f"{w:<{width}}  {v}" for w, v in rows)
