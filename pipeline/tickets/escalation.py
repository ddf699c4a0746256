"""The case loop: overdue cases escalate up the grid, and the outbox goes out over MQTT.

One pass (:func:`run_pass`), in one replica at a time:

1. take the loop lock (:func:`loop_lock`) - PostgreSQL: ``pg_try_advisory_lock`` on a connection of its
   own, held for the whole pass (a replica that does not get it skips the pass); SQLite: the
   ``service_locks`` lease row, taken by a conditional ``UPDATE`` (the first write of its transaction, so
   SQLite's single-writer lock orders two replicas) and held for ``casework.lock_lease_seconds`` by the
   replica that renews it each pass;
2. in one transaction, every ticket past ``due_at`` becomes overdue (event ``overdue``, a ``NotificationV1``
   of kind ``overdue`` to its cell) and, every ``escalate_every_minutes`` after the deadline, escalates one level up
   (event ``escalated``, notification to the community, then the district, then the town). A pass that
   finds several steps due (the service was down) records each with the time it became due; in the same
   transaction, camera checks without a result after ``check_timeout_seconds`` time out
   (:func:`~pipeline.tickets.camera_check.time_out_checks`);
3. after that commit, with no transaction open, unsent notifications and camera check requests are
   published (QoS 1, waiting for the broker's acknowledgement; a timed-out check is not sent late) and
   then stamped ``published_at``; one that fails stays for the next pass. Notifications published more
   than :data:`NOTIFICATION_KEEP` ago are deleted.

Event keys (``overdue:<stage>:<deadline>``, ``escalated:<stage>:<deadline>:<level>``) are unique per
ticket, so even two passes that raced could not record a step twice. Delivery is at least once: a
publish whose commit then fails is sent again.

Times come from an injectable clock (Unix seconds), so tests run the loop at chosen instants.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.contract.topics import check_request_topic
from pipeline.tickets.camera_check import request_message, time_out_checks
from pipeline.tickets.deadlines import LEVEL_NAMES, MAX_LEVEL, CaseContext, node_at, notify
from pipeline.tickets.models import CameraCheck, EventKind, Notification, ServiceLock, Ticket, TicketEvent

log = logging.getLogger(__name__)

LOCK_NAME = "case_loop"
NOTIFICATION_KEEP = timedelta(days=30)
"""Published notifications older than this are deleted by the loop (the ticket's events keep the history)."""
PG_LOCK_KEY = 0x67776361  # "gwca": advisory lock key of the case loop
Publish = Callable[[str, bytes], bool]
"""Publish ``payload`` on ``topic`` at QoS 1; True once the broker acknowledged it."""
Clock = Callable[[], float]


@dataclass
class PassResult:
    """What one pass did (``ran`` is False when another replica held the lock)."""

    ran: bool
    overdue: int = 0
    escalated: int = 0
    published: int = 0
    publish_failed: int = 0
    checks_timed_out: int = 0


def default_holder() -> str:
    """Lock holder name of this process: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _sqlite_lease(sessions: sessionmaker[Session], holder: str, now: float, lease: float) -> bool:
    """Take or renew the ``service_locks`` lease (its own short transaction; the UPDATE is its first write)."""
    with sessions() as session, session.begin():
        taken = session.execute(
            update(ServiceLock).where(ServiceLock.name == LOCK_NAME,
                                      or_(ServiceLock.expires_at <= now, ServiceLock.holder == holder))
            .values(holder=holder, expires_at=now + lease, last_run_at=now))
        if taken.rowcount:  # type: ignore[attr-defined]
            return True
        if session.get(ServiceLock, LOCK_NAME) is not None:
            return False  # another replica's lease is running
        try:
            with session.begin_nested():
                session.add(ServiceLock(name=LOCK_NAME, holder=holder, expires_at=now + lease, last_run_at=now))
            return True
        except IntegrityError:
            return False


@contextmanager
def loop_lock(sessions: sessionmaker[Session], holder: str, now: float, lease: float) -> Iterator[bool]:
    """Hold the case-loop lock for the body; yields whether this replica got it.

    PostgreSQL: ``pg_try_advisory_lock`` on a connection of its own, unlocked when the body ends (and freed
    by the server if the process dies). SQLite: the lease row (kept after the body: it runs out by itself).
    """
    engine: Engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        yield _sqlite_lease(sessions, holder, now, lease)
        return
    with engine.connect() as conn:
        got = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}))
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()


def _step(session: Session, ticket: Ticket, ctx: CaseContext, kind: str, level: int, at: datetime,
          seen: set[tuple[int, str]]) -> bool:
    """Record one overdue/escalation step of ``ticket`` (False when it was recorded before: in ``seen``)."""
    assert ticket.due_at is not None
    deadline = ticket.due_at.isoformat()
    key = f"overdue:{ticket.due_stage}:{deadline}" if kind == "overdue" else \
        f"escalated:{ticket.due_stage}:{deadline}:{level}"
    if (ticket.id, key) in seen:
        return False
    seen.add((ticket.id, key))
    node = node_at(ticket, level)
    late = at - ticket.due_at
    reason = (f"{ticket.due_stage} deadline {deadline} passed"
              + (f" {int(late.total_seconds() // 60)} min ago" if late.total_seconds() >= 60 else "")
              + f"; notified: {LEVEL_NAMES[level]} {'/'.join(node)}")
    session.add(TicketEvent(ticket_id=ticket.id, kind=kind, message_key=key, ts=at, note=reason,
                            payload={"stage": ticket.due_stage, "deadline": deadline, "level": level,
                                     "level_name": LEVEL_NAMES[level], "node": node}))
    notify(session, ticket, ctx, "overdue" if kind == "overdue" else "escalated", at, level=level, reason=reason)
    return True


def escalate(session: Session, ctx: CaseContext, now: float) -> tuple[int, int]:
    """Mark overdue and escalate every due ticket (inside the caller's locked transaction).

    Returns:
        (tickets newly overdue, escalation steps recorded).
    """
    every = timedelta(minutes=ctx.casework.escalate_every_minutes)
    now_dt = _utc(now)
    due = session.scalars(
        select(Ticket).where(Ticket.due_at.is_not(None), Ticket.due_at <= now_dt,
                             or_(Ticket.overdue.is_(False), Ticket.escalation_level < MAX_LEVEL))
        .order_by(Ticket.due_at).with_for_update()).all()
    overdue = steps = 0
    # Steps already recorded (one query, not one per step; the unique event key backs this up).
    seen: set[tuple[int, str]] = set()
    ids = [t.id for t in due]
    for chunk in range(0, len(ids), 500):
        seen.update(session.execute(select(TicketEvent.ticket_id, TicketEvent.message_key).where(
            TicketEvent.ticket_id.in_(ids[chunk:chunk + 500]),
            TicketEvent.kind.in_((EventKind.OVERDUE.value, EventKind.ESCALATED.value)))).tuples())
    for t in due:
        assert t.due_at is not None
        if not t.overdue:
            overdue += _step(session, t, ctx, EventKind.OVERDUE.value, 0, t.due_at, seen)
            t.overdue, t.escalation_level, t.escalated_at = True, 0, t.due_at
        target = min(MAX_LEVEL, int((now_dt - t.due_at) / every))
        for level in range(t.escalation_level + 1, target + 1):
            at = t.due_at + every * level
            steps += _step(session, t, ctx, EventKind.ESCALATED.value, level, at, seen)
            t.escalation_level, t.escalated_at = level, at
    session.flush()
    return overdue, steps


def publish_outbox(sessions: sessionmaker[Session], ctx: CaseContext, publish: Publish, now: float,
                   batch: int = 200) -> tuple[int, int]:
    """Publish unsent notifications and check requests; returns (published, failed).

    No transaction is open while publishing: the publish waits for the broker, and the consumer that
    carries the acknowledgement may itself be waiting for the database (SQLite's single writer).
    """
    with sessions() as session:
        notes = [(n.id, n.topic, notification_bytes(n)) for n in session.scalars(
            select(Notification).where(Notification.published_at.is_(None)).order_by(Notification.id).limit(batch))]
        checks = [(c.check_id, check_request_topic(ctx.prefix, c.camera_id), request_message(c, t).to_bytes())
                  for c, t in session.execute(
                      select(CameraCheck, Ticket).join(Ticket, Ticket.id == CameraCheck.ticket_id)
                      .where(CameraCheck.published_at.is_(None), CameraCheck.timed_out_at.is_(None))
                      .order_by(CameraCheck.requested_at).limit(batch))
                  .tuples()]
    sent_notes = [i for i, topic, payload in notes if publish(topic, payload)]
    sent_checks = [i for i, topic, payload in checks if publish(topic, payload)]
    stamp = _utc(now)
    with sessions() as session, session.begin():
        if notes:
            session.execute(update(Notification).where(Notification.id.in_([i for i, _, _ in notes]))
                            .values(attempts=Notification.attempts + 1))
        if sent_notes:
            session.execute(update(Notification).where(Notification.id.in_(sent_notes)).values(published_at=stamp))
        if sent_checks:
            session.execute(update(CameraCheck).where(CameraCheck.check_id.in_(sent_checks))
                            .values(published_at=stamp))
        session.execute(delete(Notification).where(Notification.published_at < stamp - NOTIFICATION_KEEP))
    sent = len(sent_notes) + len(sent_checks)
    return sent, len(notes) + len(checks) - sent


def notification_bytes(n: Notification) -> bytes:
    """The MQTT payload of an outbox row (its stored ``NotificationV1`` JSON, compact)."""
    return json.dumps(n.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def run_pass(sessions: sessionmaker[Session], ctx: CaseContext, publish: Publish | None, now: float,
             holder: str | None = None) -> PassResult:
    """One locked pass of the case loop at Unix time ``now`` (see the module docstring)."""
    holder = holder or default_holder()
    with loop_lock(sessions, holder, now, ctx.casework.lock_lease_seconds) as got:
        if not got:
            return PassResult(ran=False)
        with sessions() as session, session.begin():
            overdue, escalated = escalate(session, ctx, now)
            timed_out = time_out_checks(session, ctx, now)
        sent = failed = 0
        if publish is not None:
            sent, failed = publish_outbox(sessions, ctx, publish, now)
        else:
            with sessions() as session, session.begin():
                session.execute(delete(Notification).where(
                    Notification.published_at < _utc(now) - NOTIFICATION_KEEP))
    if overdue or escalated or failed or timed_out:
        log.info("case loop: %d overdue, %d escalation steps, %d checks timed out, %d published, "
                 "%d publish failures", overdue, escalated, timed_out, sent, failed)
    return PassResult(True, overdue, escalated, sent, failed, timed_out)


@dataclass
class CaseLoop:
    """Runs :func:`run_pass` every ``casework.loop_interval_seconds`` in a thread (and at once on
    :meth:`kick`, e.g. after a move queued a notification)."""

    sessions: sessionmaker[Session]
    ctx: CaseContext
    publish: Publish | None
    clock: Clock = time.time
    holder: str = field(default_factory=default_holder)
    passes: int = 0
    last: PassResult | None = None
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def run_once(self) -> PassResult:
        """One pass now (errors are logged, not raised: the next pass tries again)."""
        try:
            self.last = run_pass(self.sessions, self.ctx, self.publish, self.clock(), self.holder)
        except Exception:
            log.exception("case loop pass failed")
            self.last = PassResult(ran=False)
        self.passes += 1
        return self.last

    def kick(self) -> None:
        """Run a pass soon (without waiting for the interval)."""
        self._wake.set()

    def start(self) -> None:
        """Start the loop thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gridwatch-case-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(self.ctx.casework.loop_interval_seconds)
            self._wake.clear()
