"""MQTT consumer that turns alerts into tickets and health messages into ``camera_health`` rows.

Subscriptions (QoS 1, persistent session: ``clean_session=False`` and a stable client id, so alerts
published while the API is down are delivered when it comes back):

* ``$share/<shared_group>/<prefix>/alerts/#`` (``<prefix>/alerts/#`` when ``shared_group`` is None);
  with a shared group, several API replicas split the alerts between them.
* ``<prefix>/health/+``: retained camera health JSON.

Messages are acknowledged manually (paho ``manual_ack=True``) only after their effect is committed; a
malformed one is committed to ``dead_letters`` and acknowledged. When the database fails the message is
left unacknowledged and the consumer drops the connection and reconnects after a back-off, which makes
the broker redeliver it (MQTT session resumption), so nothing is acked and lost.

Example:
    >>> consumer = AlertConsumer(site.mqtt, session_factory(engine))  # doctest: +SKIP
    >>> consumer.start(); ...; consumer.stop()                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import MqttConfig
from pipeline.mqtt_url import BrokerAddress, broker_address, configure_client
from pipeline.tickets.metrics import TicketMetrics
from pipeline.tickets.payload import PayloadError, parse_alert, parse_health
from pipeline.tickets.service import apply_alert, record_dead_letter, upsert_camera_health

log = logging.getLogger(__name__)


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
        retry_seconds: first back-off after a connection or database failure (doubles up to 30 s).
    """

    def __init__(self, cfg: MqttConfig, sessions: sessionmaker[Session], metrics: TicketMetrics | None = None,
                 client_id: str | None = None, retry_seconds: float = 1.0) -> None:
        self.cfg = cfg
        self.metrics = metrics or TicketMetrics()
        self.client_id = client_id or default_client_id(cfg)
        self._sessions = sessions
        self._retry = retry_seconds
        self._delay = retry_seconds
        self._db_failing = False
        self.address: BrokerAddress = broker_address(cfg)
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
        t = f"{self.cfg.topic_prefix}/alerts/#"
        return f"$share/{self.cfg.shared_group}/{t}" if self.cfg.shared_group else t

    @property
    def health_topic(self) -> str:
        """The camera health subscription filter."""
        return f"{self.cfg.topic_prefix}/health/+"

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
        return self._connected.is_set()

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the network thread (connects in the background, reconnecting with back-off)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ticket-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect and join the network thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        """Block until the subscriptions are acknowledged; False on timeout."""
        return self._subscribed.wait(timeout)

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                if first:
                    self._client.connect(self._host, self._port, keepalive=self.cfg.keepalive)
                    first = False
                else:
                    self._client.reconnect()
            except (OSError, ValueError) as exc:
                log.warning("MQTT connect to %s:%d failed: %s", self._host, self._port, exc)
                self._backoff()
                continue
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            ok = MQTTErrorCode.MQTT_ERR_SUCCESS
            while rc == ok and not self._stop.is_set() and not self._redeliver.is_set():
                rc = self._client.loop(timeout=0.5)
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
        self._stop.wait(self._delay)
        self._delay = min(self._delay * 2, 30.0)

    def _set_connected(self, on: bool) -> None:
        if on:
            self._connected.set()
        else:
            self._connected.clear()
            self._subscribed.clear()
        self.metrics.connected.set(1 if on else 0)

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
        client.subscribe([(self.alert_topic, 1), (self.health_topic, 1)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.error("subscription refused: %s", reasons)
            return
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Any) -> None:
        self._set_connected(False)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._redeliver.is_set():
            return  # leave it unacknowledged; it comes back after the reconnect
        if self.handle(msg.topic, bytes(msg.payload)):
            client.ack(msg.mid, msg.qos)
            self._db_failing = False
        else:
            self.metrics.db_errors.inc()
            self._redeliver.set()

    # ----------------------------------------------------------------- handling
    def handle(self, topic: str, payload: bytes) -> bool:
        """Apply one message to the store.

        Args:
            topic: MQTT topic it arrived on.
            payload: raw payload.

        Returns:
            True when its effect (ticket event, health row or dead letter) is committed and the message
            may be acknowledged; False when the database failed.
        """
        prefix = self.cfg.topic_prefix
        try:
            if topic.startswith(f"{prefix}/health/"):
                if not payload:
                    return True  # a retained message being cleared
                camera_id, health = parse_health(topic, payload, prefix)
                upsert_camera_health(self._sessions, camera_id, health)
                self.metrics.health_messages.inc()
                return True
            alert = parse_alert(topic, payload, prefix)
            result = apply_alert(self._sessions, alert)
            self.metrics.alerts_consumed.labels(alert.event, result.outcome).inc()
            log.info("alert %s %s -> ticket %d (%s)", alert.incident_id, alert.event, result.ticket_id,
                     result.outcome)
            return True
        except PayloadError as exc:
            return self._dead_letter(topic, payload, exc)
        except SQLAlchemyError as exc:
            log.error("database error on %s, message left unacknowledged: %s", topic, exc)
            return False

    def _dead_letter(self, topic: str, payload: bytes, exc: PayloadError) -> bool:
        log.warning("dead letter from %s: %s", topic, exc)
        try:
            record_dead_letter(self._sessions, topic, payload, str(exc))
        except SQLAlchemyError as db_exc:
            log.error("could not store dead letter from %s: %s", topic, db_exc)
            return False
        self.metrics.dead_letters.labels(exc.kind).inc()
        return True

