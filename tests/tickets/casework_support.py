"""Helpers of the case life cycle tests: a real MQTT publish function for the case loop, a subscriber that
records what arrives, a case context and a patrol user."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import SiteConfig
from pipeline.tickets.deadlines import CaseContext
from pipeline.tickets.users import add_user, get_user

T0 = 1_800_000_000.0
"""A real Unix time (2027-01-15) the tests' clocks start from."""


def utc(ts: float) -> datetime:
    """Aware UTC datetime of Unix seconds."""
    return datetime.fromtimestamp(ts, UTC)


def context(site: SiteConfig) -> CaseContext:
    """The case rules of ``site`` (as the app builds them)."""
    return CaseContext(site.casework, site.mqtt.topic_prefix, frozenset(c.id for c in site.cameras))


def add_patrol(sessions: sessionmaker[Session], username: str, scopes: list[str]) -> None:
    """Create an enabled patrol user (no password) unless it exists."""
    with sessions() as session, session.begin():
        if get_user(session, username) is None:
            add_user(session, username, "patrol", scopes, None, actor="test")


class MqttPublish:
    """The case loop's publish function over a real broker connection (QoS 1, waits for PUBACK)."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"svc-{uuid.uuid4().hex[:8]}")
        self.client.connect(host, port)
        self.client.loop_start()

    def __call__(self, topic: str, payload: bytes) -> bool:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        return info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber:
    """Records every message on ``filters`` (QoS 1) as ``(topic, parsed JSON)``."""

    def __init__(self, host: str, port: int, *filters: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(host, port)
        self.client.subscribe([(f, 1) for f in filters])
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        """A copy of what arrived so far."""
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
