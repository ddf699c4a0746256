"""Outbound webhooks: the durable delivery queue, how ticket events get into it, and the lease claim.

Queueing is a transactional outbox. :func:`install_webhook_queueing` listens to ``after_flush`` of the
app's session factory and, in the same transaction as the change, inserts one ``webhook_deliveries`` row
per matching target for:

* ``ticket_created``: a new ``Ticket`` row (an incident attached to an open ticket creates none);
* ``ticket_overdue`` / ``ticket_escalated``: a new ``overdue`` / ``escalated`` ticket event (written by the
  case loop, :mod:`pipeline.tickets.escalation`);
* ``ticket_closed``: a new ``transition`` event into a final state (``closed`` or ``false_alarm``).

So every code path that changes tickets (MQTT consumer, API, escalation loop) queues without knowing
about webhooks, and a rolled-back change (e.g. an integrity race retried by the service) queues nothing.
The body (:class:`~pipeline.contract.webhook.WebhookEventV1`) is fixed at queue time.

Claiming (:func:`claim_due`) sets a lease (owner token, expiry) on due rows whose lease is free or
expired, so two replicas never hold one row at once. SQLite: one ``UPDATE ... WHERE id IN (due ids) AND
lease free``, run under SQLite's single write lock. PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``
(rows another replica is claiming are skipped), then ``UPDATE`` of exactly those ids. A crashed sender's
rows come back when their lease expires; delivery is at least once (a sender that dies between the POST
and storing its result sends that item again), so receivers deduplicate on ``delivery_id``.

A pending delivery whose target was removed from the config (not merely disabled) would wait forever:
:func:`drop_removed_targets` (at start-up and in every sender pass) marks it ``dropped`` with
``dropped_reason`` ``target_removed`` and counts it in ``gridwatch_webhook_dropped_total``.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter as Counter_
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import ForeignKey, Index, Integer, String, Text, event, func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, UOWTransaction, mapped_column, sessionmaker

from pipeline.config_webhooks import WebhookEvent, WebhooksConfig, WebhookTarget
from pipeline.contract.webhook import WebhookEventV1, WebhookTicketV1
from pipeline.tickets.models import Base, EventKind, Ticket, TicketEvent, UTCDateTime, utcnow

log = logging.getLogger(__name__)

PENDING, DELIVERED, DEAD, DROPPED = "pending", "delivered", "dead", "dropped"
TARGET_REMOVED = "target_removed"
"""``dropped_reason`` of a delivery whose target is no longer in ``api.webhooks.targets``."""
FINAL_STATES = frozenset({"closed", "false_alarm"})
"""Statuses whose entering sends ``ticket_closed``."""
_REASON_MAX = 2000


class WebhookDelivery(Base):
    """One event for one target: ``pending`` until delivered, ``dead`` after its last failed attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(32), unique=True)
    target: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(32))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    dropped_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """Why a ``dropped`` delivery will never be sent (``target_removed``)."""


