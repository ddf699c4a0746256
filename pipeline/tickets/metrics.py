"""Prometheus metrics of the ticket service, on a registry of their own (one per app).

Counters are bumped by the consumer; ticket and dead-letter totals are read from the database at
scrape time by :class:`_StoreCollector`, so every replica reports the shared store consistently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.tickets.models import DeadLetter, Ticket

log = logging.getLogger(__name__)


class _StoreCollector(Collector):
    """Collects ``gridwatch_tickets{status,hazard}`` and ``gridwatch_dead_letters`` from the DB."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Query the store; yields nothing when the database is unreachable."""
        tickets = GaugeMetricFamily("gridwatch_tickets", "Tickets in the store by status and hazard.",
                                    labels=["status", "hazard"])
        dead = GaugeMetricFamily("gridwatch_dead_letters", "Dead-letter rows in the store.")
        try:
            with self._sessions() as session:
                rows = session.execute(select(Ticket.status, Ticket.hazard, func.count())
                                       .group_by(Ticket.status, Ticket.hazard)).all()
                n_dead = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
        except SQLAlchemyError as exc:
            log.warning("metrics: database unavailable: %s", exc)
            return
        for status, hazard, count in rows:
            tickets.add_metric([status, hazard], float(count))
        dead.add_metric([], float(n_dead))
        yield tickets
        yield dead


class TicketMetrics:
    """The ticket service's metrics.

    Attributes:
        registry: the registry ``/metrics`` renders.
        alerts_consumed: ``gridwatch_alerts_consumed_total{event,outcome}``.
        dead_letters: ``gridwatch_dead_letters_received_total{reason}``.
        health_messages: ``gridwatch_health_messages_total``.
        db_errors: ``gridwatch_consumer_db_errors_total`` (messages left unacknowledged).
        connected: ``gridwatch_consumer_connected`` (1 when connected to the broker).
    """

    def __init__(self, sessions: sessionmaker[Session] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.alerts_consumed = Counter("gridwatch_alerts_consumed", "Alert messages applied to tickets.",
                                       ["event", "outcome"], registry=self.registry)
        self.dead_letters = Counter("gridwatch_dead_letters_received", "Messages sent to dead letters.",
                                    ["reason"], registry=self.registry)
        self.health_messages = Counter("gridwatch_health_messages", "Camera health messages stored.",
                                       registry=self.registry)
        self.db_errors = Counter("gridwatch_consumer_db_errors",
                                 "Messages not acknowledged because the database failed.",
                                 registry=self.registry)
        self.connected = Gauge("gridwatch_consumer_connected", "1 while the consumer is connected.",
                               registry=self.registry)
        if sessions is not None:
            self.registry.register(_StoreCollector(sessions))

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
