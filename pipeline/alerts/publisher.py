"""Durable, in-order MQTT publisher of alerts (paho-mqtt 2).

``publish()`` only appends to the SQLite :class:`~pipeline.alerts.outbox.Outbox`; a sender thread
delivers the outbox strictly in order, one message in flight at a time, and deletes a row only
after the broker acknowledged it (PUBACK for QoS 1, PUBCOMP for QoS 2, written to the socket for
QoS 0). While the broker is unreachable the sender pauses and paho reconnects with exponential
backoff; a broker that is down at start-up neither blocks nor crashes the worker.

Delivery is *at least once*: a message in flight when the worker dies is sent again by the next
worker (possibly with a duplicate), which is why ``incident_id`` + ``event`` are idempotency keys
downstream. Within one publisher's lifetime paho re-sends an unacknowledged QoS 1 message itself
after a reconnect, so the sender never publishes the same row twice.

The worker's retained status ``<prefix>/status/workers/<worker_id>`` is ``{"state": "online", ...}``
after each connect, ``offline`` after a clean ``stop()``, and ``offline`` via the last will when the
process dies without disconnecting. It carries ``last_seq`` (the last alert number queued) once there is
one, and is published again each time the outbox has drained after sending something, so the ticket
service can tell when the tail of a stream (the last alerts, with no later one to show the gap) was lost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from pipeline.alerts.outbox import DEFAULT_ARCHIVE_MAX, DEFAULT_ARCHIVE_SECONDS, Outbox, OutboxItem, Requeued
from pipeline.config import MqttConfig
from pipeline.contract.messages import AlertV1, WorkerStatusV1
from pipeline.contract.topics import alert_topic, health_topic, status_topic
from pipeline.mqtt_url import BrokerAddress, broker_address, configure_client, parse_mqtt_url

log = logging.getLogger(__name__)

__all__ = ["BrokerAddress", "MqttPublisher", "default_worker_id", "parse_mqtt_url", "validate_publish_topic"]


def validate_publish_topic(topic: str) -> str:
    """Raise ValueError for topics a broker would refuse (empty, wildcards, NUL, too long)."""
    if not topic or "+" in topic or "#" in topic or "\x00" in topic or len(topic.encode()) > 65535:
        raise ValueError(f"invalid MQTT publish topic {topic!r}")
    return topic


class MqttPublisher:
    """Outbox-backed MQTT publisher with retained worker status and last will.

    Args:
        mqtt: broker settings (URL, credentials, TLS, topic prefix, keepalive).
        outbox_path: SQLite file of the outbox (shared by restarts of the same worker).
        worker_id: this worker's id (status topic level and client id suffix).
        host_port_override: connect here instead of ``mqtt.url`` (e.g. the embedded broker's port).
        reconnect_min_seconds: first reconnect delay.
        reconnect_max_seconds: reconnect delay cap (paho doubles the delay each try).
        archive_max: alerts kept per worker for resend requests (0: none).
        archive_seconds: archived alerts older than this are pruned.

    Example:
        >>> from pipeline.config import MqttConfig
        >>> pub = MqttPublisher(MqttConfig(url="mqtt://127.0.0.1:1"), ":memory:", "w1")
        >>> pub.start()                      # never blocks, even with no broker
        >>> pub.publish("gridwatch/alerts/T1/D1/C1/G1/cam1/fire", b"{}")
        1
        >>> pub.stats()["pending"]
        1
        >>> pub.stop(drain_timeout=0)
    """

    def __init__(self, mqtt: MqttConfig, outbox_path: str | Path, worker_id: str,
                 host_port_override: tuple[str, int] | None = None, *,
                 reconnect_min_seconds: float = 1.0, reconnect_max_seconds: float = 30.0,
                 archive_max: int = DEFAULT_ARCHIVE_MAX, archive_seconds: float = DEFAULT_ARCHIVE_SECONDS) -> None:
        self.cfg = mqtt
        self.worker_id = worker_id
        self.prefix = mqtt.topic_prefix
        self.status_topic = status_topic(mqtt.topic_prefix, worker_id)
        addr = broker_address(mqtt)
        if host_port_override is not None:
            # Same credentials, TLS and transport as the URL, another address.
            addr = dataclasses.replace(addr, host=host_port_override[0], port=int(host_port_override[1]))
        self.address = addr
        self.outbox = Outbox(outbox_path, archive_max, archive_seconds)
        self.client_id = f"{mqtt.client_id or 'gridwatch-' + socket.gethostname()}-{worker_id}"[:128]

        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                        protocol=MQTTProtocolVersion.MQTTv311, transport=addr.transport)
        c.enable_logger(logging.getLogger(f"{__name__}.paho"))
        c.will_set(self.status_topic, self._status_payload("offline", last_seq=False), qos=1, retain=True)
        configure_client(c, addr, mqtt)
        c.reconnect_delay_set(min_delay=max(1, round(reconnect_min_seconds)),
                              max_delay=max(1, round(reconnect_max_seconds)))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self._client = c

        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._sender: threading.Thread | None = None
        self._started = False
        self._stats_lock = threading.Lock()
        self._published = 0
        self._failures = 0
        self._connects = 0
        self._last_error: str | None = None
        self._status_stale = False  # something was sent since the last status (its last_seq is old)

    # -- public API ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (in the background) and the sender thread; returns immediately."""
        if self._started:
            return
        self._started = True
        self._stopping.clear()
        self._client.connect_async(self.address.host, self.address.port, keepalive=self.cfg.keepalive)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-sender-{self.worker_id}",
                                        daemon=True)
        self._sender.start()
        log.info("MQTT publisher %s -> %s", self.client_id, self.address.describe())

    def stop(self, drain_timeout: float = 2.0) -> None:
        """Wait up to ``drain_timeout`` for the outbox to empty, publish ``offline``, disconnect.

        Messages still pending stay in the outbox for the next start.
        """
        if not self._started:
            self.outbox.close()
            return
        deadline = time.monotonic() + drain_timeout
        while self._connected.is_set() and len(self.outbox) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        if self._sender is not None:
            self._sender.join(10)
        if self._connected.is_set():
            info = self._client.publish(self.status_topic, self._status_payload("offline"), qos=1,
                                        retain=True)
            try:
                info.wait_for_publish(timeout=3.0)
            except (RuntimeError, ValueError):
                log.warning("could not publish offline status")
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._started = False
        self.outbox.close()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Queue a message durably (returns its outbox id); the sender delivers it in order."""
        validate_publish_topic(topic)
        item_id = self.outbox.put(topic, payload, qos, retain)
        with self._wake:
            self._wake.notify_all()
        return item_id

    def publish_alert(self, alert: AlertV1) -> int:
        """Queue an alert on its topic with the configured QoS, stamped with ``worker_id`` and ``seq``.

        The sequence number is taken from the outbox in the same transaction that queues the alert, so
        the ticket service sees 1, 2, 3, ... per worker across restarts; any jump is a lost alert.
        """
        topic = validate_publish_topic(
            alert_topic(self.prefix, alert.grid.path, alert.camera.id, str(alert.hazard)))

        worker_id = self.worker_id[:200]  # the schema's bound

        def stamped(seq: int) -> bytes:
            return alert.model_copy(update={"worker_id": worker_id, "seq": seq}).to_bytes()

        item_id, _ = self.outbox.put_sequenced(worker_id, topic, stamped, qos=self.cfg.qos)
        with self._wake:
            self._wake.notify_all()
        return item_id

    def resend_archived(self, ranges: list[tuple[int, int]], limit: int) -> Requeued:
        """Queue this worker's archived alerts of ``ranges`` again (same bytes, through the outbox)."""
        done = self.outbox.requeue_archived(self.worker_id[:200], ranges, limit)
        with self._wake:
            self._wake.notify_all()
        return done

    def publish_health(self, camera_id: str, health: dict[str, Any]) -> bool:
        """Publish camera health as retained JSON on ``<prefix>/health/<camera_id>``.

        Not durable (only the latest state matters): returns False when not connected.
        """
        return self.publish_gauge(health_topic(self.prefix, camera_id), health)

    def publish_gauge(self, topic: str, value: dict[str, Any]) -> bool:
        """Publish a retained JSON state (health, occupancy) without the outbox.

        A gauge is superseded by the next one, so queueing stale states through an outage would only
        delay the fresh one: it is sent while connected and dropped (returns False) otherwise.
        """
        if not self._connected.is_set():
            return False
        validate_publish_topic(topic)
        payload = json.dumps(value, default=str).encode()
        info = self._client.publish(topic, payload, qos=1, retain=True)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected; False on timeout."""
        return self._connected.wait(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: published, pending, failures, connected, reconnects, ..."""
        with self._stats_lock:
            out: dict[str, Any] = {"published": self._published, "failures": self._failures,
                                   "reconnects": max(0, self._connects - 1), "last_error": self._last_error}
        out["connected"] = self._connected.is_set()
        try:
            out["pending"] = len(self.outbox)
            out["oldest_pending_age"] = self.outbox.oldest_age()
        except Exception:  # outbox closed after stop()
            out["pending"], out["oldest_pending_age"] = 0, None
        return out

    # -- paho callbacks (loop thread) ------------------------------------------------------------

    def _status_payload(self, state: Literal["online", "offline"], last_seq: bool = True) -> bytes:
        seq = self.outbox.last_seq(self.worker_id[:200]) if last_seq else 0
        return WorkerStatusV1(state=state, ts=datetime.now(UTC), last_seq=seq or None).to_bytes()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            self._error(f"connect refused: {reason_code}")
            return
        with self._stats_lock:
            self._connects += 1
        log.info("MQTT connected to %s:%d", self.address.host, self.address.port)
        client.publish(self.status_topic, self._status_payload("online"), qos=1, retain=True)
        self._connected.set()
        with self._wake:
            self._wake.notify_all()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stopping.is_set():
            self._error(f"disconnected: {reason_code}")
            log.warning("MQTT disconnected (%s); will reconnect", reason_code)

    def _error(self, msg: str) -> None:
        with self._stats_lock:
            self._failures += 1
            self._last_error = msg

    # -- sender thread ---------------------------------------------------------------------------

    def _idle(self, seconds: float) -> None:
        with self._wake:
            if not self._stopping.is_set():
                self._wake.wait(seconds)

    def _send_loop(self) -> None:
        inflight: tuple[OutboxItem, paho.MQTTMessageInfo] | None = None
        while not self._stopping.is_set():
            try:
                if inflight is None:
                    if not self._connected.is_set():
                        self._idle(0.2)
                        continue
                    items = self.outbox.peek(1)
                    if not items:
                        if self._status_stale:
                            self._status_stale = False
                            self._client.publish(self.status_topic, self._status_payload("online"), qos=1,
                                                 retain=True)
                        self._idle(0.5)
                        continue
                    inflight = self._send(items[0])
                    continue
                item, info = inflight
                info.wait_for_publish(timeout=0.2)
                if info.is_published():
                    self.outbox.ack(item.id)
                    with self._stats_lock:
                        self._published += 1
                    self._status_stale = True
                    inflight = None
            except RuntimeError as exc:
                # QoS 0 packet lost with the connection (or paho refused it): send the row again.
                self._error(f"publish failed: {exc}")
                inflight = None
                self._idle(0.2)
            except Exception as exc:  # never let the sender die
                log.exception("MQTT sender error")
                self._error(f"sender error: {exc}")
                inflight = None
                self._idle(1.0)

    def _send(self, item: OutboxItem) -> tuple[OutboxItem, paho.MQTTMessageInfo] | None:
        self.outbox.mark_attempt(item.id)
        try:
            info = self._client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
        except ValueError as exc:
            # A row paho can never send (bad topic/payload) would block the queue forever: drop it.
            log.error("dropping undeliverable outbox row %d on %r: %s", item.id, item.topic, exc)
            self._error(f"dropped row {item.id}: {exc}")
            self.outbox.ack(item.id)
            return None
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and item.qos > 0:
            # paho keeps QoS>0 messages queued and sends them after the reconnect.
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._error(f"publish rc={info.rc}")
            self._idle(0.2)
            return None
        return item, info


def default_worker_id() -> str:
    """``<hostname>-<pid>``, sanitised for a topic level."""
    raw = f"{socket.gethostname()}-{os.getpid()}"
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in raw)
