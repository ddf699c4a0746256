"""The webhook sender: a thread of the ticket service that delivers due items of the durable queue.

Each pass (:meth:`WebhookSender.process_due`) leases due deliveries (:func:`~pipeline.tickets.webhooks.claim_due`),
POSTs each in its target's format (:mod:`~pipeline.tickets.webhook_formats`) and stores the outcome:
delivered, retried later with exponential backoff, or dead after ``max_attempts``. Everything it needs is
in the database, so a restarted service, or another replica, carries on where this one stopped.

Plain ``urllib`` (no extra dependency); redirects are not followed (a 3xx is a failed attempt), so a body
never goes to a URL nobody configured.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from itertools import count
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import SiteConfig
from pipeline.config_webhooks import WebhooksConfig, WebhookTarget
from pipeline.redact import redact_text
from pipeline.tickets.webhook_formats import build_request, response_error
from pipeline.tickets.webhooks import (
    ClaimedDelivery,
    WebhookMetrics,
    claim_due,
    drop_removed_targets,
    install_webhook_queueing,
    record_attempt,
)

log = logging.getLogger(__name__)
_READ_MAX = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError: a failed attempt


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int | None, bytes, str | None]:
    """POST ``body``; returns (HTTP status or None, the first 64 KiB of the answer, transport error or None)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), response.read(_READ_MAX), None
    except urllib.error.HTTPError as exc:
        try:
            answer = exc.read(_READ_MAX)
        except OSError:
            answer = b""
        return exc.code, answer, None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return None, b"", f"{type(reason).__name__}: {reason}"


class WebhookSender:
    """Delivers the queue of one database; safe to run in any number of replicas at once.

    Args:
        config: ``api.webhooks``.
        sessions: session factory of the ticket store.
        metrics: counters (None: not counted).
        clock: Unix time source (tests pass their own).
    """

    def __init__(self, config: WebhooksConfig, sessions: sessionmaker[Session],
                 metrics: WebhookMetrics | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.sessions = sessions
        self.metrics = metrics
        self.clock = clock
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._claims = count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def targets(self) -> dict[str, WebhookTarget]:
        """Enabled targets by name (items of other targets stay queued)."""
        return {t.name: t for t in self.config.targets if t.enabled}

    def process_due(self, now: float | None = None) -> int:
        """Run one pass: claim due items and attempt each once; returns how many were attempted.

        Args:
            now: Unix time of the pass (default: the clock); it decides what is due and the next attempt time.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed (items stay queued).
        """
        now = self.clock() if now is None else now
        self.drop_removed(now)
        targets = self.targets
        token = f"{self.owner}:{next(self._claims)}"
        items = claim_due(self.sessions, list(targets), token, now, self.config.lease_seconds,
                          self.config.batch_size)
        for item in items:
            self._attempt(item, targets[item.target], now)
        return len(items)

    def drop_removed(self, now: float) -> int:
        """Drop the pending items of targets no longer in the config (another replica, or an earlier start
        with an older config, may have queued them); returns how many."""
        dropped = drop_removed_targets(self.sessions, {t.name for t in self.config.targets}, now)
        if self.metrics is not None:
            self.metrics.count_dropped(dropped)
        return sum(dropped.values())

    def _attempt(self, item: ClaimedDelivery, target: WebhookTarget, now: float) -> None:
        status_code: int | None = None
        try:
            request = build_request(target, item.body, self.clock())
        except (ValidationError, ValueError, KeyError) as exc:
            error: str | None = f"queued body unusable: {exc}"
        else:
            status_code, answer, error = post(request.url, request.headers, request.body, target.timeout_seconds)
            if error is None and status_code is not None:
                error = response_error(target, status_code, answer)
        if error is not None:
            error = redact_text(error)  # a bot's key can come back in an error message
        outcome = record_attempt(self.sessions, item, target, now, error, status_code)
        label = {"pending": "failed"}.get(outcome, outcome)
        if self.metrics is not None:
            self.metrics.attempts.labels(target=target.name, outcome=label).inc()
        if error is None:
            log.info("webhook %s %s (ticket event %s) delivered", target.name, item.event, item.delivery_id)
        else:
            log.warning("webhook %s %s attempt %d failed (%s): %s", target.name, item.event, item.attempts + 1,
                        outcome, error)

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.process_due() >= self.config.batch_size
            except SQLAlchemyError as exc:
                if self.metrics is not None:
                    self.metrics.errors.inc()
                log.warning("webhook sender: database unavailable, retrying: %s", redact_text(str(exc)))
            except Exception:  # the thread must outlive any single bad item
                if self.metrics is not None:
                    self.metrics.errors.inc()
                log.exception("webhook sender pass failed")
            if not busy:
                self._stop.wait(self.config.poll_interval_seconds)

    def start(self) -> None:
        """Start the sender thread (daemon)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread after its current attempt (an unfinished item's lease expires and it is retried)."""
        self._stop.set()
        if self._thread is not None:
            limit = max((t.timeout_seconds for t in self.config.targets), default=10.0) + 5
            self._thread.join(timeout if timeout is not None else limit)
            self._thread = None


def setup_webhooks(site: SiteConfig, sessions: sessionmaker[Session],
                   registry: CollectorRegistry) -> WebhookSender | None:
    """Wire webhooks into an app: queueing on ``sessions``, metrics on ``registry``; the sender to start.

    Returns:
        The (not yet started) sender, or None when no target is enabled.
    """
    config = site.api.webhooks
    metrics = WebhookMetrics(registry, sessions)  # also without targets: what is still queued shows
    # Items of targets removed from the config would stay pending for ever, also with no target left.
    metrics.count_dropped(drop_removed_targets(sessions, {t.name for t in config.targets}, time.time()))
    if not any(t.enabled for t in config.targets):
        return None
    install_webhook_queueing(sessions, config, site.site, site.api.public_url)
    return WebhookSender(config, sessions, metrics)
