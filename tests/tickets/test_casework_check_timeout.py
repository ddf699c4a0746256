"""A camera check that gets no answer times out (issue 9), on SQLite and PostgreSQL: the case loop records
``camera_check: timeout`` once (also with racing replicas), flags the resolved ticket for a dispatcher's
manual check and notifies its community; a result arriving later is stored but moves nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import SiteConfig
from pipeline.config_casework import CaseworkConfig
from pipeline.contract.casework import CameraCheckResultV1
from pipeline.tickets.api import create_app
from pipeline.tickets.camera_check import apply_check_result
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.deadlines import CaseContext
from pipeline.tickets.escalation import run_pass
from pipeline.tickets.models import CameraCheck, EventKind, Notification, Ticket, TicketAttachment, TicketEvent
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert, transition
from tests.fixtures.auth import login

from .casework_support import T0, add_patrol, context, utc
from .conftest import make_alert, make_site

TIMEOUT = 300.0
CASEWORK = {"check_window_seconds": 60, "check_timeout_seconds": TIMEOUT}
RESOLVED_AT = T0 + 600


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> SiteConfig:
    return make_site(tmp_path, db_url).model_copy(update={"casework": CaseworkConfig.model_validate(CASEWORK)})


@pytest.fixture
def sessions(site: SiteConfig) -> Iterator[sessionmaker[Session]]:
    engine = init_db(site.database_url())
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def ctx(site: SiteConfig) -> CaseContext:
    return context(site)


def resolve_camera_ticket(sessions: sessionmaker[Session], ctx: CaseContext,
                          at: float = RESOLVED_AT) -> tuple[int, str]:
    """A parking ticket of cam1 taken through dispatch and work to ``resolved`` at ``at`` (with a proof
    photo), which queues its camera check; returns (ticket id, check id)."""
    add_patrol(sessions, "li", ["T1/D1/C1/G1"])
    tid = apply_alert(sessions, AlertIn.model_validate(make_alert(ts=T0).model_dump(mode="json")), ctx=ctx).ticket_id
    with sessions() as s, s.begin():
        transition(s, tid, "dispatched", actor="boss", ctx=ctx, now=utc(at - 300))
        transition(s, tid, "in_progress", actor="li", ctx=ctx, now=utc(at - 200))
        proof = TicketEvent(ticket_id=tid, kind=EventKind.PROOF.value, message_key=f"proof:{tid}", actor="li",
                            ts=utc(at - 100))
        s.add(proof)
        s.flush()
        s.add(TicketAttachment(ticket_id=tid, kind="proof", name="proof.jpg", content_type="image/jpeg",
                               size_bytes=4, sha256="0" * 64, uploaded_by="li", uploaded_at=utc(at - 100),
                               event_id=proof.id))
        transition(s, tid, "resolved", actor="li", note="car towed", ctx=ctx, now=utc(at))
    with sessions() as s:
        [check_id] = s.scalars(select(CameraCheck.check_id).where(CameraCheck.ticket_id == tid)).all()
    return tid, check_id


def _ticket(sessions: sessionmaker[Session], tid: int) -> Ticket:
    with sessions() as s:
        t = s.get(Ticket, tid)
        assert t is not None
        return t


def _check_notes(sessions: sessionmaker[Session], tid: int) -> list[str | None]:
    with sessions() as s:
        return list(s.scalars(select(TicketEvent.note).where(
            TicketEvent.ticket_id == tid, TicketEvent.kind == EventKind.CAMERA_CHECK.value).order_by(TicketEvent.id)))


def _result(tid: int, check_id: str, outcome: str = "passed") -> CameraCheckResultV1:
    return CameraCheckResultV1(schema_version=1, check_id=check_id, ticket_id=tid, camera_id="cam1",
                               outcome=outcome, checked_at=datetime.now(UTC),
                               snapshot_url="http://api/evidence/x/check.jpg", worker_id="w1")


def test_an_unanswered_check_times_out_once_and_goes_to_a_dispatcher(sessions: sessionmaker[Session],
                                                                     ctx: CaseContext) -> None:
    tid, check_id = resolve_camera_ticket(sessions, ctx)
    assert run_pass(sessions, ctx, None, RESOLVED_AT + TIMEOUT - 1).checks_timed_out == 0
    assert _ticket(sessions, tid).manual_check is False
    # The loop comes by late (the service was down): the timeout is recorded at the time it became due.
    assert run_pass(sessions, ctx, None, RESOLVED_AT + TIMEOUT + 50).checks_timed_out == 1
    assert run_pass(sessions, ctx, None, RESOLVED_AT + TIMEOUT + 100).checks_timed_out == 0
    t = _ticket(sessions, tid)
    assert (t.status, t.manual_check) == ("resolved", True)
    [note] = _check_notes(sessions, tid)
    assert note is not None and note.startswith("camera_check: timeout (no result from camera cam1 within 300 s")
    with sessions() as s:
        check = s.get(CameraCheck, check_id)
        assert check is not None and (check.outcome, check.timed_out_at) == (None, utc(RESOLVED_AT + TIMEOUT))
        [n] = s.scalars(select(Notification).where(Notification.kind == "check_timeout")).all()
    assert (n.ticket_id, n.grid_path, n.topic) == (tid, "T1/D1/C1", "gwtest/notify/T1/D1/C1")  # its community
    # The dispatcher checks by hand: the flag goes with the move.
    with sessions() as s, s.begin():
        transition(s, tid, "checked", actor="boss", note="seen on site", ctx=ctx, now=utc(RESOLVED_AT + 900))
    assert _ticket(sessions, tid).manual_check is False


def test_a_late_result_is_recorded_but_does_not_move_the_ticket(sessions: sessionmaker[Session],
                                                                ctx: CaseContext) -> None:
    tid, check_id = resolve_camera_ticket(sessions, ctx)
    run_pass(sessions, ctx, None, RESOLVED_AT + TIMEOUT)
    applied = apply_check_result(sessions, _result(tid, check_id, "failed"), ctx)
    assert (applied.outcome, applied.status) == ("late", "resolved")
    t = _ticket(sessions, tid)
    assert (t.status, t.manual_check) == ("resolved", True)  # still the dispatcher's
    notes = _check_notes(sessions, tid)
    assert len(notes) == 2 and "late: after the timeout" in (notes[1] or "")
    with sessions() as s:
        check = s.get(CameraCheck, check_id)
        assert check is not None and check.outcome == "failed" and check.snapshot_url is not None
        assert s.scalars(select(Notification).where(Notification.kind == "check_failed")).all() == []
    assert apply_check_result(sessions, _result(tid, check_id, "failed"), ctx).outcome == "duplicate"


def test_racing_replicas_time_a_check_out_once(sessions: sessionmaker[Session], ctx: CaseContext) -> None:
    tid, _ = resolve_camera_ticket(sessions, ctx)
    timed_out: list[int] = []
    barrier = threading.Barrier(4)

    def replica(name: str) -> None:
        barrier.wait()
        timed_out.append(run_pass(sessions, ctx, None, RESOLVED_AT + TIMEOUT + 1, holder=name).checks_timed_out)

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    # Passes after the first find nothing to do (or were kept out by the lock).
    assert sorted(timed_out) == [0, 0, 0, 1]
    assert len(_check_notes(sessions, tid)) == 1
    with sessions() as s:
        assert len(s.scalars(select(Notification).where(Notification.kind == "check_timeout")).all()) == 1


def test_a_check_never_sent_is_not_sent_after_its_timeout(sessions: sessionmaker[Session], ctx: CaseContext) -> None:
    tid, check_id = resolve_camera_ticket(sessions, ctx)
    sent: list[str] = []

    def broker_down(topic: str, payload: bytes) -> bool:
        sent.append(topic)
        return False

    run_pass(sessions, ctx, broker_down, RESOLVED_AT + 1)
    assert "gwtest/check/request/cam1" in sent
    sent.clear()
    assert run_pass(sessions, ctx, broker_down, RESOLVED_AT + TIMEOUT).checks_timed_out == 1
    assert "gwtest/check/request/cam1" not in sent  # too late to ask: the dispatcher has it
    with sessions() as s:
        check = s.get(CameraCheck, check_id)
        assert check is not None and check.published_at is None
        key = f"camera_check_timeout:{check_id}"
        event = s.scalars(select(TicketEvent).where(TicketEvent.message_key == key)).one()
    assert event.payload == {"check_id": check_id, "outcome": "timeout", "timeout_seconds": TIMEOUT,
                             "published": False}
    assert _ticket(sessions, tid).manual_check is True


def test_timeout_shows_in_the_api_and_the_metrics(site: SiteConfig) -> None:
    with TestClient(create_app(site, start_consumer=False)) as client:
        login(client)
        st = client.app.state.tickets  # type: ignore[attr-defined]
        tid, check_id = resolve_camera_ticket(st.sessions, st.case)
        other, _ = resolve_camera_ticket(st.sessions, st.case, at=RESOLVED_AT + 10_000)  # its check not yet due
        assert client.get("/tickets?manual_check=true").json()["items"] == []
        run_pass(st.sessions, st.case, None, RESOLVED_AT + TIMEOUT)
        page = client.get("/tickets?manual_check=true").json()
        assert [t["id"] for t in page["items"]] == [tid] and page["items"][0]["manual_check"] is True
        assert other in [t["id"] for t in client.get("/tickets?manual_check=false").json()["items"]]
        [check] = client.get(f"/tickets/{tid}/camera-checks").json()
        assert (check["check_id"], check["outcome"]) == (check_id, None)
        assert check["timed_out_at"].startswith(utc(RESOLVED_AT + TIMEOUT).strftime("%Y-%m-%dT%H:%M:%S"))
        events = client.get(f"/tickets/{tid}").json()["events"]
        assert [e["actor"] for e in events if e["kind"] == "camera_check"] == ["system"]
        metrics = client.get("/metrics").text
        assert "gridwatch_camera_check_timeouts 1.0" in metrics
        assert "gridwatch_tickets_manual_check 1.0" in metrics


def test_the_timeout_must_outlast_the_workers_own_give_up() -> None:
    with pytest.raises(ValueError, match="check_window_seconds"):
        CaseworkConfig.model_validate({"check_window_seconds": 60, "check_timeout_seconds": 75})
