"""Migration 0004_casework upgrades a store of the old life cycle in place (and back), on SQLite and
PostgreSQL: states renamed, stage times filled from the transition history, events kept."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import select, text

from pipeline.tickets.db import alembic_config, create_db_engine, migrate, session_factory
from pipeline.tickets.models import Ticket, TicketEvent

OLD = ["open", "assigned", "in_progress", "resolved", "verified", "closed", "false_alarm"]
NEW = ["received", "dispatched", "in_progress", "resolved", "checked", "closed", "false_alarm"]
T = datetime(2027, 1, 15, 8, 0, 0)
# (to_status, minutes after opening) of each old ticket's history, by its final state.
HISTORY = {
    "open": [],
    "assigned": [("assigned", 5)],
    "in_progress": [("assigned", 5), ("in_progress", 9)],
    "resolved": [("assigned", 5), ("in_progress", 9), ("resolved", 30)],
    "verified": [("assigned", 5), ("in_progress", 9), ("resolved", 30), ("verified", 40)],
    "closed": [("assigned", 5), ("in_progress", 9), ("resolved", 30), ("verified", 40), ("closed", 45)],
    "false_alarm": [("false_alarm", 3)],
}


def _old_store(db_url: str) -> None:
    engine = create_db_engine(db_url)
    migrate(engine, "0003_users")
    with engine.begin() as conn:
        for i, status in enumerate(OLD, start=1):
            conn.execute(text(
                "INSERT INTO tickets (id, incident_id, hazard, severity, status, camera_id, grid_l1, grid_l2, "
                "grid_l3, grid_l4, grid_path, title, opened_at, updated_at, last_event, confidence, boxes, details) "
                "VALUES (:id, :inc, 'parking', 3, :st, 'cam1', 'T1', 'D1', 'C1', 'G1', 'T1/D1/C1/G1', 't', :t, :t, "
                "'opened', 0.5, '[]', '{}')"), {"id": i, "inc": f"inc-{i}", "st": status, "t": T})
            before = "open"
            for n, (to, minutes) in enumerate(HISTORY[status]):
                conn.execute(text(
                    "INSERT INTO ticket_events (ticket_id, kind, message_key, from_status, to_status, ts) VALUES "
                    "(:id, 'transition', :k, :f, :to, :ts)"),
                    {"id": i, "k": f"k{n}", "f": before, "to": to,
                     "ts": T.replace(minute=minutes)})
                before = to
    engine.dispose()


def test_old_states_are_renamed_and_stage_times_filled(db_url: str) -> None:
    _old_store(db_url)
    engine = create_db_engine(db_url)
    migrate(engine)
    with session_factory(engine)() as session:  # through the models: the stored times as aware UTC
        rows = [(t.status, t.verified_at, t.dispatched_at, t.resolved_at, t.checked_at, t.closed_at,
                 t.escalation_level, t.overdue) for t in session.scalars(select(Ticket).order_by(Ticket.id))]
        events = [(e.from_status, e.to_status) for e in session.scalars(select(TicketEvent))]
    assert [r[0] for r in rows] == NEW
    at = {m: T.replace(minute=m, tzinfo=UTC) for m in range(60)}
    closed = rows[5]
    assert tuple(closed[1:6]) == (at[5], at[5], at[30], at[40], at[45])
    assert tuple(rows[6][1:6]) == (at[3], None, None, None, at[3])  # a false alarm: judged and finished
    assert tuple(rows[0][1:6]) == (None,) * 5 and all(r[6] == 0 and not r[7] for r in rows)
    assert set(events) <= {(a, b) for a in NEW for b in NEW}
    assert ("resolved", "checked") in events and ("received", "dispatched") in events
    # And back: the old names again, nothing lost.
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003_users")
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT status FROM tickets ORDER BY id"))] == OLD
        assert conn.execute(text("SELECT count(*) FROM ticket_events")).scalar_one() == 16
    engine.dispose()
