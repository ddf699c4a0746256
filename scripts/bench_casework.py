#!/usr/bin/env python3
"""Cost of the case loop and of ``GET /stats`` on a store of N tickets (SQLite file, and PostgreSQL when
one answers at ``--pg``), printed as a table for docs/benchmarks.md.

    python scripts/bench_casework.py --tickets 2000

Steps timed: opening N tickets through ``apply_alert`` with the case rules (deadline, notification), one
case-loop pass that finds all of them overdue 2 h late (overdue + 3 escalation steps each, no broker), a
second pass with nothing to do, and the ``/stats`` figures grouped by hazard and by community.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import SiteConfig  # noqa: E402
from pipeline.contract.examples import example_messages  # noqa: E402
from pipeline.tickets.db import init_db, session_factory  # noqa: E402
from pipeline.tickets.deadlines import CaseContext  # noqa: E402
from pipeline.tickets.escalation import run_pass  # noqa: E402
from pipeline.tickets.payload import AlertIn  # noqa: E402
from pipeline.tickets.service import apply_alert  # noqa: E402
from pipeline.tickets.stats import compute  # noqa: E402

T0 = 1_800_000_000.0
GRID = [{"code": "T1", "name": "T", "children": [{"code": f"D{d}", "name": "D", "children": [
    {"code": f"C{d}{c}", "name": "C", "children": [{"code": f"G{d}{c}{g}", "name": "G"} for g in range(4)]}
    for c in range(3)]} for d in range(2)]}]
CELLS = [["T1", f"D{d}", f"C{d}{c}", f"G{d}{c}{g}"] for d in range(2) for c in range(3) for g in range(4)]
HAZARDS = ["parking", "clutter", "poster", "fire"]


def _alert(i: int) -> AlertIn:
    data = example_messages()["alert"].model_dump(mode="json")
    path = CELLS[i % len(CELLS)]
    data.update({"incident_id": f"cam{i % 50}-z-{uuid.uuid4().hex[:12]}", "hazard": HAZARDS[i % 4],
                 "camera": {"id": f"cam{i % 50}", "name": None}, "zone": {"id": f"z{i}", "kind": "fire_lane"},
                 "grid": {"path": path, "names": ["a", "b", "c", "d"], "patrol": None}, "seq": None,
                 "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + i)),
                 "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + i - 60))})
    return AlertIn.model_validate(data)


def bench(url: str, n: int) -> dict[str, float]:
    site = SiteConfig.model_validate({"grid": GRID, "cameras": []})
    ctx = CaseContext(site.casework, "bench")
    engine = init_db(url)
    sessions = session_factory(engine)
    out: dict[str, float] = {}
    t = time.perf_counter()
    for i in range(n):
        apply_alert(sessions, _alert(i), ctx=ctx)
    out["open_ms_per_ticket"] = (time.perf_counter() - t) * 1000 / n
    late = T0 + n + 3 * 86400  # every deadline long past: overdue and all three escalation steps
    t = time.perf_counter()
    first = run_pass(sessions, ctx, None, late)
    out["pass_all_overdue_s"] = time.perf_counter() - t
    out["steps"] = first.overdue + first.escalated
    t = time.perf_counter()
    run_pass(sessions, ctx, None, late + 60)
    out["pass_idle_ms"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    with sessions() as s:
        compute(s, None, None, "hazard")
        compute(s, None, None, "grid", "community")
    out["stats_ms"] = (time.perf_counter() - t) * 1000
    engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=2000)
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                    help="admin URL of a PostgreSQL server (a throw-away database is created); '' to skip")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite"] = bench(f"sqlite:///{tmp}/bench.db", args.tickets)
    if args.pg:
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        name = f"gw_bench_{uuid.uuid4().hex[:8]}"
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:  # no server: SQLite only
            print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        else:
            try:
                results["PostgreSQL"] = bench(args.pg.rsplit("/", 1)[0] + f"/{name}", args.tickets)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print("| store | tickets | open (ms/ticket) | pass, all overdue (s) | steps | idle pass (ms) | stats (ms) |")
    print("|---|---|---|---|---|---|---|")
    for store, r in results.items():
        print(f"| {store} | {args.tickets} | {r['open_ms_per_ticket']:.1f} | {r['pass_all_overdue_s']:.2f} | "
              f"{int(r['steps'])} | {r['pass_idle_ms']:.0f} | {r['stats_ms']:.0f} |")


if __name__ == "__main__":
    main()
