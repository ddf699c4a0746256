"""One MQTT URL parser for the worker's publisher and the ticket consumer: schemes, default ports,
credentials; both honour user:password@ on a real Mosquitto that requires a password (TCP and WebSockets)."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline.alerts.publisher import MqttPublisher
from pipeline.config import MqttConfig
from pipeline.mqtt_url import BrokerAddress, broker_address, parse_mqtt_url
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.models import Ticket
from tests.fixtures.mqtt import MOSQUITTO_BIN, MosquittoBroker, free_port
from tests.tickets.conftest import make_alert

USER, PASSWORD = "gw-api", "s3cr:t@p/ss"
PASSWORD_IN_URL = "s3cr%3At%40p%2Fss"  # percent-encoded, as a URL needs it


@pytest.mark.parametrize(("url", "expected"), [
    ("mqtt://broker", ("broker", 1883, False, "tcp", None)),
    ("tcp://broker:1999", ("broker", 1999, False, "tcp", None)),
    ("mqtts://broker", ("broker", 8883, True, "tcp", None)),
    ("ssl://broker:9000", ("broker", 9000, True, "tcp", None)),
    ("ws://broker", ("broker", 80, False, "websockets", "/mqtt")),
    ("ws://broker:9001/", ("broker", 9001, False, "websockets", "/")),
    ("wss://broker/mqtt/ws?x=1", ("broker", 443, True, "websockets", "/mqtt/ws?x=1")),
    ("MQTT://[::1]:1884", ("::1", 1884, False, "tcp", None)),
])
def test_schemes_and_default_ports(url: str, expected: tuple[object, ...]) -> None:
    a = parse_mqtt_url(url)
    assert (a.host, a.port, a.tls, a.transport, a.path) == expected


def test_credentials_are_percent_decoded_and_hidden_from_repr() -> None:
    a = parse_mqtt_url(f"mqtts://{USER}:{PASSWORD_IN_URL}@broker")
    assert (a.username, a.password) == (USER, PASSWORD)
    assert PASSWORD not in repr(a) and PASSWORD_IN_URL not in repr(a) and "password='***'" in repr(a)
    assert a.describe() == "mqtts://broker:8883"
    assert parse_mqtt_url("mqtt://user:@broker").password == ""


@pytest.mark.parametrize(("url", "message"), [
    ("broker:1883", "needs a scheme"),
    ("http://broker", "unknown scheme 'http'"),
    ("amqp://u:Hunter22@broker", "unknown scheme 'amqp'"),
    ("mqtt://", "has no host"),
    ("mqtt://u:Hunter22@:1883", "has no host"),
    ("mqtt://broker:0", "port 0"),
    ("mqtt://broker:http", "Port could not be cast"),
    ("mqtts://broker/topic", "has no path or query"),
])
def test_unusable_urls_are_refused_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as exc:
        parse_mqtt_url(url)
    assert "Hunter22" not in str(exc.value)


def test_config_fields_override_url_credentials() -> None:
    assert broker_address(MqttConfig(url="mqtt://a:b@h")) == BrokerAddress("h", 1883, False, "a", "b")
    assert broker_address(MqttConfig(url="mqtt://a:b@h", username="c")) == BrokerAddress("h", 1883, False, "c", "b")
    assert broker_address(MqttConfig(url="mqtt://a:b@h", password="d")).password == "d"
    assert broker_address(MqttConfig(embedded_port=1999)) == BrokerAddress("127.0.0.1", 1999, False)


def test_publisher_and_consumer_use_the_same_parser() -> None:
    from pipeline.alerts import publisher

    assert publisher.parse_mqtt_url is parse_mqtt_url
    cfg = MqttConfig(url=f"wss://{USER}:{PASSWORD_IN_URL}@broker.example:8084/mqtt")
    consumer = AlertConsumer(cfg, session_factory(init_db("sqlite:///:memory:")))
    pub = MqttPublisher(cfg, ":memory:", "w1")
    try:
        assert consumer.address == pub.address == parse_mqtt_url(cfg.url or "")
    finally:
        pub.stop(drain_timeout=0)


class AuthMosquitto(MosquittoBroker):
    """Mosquitto with an anonymous probe listener plus TCP and WebSocket listeners that need a password."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.tcp_port = free_port()
        self.ws_port = free_port()
        self.passwords = self.workdir / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(self.passwords), USER, PASSWORD], check=True)

    def _write_config(self) -> None:
        listener = f"allow_anonymous false\npassword_file {self.passwords}\n"
        self.conf.write_text(
            "per_listener_settings true\nuser root\n"
            f"listener {self.port} {self.host}\nallow_anonymous true\n"  # readiness probe only
            f"listener {self.tcp_port} {self.host}\n{listener}"
            f"listener {self.ws_port} {self.host}\nprotocol websockets\n{listener}"
            "max_queued_messages 0\n"
            f"log_dest file {self.log}\n")


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[AuthMosquitto]:
    if not Path(MOSQUITTO_BIN).exists():
        pytest.skip(f"mosquitto not found at {MOSQUITTO_BIN}")
    broker = AuthMosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


def _tickets(sessions: object) -> list[Ticket]:
    with sessions() as s:  # type: ignore[operator]
        return list(s.scalars(select(Ticket)))


def _wait(cond: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(cond())  # type: ignore[operator]


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["mqtt", "ws"])
def test_worker_and_service_both_log_in_with_url_credentials(auth_broker: AuthMosquitto, tmp_path: Path,
                                                             scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = auth_broker.tcp_port if scheme == "mqtt" else auth_broker.ws_port
    cfg = MqttConfig(url=f"{scheme}://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{port}", topic_prefix="gwtest",
                     shared_group=None)
    sessions = session_factory(init_db(f"sqlite:///{tmp_path}/tickets.db"))
    consumer = AlertConsumer(cfg, sessions, client_id=f"c-{scheme}", retry_seconds=0.2)
    publisher = MqttPublisher(cfg, tmp_path / "outbox.db", "w1", reconnect_min_seconds=1, reconnect_max_seconds=1)
    consumer.start()
    publisher.start()
    try:
        assert consumer.wait_subscribed(15), "the consumer did not log in with the URL's credentials"
        assert publisher.wait_connected(15), publisher.stats()
        alert = make_alert()
        publisher.publish_alert(alert)
        assert _wait(lambda: [t.incident_id for t in _tickets(sessions)] == [alert.incident_id])
    finally:
        publisher.stop(drain_timeout=1)
        consumer.stop()
    assert PASSWORD not in caplog.text and PASSWORD_IN_URL not in caplog.text


@pytest.mark.integration
def test_wrong_password_is_refused_for_both(auth_broker: AuthMosquitto, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cfg = MqttConfig(url=f"mqtt://{USER}:wrong-Hunter22@127.0.0.1:{auth_broker.tcp_port}", topic_prefix="gwtest")
    sessions = session_factory(init_db(f"sqlite:///{tmp_path}/tickets.db"))
    consumer = AlertConsumer(cfg, sessions, client_id="c-wrong", retry_seconds=0.2)
    publisher = MqttPublisher(cfg, tmp_path / "outbox.db", "w1", reconnect_min_seconds=1, reconnect_max_seconds=1)
    consumer.start()
    publisher.start()
    try:
        assert _wait(lambda: "connect refused" in str(publisher.stats()["last_error"]), 10), publisher.stats()
        assert not consumer.wait_subscribed(2) and not publisher.connected
    finally:
        publisher.stop(drain_timeout=0)
        consumer.stop()
    assert "wrong-Hunter22" not in caplog.text
