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
        db_errors: ``gridwatch_consumer_db_errors_total`` (messages left unacknowledged after a failure).
        connected: ``gridwatch_consumer_connected`` (1 while the consumer thread runs, connected and
            subscribed).
        ready: ``gridwatch_consumer_ready`` (1 while messages can be processed: connected and the store
            writable; set at scrape time by the consumer).
        restarts: ``gridwatch_consumer_restarts_total`` (consumer thread died and was restarted).
        sanitized: ``gridwatch_payload_strings_sanitized_total{kind}`` (strings whose lone surrogates or
            NUL were replaced).
        incidents_attached: ``gridwatch_incidents_attached_total{hazard}`` (duplicate-open guard: a new
            incident joined the active ticket of its camera, zone and hazard).
        sequence_gaps: ``gridwatch_alert_sequence_gaps_total{worker}`` (alert sequence numbers missing).
        sequence_late: ``gridwatch_alert_sequence_late_total{worker}`` (counted missing, then arrived).
        gaps_recovered: ``gridwatch_alert_gaps_recovered_total{worker}`` (missing numbers that arrived later:
            re-sent on request, or late from another replica).
        gaps_unrecoverable: ``gridwatch_alert_gaps_unrecoverable_total{worker}`` (missing numbers given up:
            asked for ``mqtt.resend_max_requests`` times, or dropped with a restarted series).
        resend_requests: ``gridwatch_resend_requests_total{worker}`` (resend requests sent to workers).
        gaps_open: ``gridwatch_alert_gaps_open`` (numbers missing now and still asked for, all workers).
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
        self.connected = Gauge("gridwatch_consumer_connected",
                               "1 while the consumer thread runs and is connected and subscribed.",
                               registry=self.registry)
        self.ready = Gauge("gridwatch_consumer_ready",
                           "1 while the consumer can process messages (connected, store writable).",
                           registry=self.registry)
        self.restarts = Counter("gridwatch_consumer_restarts", "Consumer thread deaths followed by a restart.",
                                registry=self.registry)
        self.sanitized = Counter("gridwatch_payload_strings_sanitized",
                                 "Payload strings whose lone surrogates or NUL characters were replaced.",
                                 ["kind"], registry=self.registry)
        self.camera_checks = Counter("gridwatch_camera_check_results",
                                     "Camera check results received, by outcome (passed, failed, unavailable) "
                                     "and what they did (applied; duplicate; late: after the timeout, recorded "
                                     "without a move).",
                                     ["result", "outcome"],
                                     registry=self.registry)
        self.incidents_attached = Counter("gridwatch_incidents_attached",
                                          "New incidents attached to the active ticket of the same camera, "
                                          "zone and hazard instead of opening another.",
                                          ["hazard"], registry=self.registry)
        self.sequence_gaps = Counter("gridwatch_alert_sequence_gaps",
                                     "Alert sequence numbers skipped per worker (lost alerts).",
                                     ["worker"], registry=self.registry)
        self.sequence_late = Counter("gridwatch_alert_sequence_late",
                                     "Alerts that arrived after a higher sequence number (counted as gaps "
                                     "before; real loss = gaps - late).", ["worker"], registry=self.registry)
        self.gaps_recovered = Counter("gridwatch_alert_gaps_recovered",
                                      "Missing alert sequence numbers that arrived later (re-sent or late).",
                                      ["worker"], registry=self.registry)
        self.gaps_unrecoverable = Counter("gridwatch_alert_gaps_unrecoverable",
                                          "Missing alert sequence numbers given up (no longer archived by the "
                                          "worker, or its series restarted).", ["worker"], registry=self.registry)
        self.resend_requests = Counter("gridwatch_resend_requests", "Resend requests sent to workers.",
                                       ["worker"], registry=self.registry)
        self.gaps_open = Gauge("gridwatch_alert_gaps_open",
                               "Alert sequence numbers missing now and still asked for (all workers).",
                               registry=self.registry)
        if sessions is not None:
            self.registry.register(_StoreCollector(sessions))

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
