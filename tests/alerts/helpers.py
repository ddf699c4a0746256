"""Test helpers: an MQTT subscriber that records what it receives."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Collector:
    """A paho subscriber (QoS 1) that auto-reconnects and records messages in arrival order."""

    def __init__(self, host: str, port: int, topic: str, client_id: str | None = None,
                 clean_session: bool = True) -> None:
        self.topic = topic
        self.messages: list[Received] = []
        self._cv = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"collector-{time.monotonic_ns()}",
                                  clean_session=clean_session)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object,
                    props: object) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cv:
            self.messages.append(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cv.notify_all()

    def wait_for(self, n: int, timeout: float = 15.0) -> list[Received]:
        """Wait until at least ``n`` messages arrived; returns all received so far."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            return list(self.messages)

    def payloads(self, topic_prefix: str = "") -> list[bytes]:
        with self._cv:
            return [m.payload for m in self.messages if m.topic.startswith(topic_prefix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
