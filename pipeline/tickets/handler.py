"""One MQTT message -> its effect in the ticket store, with every failure of that message contained.

:meth:`MessageHandler.handle` never raises. Its answer tells the consumer whether to acknowledge:

* applied (ticket event or health row committed): ``True``;
* unusable (:class:`~pipeline.tickets.payload.PayloadError`: too large, too deep, not JSON, wrong shape,
  wrong topic): dead-lettered with its reason at once, ``True``;
* any other failure (a database error, a bug, an exception nobody foresaw): ``False`` so the broker
  redelivers it, up to ``max_attempts`` deliveries of the same message; the last one is dead-lettered as
  ``unprocessable`` with the error, ``True``;
* the dead letter itself cannot be written (the database is down): ``False``, the message stays with the
  broker and nothing is acknowledged and lost.

Example:
    >>> handler = MessageHandler(sessions, "gridwatch", TicketMetrics())  # doctest: +SKIP
    >>> handler.handle("gridwatch/health/cam1", b'{"state": "streaming"}')  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.contract.topics import topic_levels
from pipeline.tickets.camera_check import apply_check_result, parse_check_result
from pipeline.tickets.deadlines import CaseContext
from pipeline.tickets.limits import DEFAULT_LIMITS, PayloadLimits
from pipeline.tickets.metrics import TicketMetrics
from pipeline.tickets.payload import AlertIn, PayloadError, parse_alert, parse_health
from pipeline.tickets.sequence import SequenceCheck
from pipeline.tickets.service import ApplyResult, apply_alert, record_dead_letter, upsert_camera_health

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 5
"""Deliveries of one message that fail for an unforeseen reason before it is dead-lettered."""
_TRACKED_FAILURES = 10_000  # failing messages remembered at once (oldest forgotten first)


class MessageHandler:
    """Applies alert and health messages to the store.

    Args:
        sessions: session factory of the ticket store.
        prefix: MQTT topic prefix.
        metrics: counters to bump.
        limits: size and depth bounds of payloads.
        max_attempts: deliveries of a message failing for an unforeseen reason before its dead letter.
        ctx: case rules (new tickets' deadlines and auto-dispatch; camera check results); None: none.
    """

    def __init__(self, sessions: sessionmaker[Session], prefix: str, metrics: TicketMetrics,
                 limits: PayloadLimits = DEFAULT_LIMITS, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 ctx: CaseContext | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.ctx = ctx
        self.on_casework: Callable[[], None] | None = None
        """Called after a message queued case work (a new ticket's notification, a check result's move),
        e.g. to wake the case loop that publishes it."""
        self.on_sequence: Callable[[SequenceCheck], None] | None = None
        """Called with what each applied alert's ``seq`` showed (the gap recovery watches the workers)."""
        self.prefix = prefix
        self.metrics = metrics
        self.limits = limits
        self.max_attempts = max_attempts
        self._sessions = sessions
        self._failures: OrderedDict[bytes, int] = OrderedDict()
        self._store_failing = False

    @property
    def store_failing(self) -> bool:
        """True since the last write to the store failed, until one succeeds."""
        return self._store_failing

    def handle(self, topic: str, payload: bytes) -> bool:
        """Apply one message; never raises.

        Args:
            topic: the topic it arrived on.
            payload: raw payload.

        Returns:
            True when the message may be acknowledged (its effect or its dead letter is committed).
        """
        try:
            self._apply(topic, payload)
        except PayloadError as exc:
            return self._dead_letter(topic, payload, exc.kind, str(exc))
        except Exception as exc:  # contain everything: one message must never stop the consumer
            return self._failed(topic, payload, exc)
        self._store_failing = False
        self._failures.pop(self._key(topic, payload), None)
        return True

    def _apply(self, topic: str, payload: bytes) -> None:
        if topic_levels(topic, self.prefix, "health") is not None:
            if not payload:
                return  # a retained message being cleared
            camera_id, health = parse_health(topic, payload, self.prefix, self.limits)
            if health.sanitized_strings:
                self.metrics.sanitized.labels("health").inc(health.sanitized_strings)
            upsert_camera_health(self._sessions, camera_id, health)
            self.metrics.health_messages.inc()
            return
        if topic_levels(topic, self.prefix, "check") is not None:
            if self.ctx is None:
                raise PayloadError("topic_mismatch", f"camera check results are not taken here: {topic[:300]!r}")
            check = parse_check_result(topic, payload, self.prefix, self.limits)
            applied = apply_check_result(self._sessions, check, self.ctx)
            self.metrics.camera_checks.labels(check.outcome, applied.outcome).inc()
            self._casework_queued()
            return
        alert = parse_alert(topic, payload, self.prefix, self.limits)
        if alert.sanitized_strings:
            log.warning("alert %s: %d string(s) had unstorable characters (lone surrogates, NUL) replaced",
                        alert.incident_id, alert.sanitized_strings)
            self.metrics.sanitized.labels("alert").inc(alert.sanitized_strings)
        result = apply_alert(self._sessions, alert, ctx=self.ctx)
        self._count(alert, result)
        if result.outcome == "created":
            self._casework_queued()

    def _casework_queued(self) -> None:
        if self.on_casework is not None and self.ctx is not None:
            self.on_casework()

    def _count(self, alert: AlertIn, result: ApplyResult) -> None:
        self.metrics.alerts_consumed.labels(alert.event, result.outcome).inc()
        if result.outcome == "attached":
            self.metrics.incidents_attached.labels(alert.hazard.value).inc()
        seq = result.sequence
        if seq.worker_id is not None:
            if seq.missing:
                self.metrics.sequence_gaps.labels(seq.worker_id).inc(seq.missing)
                log.warning("worker %s: %d alert(s) missing before seq %s (lost between worker and here)",
                            seq.worker_id, seq.missing, alert.seq)
            if seq.late:
                self.metrics.sequence_late.labels(seq.worker_id).inc()
                log.info("worker %s: seq %s arrived late (counted missing before)", seq.worker_id, alert.seq)
            if seq.restarted:
                log.warning("worker %s started its alert sequence again at 1 (outbox lost?)", seq.worker_id)
            if seq.recovered:
                self.metrics.gaps_recovered.labels(seq.worker_id).inc()
            if seq.dropped:
                self.metrics.gaps_unrecoverable.labels(seq.worker_id).inc(seq.dropped)
                log.warning("worker %s: %d missing alert(s) given up (series restarted, or beyond the tracked "
                            "gap)", seq.worker_id, seq.dropped)
            if self.on_sequence is not None:
                self.on_sequence(seq)
        log.info("alert %s %s -> ticket %d (%s)", alert.incident_id, alert.event, result.ticket_id,
                 result.outcome)

    @staticmethod
    def _key(topic: str, payload: bytes) -> bytes:
        return hashlib.sha256(topic.encode("utf-8", "replace") + b"\x00" + payload).digest()

    def _failed(self, topic: str, payload: bytes, exc: Exception) -> bool:
        if isinstance(exc, SQLAlchemyError):
            self._store_failing = True
        key = self._key(topic, payload)
        attempts = self._failures.pop(key, 0) + 1
        what = f"{type(exc).__name__}: {exc}"
        if attempts < self.max_attempts:
            self._failures[key] = attempts
            while len(self._failures) > _TRACKED_FAILURES:
                self._failures.popitem(last=False)
            log.error("message on %s failed (attempt %d of %d), left for redelivery: %s", topic[:300],
                      attempts, self.max_attempts, what[:1000])
            return False
        log.error("message on %s failed %d times, dead-lettering it: %s", topic[:300], attempts, what[:1000],
                  exc_info=not isinstance(exc, SQLAlchemyError))
        if not self._dead_letter(topic, payload, "unprocessable", f"unprocessable after {attempts} attempts: "
                                 f"{what}"):
            self._failures[key] = attempts  # still not stored: keep counting until it is
            return False
        return True

    def _dead_letter(self, topic: str, payload: bytes, kind: str, reason: str) -> bool:
        log.warning("dead letter from %s: %s", topic[:300], reason[:500])
        try:
            record_dead_letter(self._sessions, topic, payload, reason, self.limits)
        except Exception as exc:  # the store is down (or worse): keep the message with the broker
            self._store_failing = True
            log.error("could not store dead letter from %s: %s", topic[:300], exc)
            return False
        self._store_failing = False
        self.metrics.dead_letters.labels(kind).inc()
        return True
