"""The soak's verdict (scripts/soak.py): alerts vs tickets, duplicates, dead letters, memory, lag; its table.

Lost: an alert the broker delivered (seen by the tap) or the burst sent that is in no ticket's events, and
alerts a worker queued that never reached the broker. Duplicated: one incident's events on two tickets, and a
ticket opened while an earlier one of the same camera, zone and hazard was still open and not cleared.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from _soak_observe import AlertKey, TapRecord, alert_key
from _soak_procs import Managed
from rich.console import Console
from rich.table import Table


def _ts(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def duplicate_opens(tickets: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tickets opened while an earlier ticket of the same camera, zone and hazard was open and not cleared."""
    groups: dict[tuple[str, str | None, str], list[dict[str, Any]]] = defaultdict(list)
    for t in tickets:
        groups[(t["camera_id"], t["zone_id"], t["hazard"])].append(t)
    found = []
    for (camera, zone, hazard), group in groups.items():
        group.sort(key=lambda t: (_ts(t["opened_at"]) or 0.0, t["id"]))
        for i, later in enumerate(group):
            opened = _ts(later["opened_at"]) or 0.0
            for earlier in group[:i]:
                cleared = _ts(earlier["cleared_at"])
                if cleared is None or cleared > opened:
                    found.append({"camera": camera, "zone": zone, "hazard": hazard, "ticket": later["id"],
                                  "while_open": earlier["id"]})
                    break
    return found


def service_keys(details: Iterable[dict[str, Any]]) -> dict[AlertKey, set[int]]:
    """Alert key -> tickets whose events carry that alert (own and attached incidents)."""
    out: dict[AlertKey, set[int]] = defaultdict(set)
    for d in details:
        for e in d.get("events", []):
            key = alert_key(e["payload"]) if e.get("payload") else None
            if key is not None:
                out[key].add(int(d["id"]))
    return out


def verdict(*, tap: list[TapRecord], cameras: set[str], tickets: list[dict[str, Any]],
            details: list[dict[str, Any]], burst_ids: set[str], produced: int, pending: int) -> dict[str, Any]:
    """Lost and duplicated alerts of the run (see the module docstring)."""
    seen = {r.key for r in tap if r.camera_id in cameras}
    keys = service_keys(details)
    lost_worker = sorted(seen - keys.keys())
    ticket_incidents = Counter(t["incident_id"] for t in tickets)
    lost_burst = sorted(burst_ids - ticket_incidents.keys())
    never_on_broker = max(0, produced - pending - len(seen))
    incident_tickets: dict[str, set[int]] = defaultdict(set)
    for (incident, _, _), ids in keys.items():
        incident_tickets[incident] |= ids
    split = {i: sorted(ids) for i, ids in incident_tickets.items() if len(ids) > 1}
    split.update({i: [n] for i, n in ticket_incidents.items() if n > 1})
    worker_tickets = [t for t in tickets if t["camera_id"] in cameras]
    dup_opens = duplicate_opens(worker_tickets)
    return {
        "worker_alerts_queued": produced, "worker_alerts_pending": pending,
        "worker_alerts_on_broker": len(seen), "worker_deliveries_on_broker": sum(r.camera_id in cameras for r in tap),
        "worker_alerts_applied": len(seen & keys.keys()),
        "burst_sent": len(burst_ids), "burst_tickets": len(burst_ids & ticket_incidents.keys()),
        "tickets": len(tickets), "worker_tickets": len(worker_tickets),
        "attached_incidents": sum(1 for d in details for e in d.get("events", []) if e["kind"] == "incident_attached"),
        "lost": len(lost_worker) + len(lost_burst) + never_on_broker + pending,
        "lost_detail": {"worker_on_broker_not_applied": [list(k) for k in lost_worker[:20]],
                        "worker_never_on_broker": never_on_broker, "worker_left_in_outbox": pending,
                        "burst_without_ticket": len(lost_burst), "burst_examples": lost_burst[:10]},
        "duplicated": len(split) + len(dup_opens),
        "duplicate_detail": {"incident_on_several_tickets": dict(list(split.items())[:20]),
                             "opened_while_open": dup_opens[:20], "opened_while_open_count": len(dup_opens)},
    }


