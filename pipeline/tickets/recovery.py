"""Alert recovery: ask workers for the sequence numbers that never arrived, and give up visibly.

A broker can drop alerts it acknowledged (Mosquitto 2.0.11 loses what is queued for an offline *shared*
subscription across a restart, docs/reliability.md). The per-worker ``seq`` shows the loss
(:mod:`pipeline.tickets.sequence`, ranges in :mod:`pipeline.tickets.gaps`); :class:`GapRecovery` closes it:

* **Tail losses.** The worker's retained status carries ``last_seq``. When it is above the last number that
  arrived, and no alert of that worker has arrived for ``grace_seconds`` (so it is not still on its way), the
  difference is recorded as a gap (:func:`~pipeline.tickets.sequence.claim_last_seq`). For a worker nothing
  arrived from yet (a new store) only an ``online`` status counts: the store then asks for what that worker
  still archives.
* **Requests.** Each :meth:`tick` (the consumer calls it from its network loop, about once a second) sends at
  most one :class:`~pipeline.contract.resend.ResendRequestV1` per worker: its open gap rows that are at least
  ``grace_seconds`` old (a late copy on another replica may still come) and were not asked for within
  ``retry_seconds``, up to the contract's 64 ranges / 1,000 numbers. A retry (and giving up) also waits until
  no alert of the worker has arrived for ``grace_seconds``: the answer to the last request may still be coming
  in (1,000 re-sent alerts take several seconds to apply). What arrives again fills the gaps
  (``gridwatch_alert_gaps_recovered_total``); the ticket store applies it idempotently, so an alert that
  did arrive never makes a second ticket or event.
* **Giving up.** A row asked for ``max_requests`` times and still open ``retry_seconds`` after the last one is
  ``unrecoverable`` (the worker's archive no longer has it, or the worker is gone): counted in
  ``gridwatch_alert_gaps_unrecoverable_total{worker}`` and logged as a warning. Open numbers are the
  ``gridwatch_alert_gaps_open`` gauge.

Every step is bounded and contained: a status payload that is not a status is ignored, a database error
skips the tick (the next one tries again), and a request the connection did not take is not counted as asked.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.contract.messages import WorkerStatusV1
from pipeline.contract.resend import MAX_RESEND_ALERTS, MAX_RESEND_RANGES, ResendRequestV1, SeqRange
from pipeline.contract.topics import parse_status_topic, resend_request_topic
from pipeline.tickets.gaps import OPEN, UNRECOVERABLE, UNRECOVERABLE_KEEP_DAYS, AlertGap, missing_numbers
from pipeline.tickets.metrics import TicketMetrics
from pipeline.tickets.models import utcnow
from pipeline.tickets.sequence import SequenceCheck, claim_last_seq

log = logging.getLogger(__name__)

MAX_STATUS_BYTES = 4096
"""Largest worker status read (a real one is under 100 bytes)."""
MAX_WORKERS_PER_TICK = 100
"""Workers asked per tick at most (the rest wait for the next tick)."""
MAX_PENDING_CLAIMS = 10_000
"""Status claims remembered at once (one per worker; more workers than this are not watched by status)."""

Publish = Callable[[str, bytes], bool]
"""(topic, payload) -> whether it was handed to the broker connection (QoS 1, not waited for)."""


class GapRecovery:
    """Turns sequence gaps into resend requests and counts what comes back.

    Args:
        sessions: session factory of the ticket store.
        prefix: MQTT topic prefix.
        metrics: the service's metrics.
        publish: sends a request (the consumer's connection).
        retry_seconds: time between two requests for the same gap.
        max_requests: requests per gap before it is unrecoverable (0: never ask, give up at once).
        grace_seconds: how long a new gap (or a status claim, counted from the worker's last alert) waits
            before it is acted on.
    """

    def __init__(self, sessions: sessionmaker[Session], prefix: str, metrics: TicketMetrics, publish: Publish,
                 retry_seconds: float = 5.0, max_requests: int = 5, grace_seconds: float = 2.0) -> None:
        self.sessions = sessions
        self.prefix = prefix
        self.metrics = metrics
        self.publish = publish
        self.retry_seconds = retry_seconds
        self.max_requests = max_requests
        self.grace_seconds = grace_seconds
        self._claims: dict[str, tuple[int, float, bool]] = {}  # worker -> (last_seq it said, monotonic time, online)
        self._last_alert: dict[str, float] = {}  # worker -> monotonic time its last alert was applied

    # -- inputs (the consumer's network thread) ---------------------------------------------------
    def note_alert(self, check: SequenceCheck) -> None:
        """An alert with ``seq`` was applied (the handler's ``on_sequence`` hook; never raises)."""
        if check.worker_id is not None:
            self._last_alert[check.worker_id] = time.monotonic()
            if len(self._last_alert) > MAX_PENDING_CLAIMS:
                self._last_alert.pop(next(iter(self._last_alert)))

    def on_status(self, topic: str, payload: bytes) -> None:
        """A retained worker status arrived: remember its ``last_seq`` for the next ticks (never raises)."""
        worker_id = parse_status_topic(topic, self.prefix)
        if worker_id is None or not payload or len(payload) > MAX_STATUS_BYTES:
            return
        try:
            status = WorkerStatusV1.model_validate_json(payload)
        except (ValidationError, ValueError):
            log.info("worker status on %s is not a WorkerStatusV1; ignored", topic[:300])
            return
        if status.last_seq is None or len(worker_id) > 200:
            return
        if worker_id not in self._claims and len(self._claims) >= MAX_PENDING_CLAIMS:
            return
        self._claims[worker_id] = (status.last_seq, time.monotonic(), status.state == "online")

    # -- the periodic work ------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> int:
        """Apply due status claims, send due requests, give up exhausted gaps; returns requests sent.

        Never raises: a failure is logged and the next tick tries again.
        """
        mono = time.monotonic() if now is None else now
        try:
            self._apply_claims(mono)
            # Alerts of these workers are still coming in (the answer to a request, a backlog): asking again or
            # giving up now would only duplicate what is on its way.
            busy = {w for w, at in self._last_alert.items() if mono - at < self.grace_seconds}
            sent = self._request(utcnow(), busy)
            self._refresh_gauge()
            return sent
        except Exception:  # the consumer's thread must go on taking alerts
            log.exception("alert recovery tick failed")
            return 0

    def _apply_claims(self, mono: float) -> None:
        due = [(w, seq, online) for w, (seq, at, online) in self._claims.items()
               if mono - at >= self.grace_seconds and mono - self._last_alert.get(w, -1e18) >= self.grace_seconds]
        for worker_id, last_seq, online in due:
            with self.sessions() as session, session.begin():
                # A worker this store never heard of is taken at its word only while it is online: the retained
                # `offline` of a long-gone worker must not make a new store chase its old alerts.
                check = claim_last_seq(session, worker_id, last_seq, new_worker=online)
            if self._claims.get(worker_id, (0, 0.0, False))[0] == last_seq:
                del self._claims[worker_id]
            if check.missing:
                self.metrics.sequence_gaps.labels(worker_id).inc(check.missing)
                log.warning("worker %s: its status says last seq %d, %d alert(s) up to it never arrived",
                            worker_id, last_seq, check.missing)
            if check.dropped:
                self.metrics.gaps_unrecoverable.labels(worker_id).inc(check.dropped)

    def _request(self, now: datetime, busy: set[str]) -> int:
        grace, retry = timedelta(seconds=self.grace_seconds), timedelta(seconds=self.retry_seconds)
        sent = 0
        with self.sessions() as session, session.begin():
            self._give_up(session, now - retry, busy)
            if self.max_requests == 0:
                return 0
            rows = session.scalars(
                select(AlertGap).where(AlertGap.state == OPEN, AlertGap.requests < self.max_requests,
                                       AlertGap.detected_at <= now - grace,
                                       or_(AlertGap.last_request_at.is_(None), AlertGap.last_request_at <= now - retry))
                .order_by(AlertGap.worker_id, AlertGap.first_seq).limit(MAX_WORKERS_PER_TICK * MAX_RESEND_RANGES)
                .with_for_update(skip_locked=True)).all()
            by_worker: dict[str, list[AlertGap]] = {}
            for row in rows:
                if row.requests == 0 or row.worker_id not in busy:  # first requests go at once, retries wait
                    by_worker.setdefault(row.worker_id, []).append(row)
            for worker_id, gaps in list(by_worker.items())[:MAX_WORKERS_PER_TICK]:
                asked = self._take(session, gaps)
                if asked and self._send(worker_id, [SeqRange(first=g.first_seq, last=g.last_seq) for g in asked], now):
                    sent += 1
                    for gap in asked:  # counted only once the connection took the request
                        gap.requests += 1
                        gap.last_request_at = now
        return sent

    @staticmethod
    def _take(session: Session, gaps: list[AlertGap]) -> list[AlertGap]:
        """The rows one request covers (contract bounds); a row over the remaining budget is split there."""
        taken: list[AlertGap] = []
        count = 0
        for gap in gaps:
            if len(taken) == MAX_RESEND_RANGES or count == MAX_RESEND_ALERTS:
                break  # the next tick asks for the rest (those rows stay due)
            room = MAX_RESEND_ALERTS - count
            if gap.size > room:
                session.add(AlertGap(worker_id=gap.worker_id, first_seq=gap.first_seq + room, last_seq=gap.last_seq,
                                     state=gap.state, detected_at=gap.detected_at, requests=gap.requests,
                                     last_request_at=gap.last_request_at))
                gap.last_seq = gap.first_seq + room - 1
            taken.append(gap)
            count += gap.size
        return taken

    def _send(self, worker_id: str, ranges: list[SeqRange], now: datetime) -> bool:
        try:
            topic = resend_request_topic(self.prefix, worker_id)
        except ValueError:  # a worker id that is no topic level never gets an answer: let its gaps run out
            log.warning("worker id %r cannot be asked for a resend (not a topic level)", worker_id[:200])
            return False
        request = ResendRequestV1(schema_version=1, request_id=f"rs-{uuid.uuid4().hex}", worker_id=worker_id,
                                  ranges=ranges, requested_at=now)
        if not self.publish(topic, request.to_bytes()):
            log.warning("resend request to worker %s not sent (not connected); asking again later", worker_id)
            return False
        self.metrics.resend_requests.labels(worker_id).inc()
        log.info("asked worker %s to resend %d alert(s): %s", worker_id, request.count(),
                 ", ".join(f"{r.first}..{r.last}" for r in ranges[:8]) + (", ..." if len(ranges) > 8 else ""))
        return True

    def _give_up(self, session: Session, asked_before: datetime, busy: set[str]) -> None:
        """Mark exhausted rows of quiet workers unrecoverable (warning + metric); forget old unrecoverable rows."""
        exhausted = session.scalars(
            select(AlertGap).where(AlertGap.state == OPEN, AlertGap.requests >= self.max_requests,
                                   or_(AlertGap.last_request_at.is_(None), AlertGap.last_request_at <= asked_before))
            .with_for_update(skip_locked=True)).all()
        for gap in exhausted:
            if gap.worker_id in busy:
                continue
            gap.state = UNRECOVERABLE
            self.metrics.gaps_unrecoverable.labels(gap.worker_id).inc(gap.size)
            log.warning("worker %s: alerts %d..%d (%d) not recovered after %d resend request(s); given up "
                        "(no longer in the worker's archive, or the worker is gone)", gap.worker_id, gap.first_seq,
                        gap.last_seq, gap.size, gap.requests)
        forget_before = utcnow() - timedelta(days=UNRECOVERABLE_KEEP_DAYS)
        session.execute(delete(AlertGap).where(AlertGap.state == UNRECOVERABLE, AlertGap.detected_at < forget_before))

    def _refresh_gauge(self) -> None:
        with self.sessions() as session:
            self.metrics.gaps_open.set(sum(missing_numbers(session, OPEN).values()))