def _ts(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


# -- queueing ------------------------------------------------------------------------------------------


def event_body(ticket: Ticket, event_name: WebhookEvent, ts: datetime, reason: str | None, site: str,
               public_url: str | None, delivery_id: str, status: str | None = None) -> str:
    """The ``WebhookEventV1`` JSON of one delivery (fields copied, never the ticket's details or notes)."""
    url = f"{public_url.rstrip('/')}/tickets/{ticket.id}" if public_url else None
    body = WebhookEventV1(
        schema_version=1, delivery_id=delivery_id, event=event_name.value, site=site, ts=ts,
        reason=reason[:_REASON_MAX] if reason else None,
        ticket=WebhookTicketV1(
            id=ticket.id, incident_id=ticket.incident_id, hazard=ticket.hazard, severity=ticket.severity,
            status=status or ticket.status, title=ticket.title, camera_id=ticket.camera_id,
            camera_name=ticket.camera_name, grid_path=ticket.grid_path.split("/"), zone_id=ticket.zone_id,
            opened_at=ticket.opened_at, url=url))
    return body.to_bytes().decode("utf-8")


@dataclass(frozen=True)
class _Happened:
    ticket: Ticket
    event: WebhookEvent
    ts: datetime
    reason: str | None
    status: str | None


def _happenings(session: Session) -> Iterator[_Happened]:
    """Ticket events among the objects this flush inserted."""
    for obj in list(session.new):
        if isinstance(obj, Ticket):
            yield _Happened(obj, WebhookEvent.TICKET_CREATED, obj.opened_at, None, None)
        elif isinstance(obj, TicketEvent):
            if obj.kind == EventKind.TRANSITION.value and obj.to_status in FINAL_STATES:
                kind, status = WebhookEvent.TICKET_CLOSED, obj.to_status
            elif obj.kind == EventKind.ESCALATED.value:
                kind, status = WebhookEvent.TICKET_ESCALATED, None
            elif obj.kind == EventKind.OVERDUE.value:
                kind, status = WebhookEvent.TICKET_OVERDUE, None
            else:
                continue
            with session.no_autoflush:
                ticket = session.get(Ticket, obj.ticket_id)
            if ticket is not None:
                yield _Happened(ticket, kind, obj.ts or utcnow(), obj.note, status)


def install_webhook_queueing(sessions: sessionmaker[Session], config: WebhooksConfig, site: str,
                             public_url: str | None) -> None:
    """Queue deliveries for the enabled targets whenever a flush through ``sessions`` inserts a ticket event.

    Args:
        sessions: the app's session factory (every writer uses it).
        config: ``api.webhooks``.
        site: site name put into bodies.
        public_url: ``api.public_url`` for the ticket link (None: no link).
    """
    targets = [t for t in config.targets if t.enabled]
    if not targets:
        return

    def after_flush(session: Session, flush_context: UOWTransaction) -> None:
        rows: list[dict[str, Any]] = []
        now = utcnow()
        for h in _happenings(session):
            for target in targets:
                if h.event not in target.events or not target.matches(h.ticket.grid_path, h.ticket.hazard):
                    continue
                delivery_id = uuid.uuid4().hex
                rows.append({"delivery_id": delivery_id, "target": target.name, "event": h.event.value,
                             "ticket_id": h.ticket.id, "status": PENDING, "attempts": 0,
                             "body": event_body(h.ticket, h.event, h.ts, h.reason, site, public_url,
                                                delivery_id, h.status),
                             "next_attempt_at": now, "created_at": now})
        if rows:
            # Core insert on the flush's own connection: same transaction, no nested ORM flush.
            session.connection().execute(insert(WebhookDelivery), rows)

    event.listen(sessions, "after_flush", after_flush)


# -- claiming and recording ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this sender holds the lease of."""

    id: int
    delivery_id: str
    target: str
    event: str
    body: bytes
    attempts: int
    lease: str


def claim_due(sessions: sessionmaker[Session], targets: list[str], lease_token: str, now: float,
              lease_seconds: float, limit: int) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due pending deliveries of ``targets`` to ``lease_token`` (see module docstring)."""
    if not targets:
        return []
    at = _ts(now)
    free = (WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= at,
            WebhookDelivery.target.in_(targets),
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < at))
    due = (select(WebhookDelivery.id).where(*free).order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
           .limit(limit).with_for_update(skip_locked=True))
    lease = {"lease_owner": lease_token, "lease_until": at + timedelta(seconds=lease_seconds)}
    with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # Lock first, then update exactly those rows: inside ``IN (...)`` PostgreSQL may run a
            # LIMIT ... SKIP LOCKED subquery more than once and lease more than ``limit`` rows.
            ids = list(session.scalars(due))
            if ids:
                session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(**lease)
                                .execution_options(synchronize_session=False))
        else:
            # One statement: it takes SQLite's write lock before reading, so two replicas are serialised.
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(due), *free).values(**lease)
                            .execution_options(synchronize_session=False))
        rows = session.execute(select(WebhookDelivery.id, WebhookDelivery.delivery_id, WebhookDelivery.target,
                                      WebhookDelivery.event, WebhookDelivery.body, WebhookDelivery.attempts)
                               .where(WebhookDelivery.lease_owner == lease_token)
                               .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)).all()
    return [ClaimedDelivery(r.id, r.delivery_id, r.target, r.event, r.body.encode("utf-8"), r.attempts,
                            lease_token) for r in rows]


def record_attempt(sessions: sessionmaker[Session], item: ClaimedDelivery, target: WebhookTarget, now: float,
                   error: str | None, status_code: int | None) -> str:
    """Store the outcome of one attempt and free the lease; returns the new status.

    A failure schedules the next attempt after :meth:`WebhookTarget.backoff_seconds` or, at
    ``max_attempts``, makes the delivery ``dead``. Nothing is written when the lease was lost.
    """
    attempts = item.attempts + 1
    at = _ts(now)
    values: dict[str, Any] = {"attempts": attempts, "lease_owner": None, "lease_until": None,
                              "last_status": status_code, "last_error": error[:2000] if error else None}
    if error is None:
        values |= {"status": DELIVERED, "finished_at": at}
    elif attempts >= target.max_attempts:
        values |= {"status": DEAD, "finished_at": at}
    else:
        values |= {"next_attempt_at": at + timedelta(seconds=target.backoff_seconds(attempts))}
    with sessions() as session, session.begin():
        done = session.execute(update(WebhookDelivery)
                               .where(WebhookDelivery.id == item.id, WebhookDelivery.lease_owner == item.lease)
                               .values(**values).execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        log.warning("webhook delivery %d: lease %s lost before the result was stored", item.id, item.lease)
    return str(values.get("status", PENDING))


def drop_removed_targets(sessions: sessionmaker[Session], configured: set[str], now: float) -> Counter_[str]:
    """Mark pending deliveries of targets not in ``configured`` (every configured name, disabled ones too)
    ``dropped`` (reason ``target_removed``); returns how many per target.

    One conditional ``UPDATE ... RETURNING`` per call, so replicas racing on it count each row once; a row
    another sender holds a live lease on is left to that sender.
    """
    at = _ts(now)
    with sessions() as session, session.begin():
        targets = session.scalars(
            update(WebhookDelivery)
            .where(WebhookDelivery.status == PENDING, WebhookDelivery.target.not_in(sorted(configured)),
                   or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < at))
            .values(status=DROPPED, dropped_reason=TARGET_REMOVED, finished_at=at,
                    last_error="target removed from api.webhooks.targets")
            .returning(WebhookDelivery.target).execution_options(synchronize_session=False)).all()
    dropped = Counter_(targets)
    for target, n in sorted(dropped.items()):
        log.warning("webhook target %r is no longer configured: %d pending deliveries dropped (%s)", target, n,
                    TARGET_REMOVED)
    return dropped


def requeue(session: Session, row_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Put a dead or dropped delivery back into the queue with a fresh attempt count (caller commits); None
    if unknown."""
    row = session.get(WebhookDelivery, row_id, with_for_update=True)
    if row is None:
        return None
    if row.status in (DEAD, DROPPED):
        row.status, row.attempts, row.finished_at, row.dropped_reason = PENDING, 0, None, None
        row.next_attempt_at = now or utcnow()
        row.lease_owner = row.lease_until = None
    return row


# -- metrics -----------------------------------------------------------------------------------------------


class _QueueCollector(Collector):
    """``gridwatch_webhook_deliveries{target,status}`` from the store (every replica reports the same)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("gridwatch_webhook_deliveries",
                                   "Webhook deliveries in the store by target and status (pending, delivered, "
                                   "dead = dead-lettered after the last attempt).", labels=["target", "status"])
        try:
            with self._sessions() as session:
                rows = session.execute(select(WebhookDelivery.target, WebhookDelivery.status, func.count())
                                       .group_by(WebhookDelivery.target, WebhookDelivery.status)).all()
        except SQLAlchemyError as exc:
            log.warning("webhook metrics: database unavailable: %s", exc)
            return
        for target, status, count in rows:
            family.add_metric([target, status], float(count))
        yield family


class WebhookMetrics:
    """Counters of the sender and the queue gauge, on the app's registry.

    Attributes:
        attempts: ``gridwatch_webhook_attempts_total{target,outcome}``, outcome delivered, failed (to be
            retried) or dead (last attempt failed).
        errors: ``gridwatch_webhook_sender_errors_total`` (sender passes that failed, e.g. database down).
        dropped: ``gridwatch_webhook_dropped_total{target,reason}`` (pending deliveries given up, reason
            ``target_removed``).
    """

    def __init__(self, registry: CollectorRegistry, sessions: sessionmaker[Session]) -> None:
        self.attempts = Counter("gridwatch_webhook_attempts", "Webhook delivery attempts by outcome.",
                                ["target", "outcome"], registry=registry)
        self.errors = Counter("gridwatch_webhook_sender_errors",
                              "Webhook sender passes that failed (the items stay queued).", registry=registry)
        self.dropped = Counter("gridwatch_webhook_dropped", "Pending webhook deliveries dropped, by target "
                               "and reason (target_removed: the target is no longer configured).",
                               ["target", "reason"], registry=registry)
        registry.register(_QueueCollector(sessions))

    def count_dropped(self, dropped: Counter_[str], reason: str = TARGET_REMOVED) -> None:
        """Add what :func:`drop_removed_targets` dropped."""
        for target, n in dropped.items():
            self.dropped.labels(target=target, reason=reason).inc(n)
