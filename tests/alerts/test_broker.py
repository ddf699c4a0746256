"""Embedded amqtt broker: paho-mqtt 2 clients, QoS 1 pub/sub and retained messages."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.alerts.broker import EmbeddedBroker, EmbeddedBrokerError
from tests.alerts.helpers import Collector


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker("127.0.0.1", 0)
    b.start()
    yield b
    b.stop()


def _publisher(b: EmbeddedBroker) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="emb-pub")
    c.connect(b.host, b.port)
    c.loop_start()
    return c


def test_port_zero_picks_a_free_port(broker: EmbeddedBroker) -> None:
    assert broker.port > 0 and broker.running
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    with socket.create_connection((broker.host, broker.port), timeout=2):
        pass


def test_qos1_pub_sub_in_order(broker: EmbeddedBroker) -> None:
    sub = Collector(broker.host, broker.port, "gw/alerts/T1/#")
    pub = _publisher(broker)
    try:
        for i in range(10):
            info = pub.publish(f"gw/alerts/T1/D1/C1/G1/cam1/{i}", str(i).encode(), qos=1)
            info.wait_for_publish(5)
            assert info.is_published()
        pub.publish("gw/alerts/T2/D1/C1/G1/cam1/x", b"other", qos=1).wait_for_publish(5)
        got = sub.wait_for(10)
        assert [m.payload for m in got] == [str(i).encode() for i in range(10)]
        assert all(m.qos == 1 for m in got)
    finally:
        sub.close()
        pub.disconnect()
        pub.loop_stop()


def test_retained_message_reaches_late_subscriber(broker: EmbeddedBroker) -> None:
    pub = _publisher(broker)
    try:
        pub.publish("gw/status/workers/w1", b'{"state":"online"}', qos=1, retain=True).wait_for_publish(5)
        sub = Collector(broker.host, broker.port, "gw/status/workers/+")
        try:
            got = sub.wait_for(1, timeout=5)
            assert got and got[0].payload == b'{"state":"online"}' and got[0].retain
        finally:
            sub.close()
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_stop_releases_port_and_busy_port_fails() -> None:
    b = EmbeddedBroker("127.0.0.1", 0)
    b.start()
    port = b.port
    try:
        with pytest.raises(EmbeddedBrokerError):
            EmbeddedBroker("127.0.0.1", port).start(timeout=5)
    finally:
        b.stop()
    assert not b.running
    b2 = EmbeddedBroker("127.0.0.1", port)  # the port is free again
    b2.start()
    b2.stop()
