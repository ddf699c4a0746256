"""The ticket consumer's reconnect back-off: doubling from ``retry_seconds``, capped at
``mqtt.consumer_reconnect_max_seconds`` (5 s by default, was 30 s), each wait jittered; a broker that comes up
on a port nobody answered on is subscribed to within the cap."""

from __future__ import annotations

import random
import uuid
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import MqttConfig
from pipeline.tickets.consumer import AlertConsumer, next_backoff

from .conftest import wait_for


def test_next_backoff_doubles_caps_and_jitters() -> None:
    rng = random.Random(8)
    delay, waits, delays = 1.0, [], []
    for _ in range(8):
        wait, delay = next_backoff(delay, 5.0, rng)
        waits.append(wait)
        delays.append(delay)
    assert delays == [2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    bounds = [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert all(b / 2 <= w <= b for w, b in zip(waits, bounds, strict=True)), waits
    assert len({round(w, 6) for w in waits[3:]}) == 5  # at the cap the waits still differ
    # a delay above a (lowered) cap is cut to it at once
    wait, nxt = next_backoff(30.0, 5.0, rng)
    assert wait <= 5.0 and nxt == 5.0


def test_consumer_uses_the_configured_cap(mosquitto: Any, sessions: sessionmaker[Session]) -> None:
    assert MqttConfig().consumer_reconnect_max_seconds == 5.0
    broker = mosquitto(start=False)  # a port nobody answers on yet
    cfg = MqttConfig(url=broker.url, topic_prefix="gwtest", consumer_reconnect_max_seconds=0.4)
    consumer = AlertConsumer(cfg, sessions, client_id=f"bo-{uuid.uuid4().hex[:8]}", retry_seconds=0.1)
    consumer.start()
    try:
        wait_for(lambda: len(consumer.backoff_waits) >= 8, timeout=20)
        waits = list(consumer.backoff_waits)
        assert max(waits) <= 0.4 and min(waits) >= 0.05, waits
        assert len({round(w, 6) for w in waits}) == len(waits)  # jittered
        broker.start()
        assert consumer.wait_subscribed(10)
    finally:
        consumer.stop()
