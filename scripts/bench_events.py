"""Measure ``GET /events``: delivery latency of ticket events to many open SSE streams, and the cost of
one poll query on a store with many events.

Starts the ticket API (SQLite in a temp dir, no MQTT) under uvicorn, opens ``--streams`` SSE streams as a
viewer, feeds ``--alerts`` alerts through the consumer's service path (``apply_alert``) and prints, per
stream, the time from ``apply_alert`` returning to the event line arriving. Then it measures
``events_after`` (the poll query) after ``--backlog`` extra events. Numbers go into docs/benchmarks.md.

    .venv/bin/python scripts/bench_events.py --streams 20 --alerts 20 --backlog 20000
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.tickets.api import create_app  # noqa: E402
from pipeline.tickets.models import TicketEvent  # noqa: E402
from pipeline.tickets.payload import parse_alert  # noqa: E402
from pipeline.tickets.service import apply_alert  # noqa: E402
from pipeline.tickets.users import Role, TokenKind, add_user  # noqa: E402
from pipeline.web.events import events_after  # noqa: E402
from tests.tickets.conftest import make_alert, make_site  # noqa: E402
from tests.web.wall_stack import free_port  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--alerts", type=int, default=20)
    ap.add_argument("--backlog", type=int, default=20_000)
    args = ap.parse_args()
    os.environ.setdefault("GRIDWATCH_ADMIN_PASSWORD", secrets.token_urlsafe(16))  # no one-time password log
    tmp = Path(tempfile.mkdtemp(prefix="bench-events-"))
    app = create_app(make_site(tmp), start_consumer=False)
    st = app.state.tickets
    with st.auth.sessions() as session, session.begin():
        user = add_user(session, "bench", Role.VIEWER.value, ["T1"], None, actor="bench")
        token, _ = st.auth.create_token(session, user, TokenKind.API, "bench", None, "bench", None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    posted: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    ready = threading.Barrier(args.streams + 1)

    def reader() -> None:
        got = 0
        with httpx.stream("GET", f"http://127.0.0.1:{port}/events", headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    ready.wait()
                if line.startswith("data: "):
                    arrived = time.monotonic()
                    incident = json.loads(line[6:]).get("ticket", {}).get("incident_id")
                    with lock:
                        if incident in posted:
                            latencies.append(arrived - posted[incident])
                    got += 1
                    if got >= args.alerts:
                        return

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(args.streams)]
    for t in threads:
        t.start()
    ready.wait()
    for i in range(args.alerts):
        alert = make_alert(camera=("cam1", "cam2", "cam3")[i % 3], hazard="clutter", ts=time.time())
        topic = f"gwtest/alerts/{'/'.join(alert.grid.path)}/{alert.camera.id}/clutter"
        apply_alert(st.sessions, parse_alert(topic, alert.model_dump_json().encode(), "gwtest"))
        with lock:
            posted[alert.incident_id] = time.monotonic()
        time.sleep(0.25)
    for t in threads:
        t.join(60)
    q = statistics.quantiles(latencies, n=20)
    print(f"{args.streams} streams x {args.alerts} alerts: {len(latencies)} deliveries, latency "
          f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms (poll every 1 s)")

    # A backlog of events on a ticket outside the viewer's scope (T10): what a poll scans past.
    alert = make_alert(camera="cam9", hazard="poster", ts=time.time())
    topic = f"gwtest/alerts/{'/'.join(alert.grid.path)}/cam9/poster"
    far = apply_alert(st.sessions, parse_alert(topic, alert.model_dump_json().encode(), "gwtest")).ticket_id
    now = datetime.now(UTC)
    with st.sessions() as session, session.begin():
        session.add_all(TicketEvent(ticket_id=far, kind="alert_updated", message_key=f"bench-{i}", ts=now)
                        for i in range(args.backlog))
    with st.sessions() as session:
        newest = int(session.scalar(select(func.max(TicketEvent.id))) or 0)
    principal = st.auth.principal_of_token(token)
    assert principal is not None
    t0 = time.perf_counter()
    n = 200
    for _ in range(n):
        events_after(st.sessions, principal, newest)
    idle = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    _, batch = events_after(st.sessions, principal, newest - args.backlog)  # 200 out-of-scope rows
    full = time.perf_counter() - t0
    print(f"poll with nothing new ({newest} events in the store): {idle * 1000:.2f} ms; "
          f"a batch of 200 out-of-scope rows: {full * 1000:.1f} ms ({len(batch)} in scope)")
    server.should_exit = True


if __name__ == "__main__":
    main()
