"""The ticket service's side of run-time cameras: retained config messages from the ``cameras`` table.

After every change the API calls :meth:`CameraConfigPublisher.push` with the changed rows; each live camera
goes out as a retained :class:`~pipeline.contract.camera_config.CameraConfigV1` on
``<prefix>/config/cameras/<id>``, each deleted one as an empty retained message (which also clears the
broker's copy), then the retained :class:`~pipeline.contract.camera_config.CameraIndexV1`. On every (re)connect
it publishes the whole table again, and again every ``resync_seconds`` (default 300), so a broker that lost its
retained store, changes made while it was down, or an older copy another API replica's sync left retained
reach the workers without anyone doing anything. Workers ignore a message whose revision they run already, so
the repeat costs them a parse per camera.

Publishing is asynchronous (paho queues QoS 1 messages while disconnected); ``published`` and ``failed`` count
what happened, also as ``gridwatch_camera_config_published_total{outcome}``.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import MqttConfig
from pipeline.contract.camera_config import CameraConfigV1, CameraIndexV1
from pipeline.contract.topics import camera_config_topic, camera_index_topic
from pipeline.mqtt_url import broker_address, configure_client
from pipeline.tickets.camera_store import CameraRow, current_revision, list_cameras
from pipeline.tickets.models import utcnow

log = logging.getLogger(__name__)


def config_message(row: CameraRow) -> bytes:
    """The retained payload of ``row``: its ``CameraConfigV1``, or empty for a deleted camera."""
    if row.deleted:
        return b""
    return CameraConfigV1(schema_version=1, camera_id=row.id, revision=row.revision, ts=row.updated_at,
                          camera=row.spec).to_bytes()


def index_message(session: Session) -> bytes:
    """The retained ``CameraIndexV1`` of the table now."""
    return CameraIndexV1(schema_version=1, revision=current_revision(session), ts=utcnow(),
                         camera_ids=[r.id for r in list_cameras(session)]).to_bytes()


class CameraConfigPublisher:
    """Publishes the ``cameras`` table as retained MQTT messages (its own connection, the service's user).

    Args:
        cfg: the site's MQTT settings.
        sessions: the ticket store.
        registry: where to register the publish counter (None: not exported).
        client_id: MQTT client id; default ``<client_id or gridwatch-<host>>-camera-config``.
        resync_seconds: how often the whole table is published again while connected.
    """

    def __init__(self, cfg: MqttConfig, sessions: sessionmaker[Session], registry: CollectorRegistry | None = None,
                 client_id: str | None = None, resync_seconds: float = 300.0) -> None:
        self.prefix = cfg.topic_prefix
        self.sessions = sessions
        self.published = 0
        self.failed = 0
        self._started = False
        self._lock = threading.Lock()
        self._resync_seconds = resync_seconds
        self._stop = threading.Event()
        self._resync: threading.Thread | None = None
        self._counter = Counter("gridwatch_camera_config_published", "Run-time camera config messages handed to "
                                "the broker client, by outcome (ok, failed).", ["outcome"],
                                registry=registry) if registry is not None else None
        self._address = broker_address(cfg, "service")
        base = cfg.client_id or f"gridwatch-{socket.gethostname()}"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=(client_id or f"{base}-camera-config")[:128],
                                   transport=self._address.transport)
        configure_client(self._client, self._address, cfg)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._on_connect

    def start(self) -> None:
        """Connect in the background; the first connection publishes the whole table."""
        if self._started:
            return
        self._started = True
        self._stop.clear()
        self._client.connect_async(self._address.host, self._address.port, keepalive=30)
        self._client.loop_start()
        self._resync = threading.Thread(target=self._resync_loop, name="gridwatch-camera-config-resync", daemon=True)
        self._resync.start()

    def stop(self) -> None:
        """Disconnect (messages not yet acknowledged are dropped; the next start publishes everything)."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
        if self._resync is not None:
            self._resync.join(timeout=5)

    def _resync_loop(self) -> None:
        while not self._stop.wait(self._resync_seconds):
            if self.connected:
                self.sync()

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return bool(self._client.is_connected())

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any = None) -> None:
        if reason_code.is_failure:
            log.warning("camera config publisher: broker refused the connection: %s", reason_code)
            return
        # Not in the network thread: a large table would hold the loop (and its keepalives) for a while.
        threading.Thread(target=self.sync, name="gridwatch-camera-config-sync", daemon=True).start()

    def _send(self, topic: str, payload: bytes) -> None:
        try:
            info = self._client.publish(topic, payload, qos=1, retain=True)
            ok = info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)  # NO_CONN: queued
        except (RuntimeError, ValueError) as exc:
            log.warning("camera config publish to %s failed: %s", topic, exc)
            ok = False
        if ok:
            self.published += 1
        else:
            self.failed += 1
            log.warning("camera config publish to %s was not queued; the next reconnect sends it", topic)
        if self._counter is not None:
            self._counter.labels("ok" if ok else "failed").inc()

    def push(self, rows: list[CameraRow]) -> None:
        """Publish the changed ``rows`` (live or deleted), then the index."""
        if not self._started:
            return
        with self._lock, self.sessions() as session:
            for row in rows:
                self._send(camera_config_topic(self.prefix, row.id), config_message(row))
            self._send(camera_index_topic(self.prefix), index_message(session))

    def sync(self) -> None:
        """Publish every row (tombstones as empty messages) and the index."""
        try:
            with self.sessions() as session:
                rows = list(session.scalars(select(CameraRow).order_by(CameraRow.revision)))
            self.push(rows)
            log.info("camera config: published %d camera(s) to the broker", len(rows))
        except Exception:  # noqa: BLE001 - a database outage must not kill the network thread's helper
            log.exception("camera config: publishing the table failed; the next reconnect retries")