def dead_letter_reasons(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Dead letters counted by the start of their reason (up to the first ``:``)."""
    return dict(Counter(str(r["reason"]).split(":", 1)[0][:80] for r in rows).most_common())


def memory_growth(members: Iterable[Managed], warmup_s: float) -> dict[str, dict[str, Any]]:
    """Per process: RSS of the longest-lived incarnation, first sample after ``warmup_s`` vs the last."""
    out: dict[str, dict[str, Any]] = {}
    for m in members:
        by_life: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for s in m.samples:
            if s.age_s >= warmup_s:
                by_life[s.incarnation].append((s.age_s, s.kb))
        peak = max((s.kb for s in m.samples), default=0)
        life, best = max(by_life.items(), key=lambda kv: kv[1][-1][0] - kv[1][0][0], default=(0, None))
        if not best or len(best) < 2:
            out[m.name] = {"incarnations": m.incarnation, "first_mb": None, "last_mb": None, "growth_pct": None,
                           "span_s": 0.0, "peak_mb": round(peak / 1024, 1)}
            continue
        (t0, first), (t1, last) = best[0], best[-1]
        step = max(1, len(best) // 8)  # a few points in between: a plateau after a burst is no leak
        trend = [[round(age), round(kb / 1024, 1)] for age, kb in best[::step] + [best[-1]]]
        out[m.name] = {"incarnations": m.incarnation, "measured": life, "first_mb": round(first / 1024, 1),
                       "last_mb": round(last / 1024, 1), "growth_pct": round(100.0 * (last - first) / first, 2),
                       "span_s": round(t1 - t0, 1), "peak_mb": round(peak / 1024, 1),
                       "trend_age_s_mb": trend}
    return out


def render(report: dict[str, Any], console: Console) -> None:
    """The report as rich tables."""
    v = report["alerts"]
    summary = Table(title=f"soak {report['run']['minutes']:g} min, {report['run']['cameras']} cameras, "
                    f"seed {report['run']['seed']}: {'OK' if report['ok'] else 'FAILED'}")
    summary.add_column("what")
    summary.add_column("value", justify="right")
    rows = [("worker alerts queued (outboxes)", v["worker_alerts_queued"]),
            ("  reached the broker (tap, distinct)", v["worker_alerts_on_broker"]),
            ("  applied by the ticket service", v["worker_alerts_applied"]),
            ("burst alerts sent / tickets", f"{v['burst_sent']} / {v['burst_tickets']}"),
            ("tickets (worker cameras / all)", f"{v['worker_tickets']} / {v['tickets']}"),
            ("incidents attached by the guard", v["attached_incidents"]),
            ("LOST", v["lost"]), ("DUPLICATED", v["duplicated"]),
            ("dead letters", sum(report["dead_letters"].values())),
            ("sequence gaps (store: missing / late)", "; ".join(
                f"{w}: {s['missing_total']} / {s['late_total']}" for w, s in report["sequences"].items()) or "-"),
            ("max consumer lag", f"{report['lag']['max_messages']} msgs, {report['lag']['max_seconds']:.1f} s"),
            ("drained", f"{report['drain']['drained']} in {report['drain']['seconds']:.0f} s"),
            ("chaos", ", ".join(f"{k} x{n}" for k, n in Counter(e["action"] for e in report["chaos"]).items()))]
    for what, value in rows:
        summary.add_row(what, str(value))
    console.print(summary)
    mem = Table(title=f"memory (RSS, longest incarnation, after {report['run']['warmup_s']:.0f} s warm-up)")
    for col in ("process", "starts", "first MB", "last MB", "growth %", "over s", "peak MB"):
        mem.add_column(col, justify="right" if col != "process" else "left")
    for name, m in report["memory"].items():
        mem.add_row(name, str(m["incarnations"]), str(m["first_mb"]), str(m["last_mb"]), str(m["growth_pct"]),
                    str(m["span_s"]), str(m["peak_mb"]))
    console.print(mem)
    if report["dead_letters"]:
        dl = Table(title="dead letters by reason")
        dl.add_column("reason")
        dl.add_column("n", justify="right")
        for reason, n in report["dead_letters"].items():
            dl.add_row(reason, str(n))
        console.print(dl)
    if v["lost"] or v["duplicated"]:
        console.print({"lost": v["lost_detail"], "duplicated": v["duplicate_detail"]})
