"""MQTT consumer that turns alerts into tickets and health messages into ``camera_health`` rows.

Subscriptions (QoS 1, persistent session: ``clean_session=False`` and a stable client id, so alerts
published while the API is down are delivered when it comes back):

* ``$share/<shared_group>/<prefix>/alerts/#`` (``<prefix>/alerts/#`` when ``shared_group`` is None);
  with a shared group, several API replicas split the alerts between them.
* ``<prefix>/health/+``: retained camera health JSON.
* ``<prefix>/status/workers/+``: retained worker status; its ``last_seq`` feeds the gap recovery
  (:mod:`pipeline.tickets.recovery`), which asks workers for missing alerts from this thread, about once a
  second, on this connection.

Messages are acknowledged manually (paho ``manual_ack=True``) only after their effect is committed; an
unusable one (over a size/depth limit, not JSON, wrong shape) is committed to ``dead_letters`` and
acknowledged (see :mod:`pipeline.tickets.handler`, which contains every failure of one message). When
the database fails the message is left unacknowledged and the consumer drops the connection and
reconnects after a back-off (1 s doubling to ``mqtt.consumer_reconnect_max_seconds``, 5 s, each wait
drawn between half and all of it so replicas do not reconnect in step), which makes the broker redeliver it
(MQTT session resumption), so nothing is acked and lost; after ``max_attempts`` failed deliveries it is
dead-lettered as ``unprocessable``.

Supervision: the network thread ``ticket-consumer`` is watched by ``ticket-consumer-supervisor``, which
restarts it (with back-off, counted in ``gridwatch_consumer_restarts_total``) whenever it dies.
:attr:`AlertConsumer.connected` and :attr:`AlertConsumer.ready` (what ``/healthz`` reports) are false
while the thread is dead, disconnected, stalled on one message, or the store rejects writes.

Example:
    >>> consumer = AlertConsumer(site.mqtt, session_factory(engine))  # doctest: +SKIP
    >>> consumer.start(); ...; consumer.stop()                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import MqttConfig
from pipeline.contract.topics import alert_filter, check_result_topic, health_filter, parse_status_topic, status_filter
from pipeline.mqtt_url import BrokerAddress, broker_address, configure_client
from pipeline.tickets.deadlines import CaseContext
from pipeline.tickets.handler import DEFAULT_MAX_ATTEMPTS, MessageHandler
from pipeline.tickets.limits import DEFAULT_LIMITS, PayloadLimits
from pipeline.tickets.metrics import TicketMetrics
from pipeline.tickets.recovery import GapRecovery

log = logging.getLogger(__name__)

STALL_SECONDS = 60.0
"""A network loop that has not come round for this long (stuck on one message) is reported not ready."""
RECOVERY_TICK_SECONDS = 1.0
"""How often the network loop runs the gap recovery (status claims, resend requests)."""


def next_backoff(delay: float, cap: float, rng: random.Random | None = None) -> tuple[float, float]:
    """The wait before the next attempt and the delay after it: exponential, capped, jittered.

    Args:
        delay: the current back-off delay.
        cap: the largest delay.
        rng: random source (tests); None: the module's.

    Returns:
        ``(wait, next_delay)``: ``wait`` is uniform in ``[delay/2, delay]`` (never above ``cap``), so replicas
        that lost the broker together do not come back in step; ``next_delay`` is ``min(2 * delay, cap)``.

    Example:
        >>> wait, nxt = next_backoff(4.0, 5.0, random.Random(1))
        >>> 2.0 <= wait <= 4.0, nxt
        (True, 5.0)
    """
    delay = min(delay, cap)
    wait = (rng or random).uniform(delay / 2, delay)
    return wait, min(delay * 2, cap)


def default_client_id(cfg: MqttConfig) -> str:
    """Stable per-host client id, so the persistent session survives restarts."""
    base = cfg.client_id or f"gridwatch-{socket.gethostname()}"
    return f"{base}-tickets"


class AlertConsumer:
    """Consumes alerts and camera health from MQTT into the ticket store.

    Args:
        cfg: MQTT settings (URL, credentials, prefix, shared group, keepalive).
        sessions: session factory of the ticket store.
        metrics: counters to bump (a private set when None).
        client_id: persistent client id; default :func:`default_client_id`.
        retry_seconds: first back-off after a connection or database failure, and before restarting a
            dead network thread (each doubles up to ``cfg.consumer_reconnect_max_seconds``, jittered).
        limits: size and depth bounds of inbound payloads.
        max_attempts: failed deliveries of one message before it is dead-lettered as ``unprocessable``.
        ctx: case rules; with them the consumer also takes camera check results
            (``<prefix>/check/result/+``, shared like alerts) and new tickets get deadlines.
    """

    def __init__(self, cfg: MqttConfig, sessions: sessionmaker[Session], metrics: TicketMetrics | None = None,
                 client_id: str | None = None, retry_seconds: float = 1.0,
                 limits: PayloadLimits = DEFAULT_LIMITS, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 ctx: CaseContext | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or TicketMetrics()
        self.client_id = client_id or default_client_id(cfg)
        self.handler = MessageHandler(sessions, cfg.topic_prefix, self.metrics, limits, max_attempts, ctx=ctx)
        self._retry = retry_seconds
        self._max_backoff = max(cfg.consumer_reconnect_max_seconds, retry_seconds)
        self.backoff_waits: list[float] = []
        """The last back-off waits taken (newest last, at most 20), for tests and debugging."""
        self.recovery = GapRecovery(sessions, cfg.topic_prefix, self.metrics, self._publish_nowait,
                                    retry_seconds=cfg.resend_retry_seconds, max_requests=cfg.resend_max_requests)
        self.handler.on_sequence = self.recovery.note_alert
        self._last_tick = 0.0
        self._delay = retry_seconds
        self._restart_delay = retry_seconds
        self._db_failing = False
        self._beat = time.monotonic()
        self._supervisor: threading.Thread | None = None
        self.address: BrokerAddress = broker_address(cfg, "service")  # its own broker user (ACL)
        self._host, self._port = self.address.host, self.address.port
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._redeliver = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                   clean_session=False, manual_ack=True, transport=self.address.transport)
        # The same URL parser as the worker's publisher: credentials, TLS and WebSockets from mqtt.url.
        configure_client(self._client, self.address, cfg)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # ------------------------------------------------------------------ topics
    @property
    def alert_topic(self) -> str:
        """The alert subscription filter (shared when a group is configured)."""
        return alert_filter(self.cfg.topic_prefix, self.cfg.shared_group)

    @property
    def health_topic(self) -> str:
        """The camera health subscription filter."""
        return health_filter(self.cfg.topic_prefix)

    @property
    def check_result_topic(self) -> str | None:
        """The camera check result filter (shared when a group is configured); None without case rules."""
        if self.handler.ctx is None:
            return None
        plain = check_result_topic(self.cfg.topic_prefix, "camera").rsplit("/", 1)[0] + "/+"
        return f"$share/{self.cfg.shared_group}/{plain}" if self.cfg.shared_group else plain

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> bool:
        """Publish at QoS 1 on the consumer's connection; True once the broker acknowledged it."""
        if not self.connected:
            return False
        try:
            info = self._client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout)
            return info.is_published()
        except (RuntimeError, ValueError) as exc:  # not connected / queue full / bad topic
            log.warning("publish to %s failed: %s", topic[:300], exc)
            return False

    @property
    def alive(self) -> bool:
        """True while the network thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True while the network thread runs and is connected to the broker."""
        return self.alive and self._connected.is_set()

    @property
    def stalled(self) -> bool:
        """True when the network loop has not come round for :data:`STALL_SECONDS` (stuck on a message)."""
        return self.alive and time.monotonic() - self._beat > STALL_SECONDS

    @property
    def store_failing(self) -> bool:
        """True since a write to the ticket store failed, until one succeeds."""
        return self.handler.store_failing

    @property
    def ready(self) -> bool:
        """True while a message arriving now would be processed: thread alive, connected, subscribed,
        not stalled and the store accepting writes."""
        return (self.connected and self._subscribed.is_set() and not self.stalled
                and not self.handler.store_failing)

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the supervised network thread (connects in the background, reconnecting with back-off)."""
        if self._supervisor is not None:
            return
        self._stop.clear()
        self.metrics.ready.set_function(lambda: 1.0 if self.ready else 0.0)
        self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="ticket-consumer-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect and join the network thread and its supervisor."""
        self._stop.set()
        for t in (self._supervisor, self._thread):
            if t is not None:
                t.join(timeout)
        self._supervisor = self._thread = None

    def _spawn(self) -> None:
        self._beat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="ticket-consumer", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        """Restart the network thread whenever it dies (it should not; this is the safety net)."""
        while not self._stop.is_set():
            thread = self._thread
            if thread is not None:
                thread.join(0.5)
                if thread.is_alive() or self._stop.is_set():
                    continue
            self._set_connected(False)
            self._redeliver.clear()
            wait, self._restart_delay = next_backoff(self._restart_delay, self._max_backoff)
            log.error("consumer thread died; restarting it in %.1f s", wait)
            self.metrics.restarts.inc()
            if self._stop.wait(wait):
                break
            self._spawn()

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # the thread ends here; the supervisor restarts it
            log.exception("consumer thread failed")

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        """Block until the subscriptions are acknowledged; False on timeout."""
        return self._subscribed.wait(timeout)

    def _serve(self) -> None:
        """Connect, loop, reconnect; returns only on stop (an exception is a thread death)."""
        while not self._stop.is_set():
            self._beat = time.monotonic()
            try:
                # connect() (not reconnect()) every time: it also resets a client left half-way by a
                # thread that died, and sets host and port.
                self._client.connect(self._host, self._port, keepalive=self.cfg.keepalive)
            except (OSError, ValueError) as exc:
                log.warning("MQTT connect to %s:%d failed: %s", self._host, self._port, exc)
                self._backoff()
                continue
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            ok = MQTTErrorCode.MQTT_ERR_SUCCESS
            while rc == ok and not self._stop.is_set() and not self._redeliver.is_set():
                self._beat = time.monotonic()
                rc = self._client.loop(timeout=0.5)
                self._recovery_tick()
            self._client.disconnect()
            self._client.loop(timeout=0.1)
            self._set_connected(False)
            if self._stop.is_set():
                break
            if self._redeliver.is_set():
                self._redeliver.clear()
                self._db_failing = True
                log.warning("reconnecting in %.1f s so the broker redelivers unacknowledged messages",
                            self._delay)
            else:
                log.warning("MQTT connection lost (%s); reconnecting in %.1f s", rc, self._delay)
            self._backoff()

    def _backoff(self) -> None:
        wait, self._delay = next_backoff(self._delay, self._max_backoff)
        self.backoff_waits = [*self.backoff_waits[-19:], wait]
        self._stop.wait(wait)

    def _recovery_tick(self) -> None:
        """Run the gap recovery about once a second while subscribed (in this thread: it publishes on this
        connection and reads the sequence state the message handling writes)."""
        now = time.monotonic()
        if self._subscribed.is_set() and now - self._last_tick >= RECOVERY_TICK_SECONDS:
            self._last_tick = now
            self.recovery.tick(now)

    def _publish_nowait(self, topic: str, payload: bytes) -> bool:
        """QoS 1 publish from the network thread (waiting for the PUBACK here would stall the loop)."""
        try:
            return self._client.publish(topic, payload, qos=1).rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        except (RuntimeError, ValueError) as exc:
            log.warning("publish to %s failed: %s", topic[:300], exc)
            return False

    def _set_connected(self, on: bool) -> None:
        if on:
            self._connected.set()  # the gauge goes to 1 once subscribed (_on_subscribe)
        else:
            self._connected.clear()
            self._subscribed.clear()
            self.metrics.connected.set(0)

    # --------------------------------------------------------------- callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connection refused: %s", reason)
            return
        log.info("consumer %s connected to %s:%d (session present: %s)", self.client_id, self._host,
                 self._port, flags.session_present)
        self._set_connected(True)
        if not self._db_failing:
            self._delay = self._retry
        topics = [(self.alert_topic, 1), (self.health_topic, 1), (status_filter(self.cfg.topic_prefix), 1)]
        if self.check_result_topic is not None:
            topics.append((self.check_result_topic, 1))
        client.subscribe(topics)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.error("subscription refused: %s", reasons)
            return
        self._restart_delay = self._retry
        self._subscribed.set()
        self.metrics.connected.set(1)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Any) -> None:
        self._set_connected(False)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._beat = time.monotonic()
        if self._redeliver.is_set():
            return  # leave it unacknowledged; it comes back after the reconnect
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # paho hands invalid UTF-8 topics through; dead-letter them readably
            topic = bytes(msg._topic).decode("utf-8", "replace")
        if parse_status_topic(topic, self.cfg.topic_prefix) is not None:
            self.recovery.on_status(topic, bytes(msg.payload))  # state, not a case: never dead-lettered
            client.ack(msg.mid, msg.qos)
            return
        if self.handle(topic, bytes(msg.payload)):
            client.ack(msg.mid, msg.qos)
            self._db_failing = False
        else:
            self.metrics.db_errors.inc()
            self._redeliver.set()

    # ----------------------------------------------------------------- handling
    def handle(self, topic: str, payload: bytes) -> bool:
        """Apply one message to the store (never raises; see :class:`MessageHandler`).

        Args:
            topic: MQTT topic it arrived on.
            payload: raw payload.

        Returns:
            True when its effect (ticket event, health row or dead letter) is committed and the message
            may be acknowledged; False when it must be redelivered.
        """
        return self.handler.handle(topic, payload)

