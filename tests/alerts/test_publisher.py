"""MqttPublisher against a real Mosquitto: order, durability across broker and worker restarts,
retained status and last will."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.alerts.outbox import Outbox
from pipeline.alerts.publisher import MqttPublisher, parse_mqtt_url, validate_publish_topic
from pipeline.alerts.schema import example_alert
from pipeline.config import MqttConfig
from pipeline.contract.messages import WorkerStatusV1
from tests.alerts.helpers import Collector
from tests.fixtures.mqtt import MosquittoBroker

REPO = Path(__file__).resolve().parents[2]
PREFIX = "gw"
ALERTS = f"{PREFIX}/alerts/T1/D1/C1/G1/cam1"


def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def make_publisher(tmp_path: Path) -> Iterator[Callable[..., MqttPublisher]]:
    made: list[MqttPublisher] = []

    def make(broker: MosquittoBroker, worker_id: str = "w1", outbox: Path | None = None) -> MqttPublisher:
        p = MqttPublisher(MqttConfig(url=broker.url, topic_prefix=PREFIX, keepalive=5),
                          outbox or tmp_path / "outbox.db", worker_id,
                          reconnect_min_seconds=1, reconnect_max_seconds=1)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop(drain_timeout=0)


@pytest.mark.parametrize(("url", "host", "port", "tls", "user"), [
    ("mqtt://broker", "broker", 1883, False, None),
    ("mqtt://127.0.0.1:1999", "127.0.0.1", 1999, False, None),
    ("mqtts://u%40x:p@b.example", "b.example", 8883, True, "u@x"),
    ("mqtts://b.example:9000", "b.example", 9000, True, None),
])
def test_parse_url(url: str, host: str, port: int, tls: bool, user: str | None) -> None:
    a = parse_mqtt_url(url)
    assert (a.host, a.port, a.tls, a.username) == (host, port, tls, user)


@pytest.mark.parametrize("bad", ["http://x", "mqtt://", "broker:1883"])
def test_parse_url_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_mqtt_url(bad)


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "a\x00b"])
def test_publish_rejects_bad_topics(topic: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        validate_publish_topic(topic)
    p = MqttPublisher(MqttConfig(url="mqtt://127.0.0.1:1"), tmp_path / "o.db", "w1")
    try:
        with pytest.raises(ValueError):
            p.publish(topic, b"x")
        assert len(p.outbox) == 0
    finally:
        p.stop()


def test_tls_and_credentials_configured(tmp_path: Path) -> None:
    cfg = MqttConfig(url="mqtts://user:pw@broker.example", tls_insecure=True)
    p = MqttPublisher(cfg, tmp_path / "o.db", "w1")
    try:
        assert p.address.tls and p.address.port == 8883
        assert p._client._ssl_context is not None and p._client._tls_insecure
        assert p._client._username == b"user" and p._client._password == b"pw"
    finally:
        p.stop()


def test_broker_down_at_start_does_not_block(tmp_path: Path) -> None:
    p = MqttPublisher(MqttConfig(url="mqtt://127.0.0.1:1"), tmp_path / "o.db", "w1")
    t0 = time.monotonic()
    p.start()
    for i in range(3):
        p.publish(f"gw/alerts/x/{i}", b"x")
    time.sleep(0.5)
    st = p.stats()
    assert time.monotonic() - t0 < 3
    assert st["pending"] == 3 and st["published"] == 0 and not st["connected"]
    p.stop(drain_timeout=0)
    assert time.monotonic() - t0 < 8


def test_delivers_in_order(mosquitto: Callable[..., MosquittoBroker],
                           make_publisher: Callable[..., MqttPublisher]) -> None:
    broker = mosquitto()
    sub = Collector(broker.host, broker.port, f"{PREFIX}/alerts/#")
    pub = make_publisher(broker)
    pub.start()
    try:
        for i in range(20):
            pub.publish(f"{ALERTS}/parking", f"{i}".encode(), qos=1 if i % 5 else 0)
        pub.publish_alert(example_alert())
        got = sub.wait_for(21)
        assert [m.payload for m in got[:20]] == [f"{i}".encode() for i in range(20)]
        assert got[20].topic == "gw/alerts/T1/D1/C1/G1/cam1/parking"
        assert json.loads(got[20].payload)["incident_id"] == example_alert().incident_id
        assert wait_until(lambda: pub.stats()["pending"] == 0)
        assert pub.stats()["published"] == 21
    finally:
        sub.close()


def test_broker_restart_delivers_exactly_once_in_order(
        mosquitto: Callable[..., MosquittoBroker], make_publisher: Callable[..., MqttPublisher]) -> None:
    broker = mosquitto()
    sub = Collector(broker.host, broker.port, f"{PREFIX}/alerts/#", client_id="patrol-g1",
                    clean_session=False)
    pub = make_publisher(broker)
    pub.start()
    assert pub.wait_connected(10)
    try:
        broker.stop()
        assert wait_until(lambda: not pub.connected, 10)
        for i in range(5):
            pub.publish(f"{ALERTS}/fire", f"alert-{i}".encode())
        time.sleep(0.5)
        assert pub.stats()["pending"] == 5
        broker.start()
        got = sub.wait_for(5, timeout=30)
        assert [m.payload for m in got] == [f"alert-{i}".encode() for i in range(5)]
        assert wait_until(lambda: pub.stats()["pending"] == 0)
        time.sleep(1.5)  # nothing more may arrive (no duplicates)
        assert len(sub.messages) == 5
        assert pub.stats()["reconnects"] >= 1
    finally:
        sub.close()


def test_worker_restart_with_pending_outbox(mosquitto: Callable[..., MosquittoBroker],
                                            make_publisher: Callable[..., MqttPublisher],
                                            tmp_path: Path) -> None:
    broker = mosquitto()
    sub = Collector(broker.host, broker.port, f"{PREFIX}/alerts/#", client_id="consumer",
                    clean_session=False)
    first = make_publisher(broker)
    first.start()
    try:
        first.publish(f"{ALERTS}/parking", b"m0")
        assert sub.wait_for(1)[0].payload == b"m0"
        broker.stop()
        for i in range(1, 4):
            first.publish(f"{ALERTS}/parking", f"m{i}".encode())
        first.stop(drain_timeout=0)  # worker goes away while the broker is down
        second = make_publisher(broker)  # new process, same outbox file
        assert second.stats()["pending"] == 3
        second.start()
        second.publish(f"{ALERTS}/parking", b"m4")
        broker.start()
        got = sub.wait_for(5, timeout=30)
        assert [m.payload for m in got] == [f"m{i}".encode() for i in range(5)]
        assert wait_until(lambda: second.stats()["pending"] == 0)
    finally:
        sub.close()


def _status(sub: Collector) -> list[str]:
    return [json.loads(m.payload)["state"] for m in sub.messages]


def test_retained_online_then_offline_on_clean_stop(mosquitto: Callable[..., MosquittoBroker],
                                                    make_publisher: Callable[..., MqttPublisher]) -> None:
    broker = mosquitto()
    pub = make_publisher(broker, worker_id="w7")
    pub.start()
    assert pub.wait_connected(10)
    time.sleep(0.3)
    late = Collector(broker.host, broker.port, f"{PREFIX}/status/workers/+")
    try:
        got = late.wait_for(1, timeout=5)
        assert got and got[0].topic == "gw/status/workers/w7" and got[0].retain
        payload = json.loads(got[0].payload)
        assert payload["state"] == "online" and payload["ts"].endswith("Z")
        # The contract's model, and the bytes older consumers saw (json.dumps spacing, state first).
        assert WorkerStatusV1.model_validate_json(got[0].payload).state == "online"
        assert got[0].payload == json.dumps({"state": "online", "ts": payload["ts"]}).encode()
        pub.stop()
        assert wait_until(lambda: _status(late)[-1:] == ["offline"], 5)
    finally:
        late.close()
    again = Collector(broker.host, broker.port, "gw/status/workers/w7")
    try:
        got = again.wait_for(1, timeout=5)
        assert got and got[0].retain and json.loads(got[0].payload)["state"] == "offline"
    finally:
        again.close()


CHILD = textwrap.dedent("""
    import sys, time
    from pipeline.alerts.publisher import MqttPublisher
    from pipeline.config import MqttConfig
    p = MqttPublisher(MqttConfig(url=sys.argv[1], topic_prefix="gw", keepalive=5), sys.argv[2], "doomed")
    p.start()
    assert p.wait_connected(10)
    print("ready", flush=True)
    time.sleep(60)
""")


def test_last_will_offline_when_worker_dies(mosquitto: Callable[..., MosquittoBroker],
                                            tmp_path: Path) -> None:
    broker = mosquitto()
    watch = Collector(broker.host, broker.port, f"{PREFIX}/status/workers/doomed")
    child = subprocess.Popen([sys.executable, "-c", CHILD, broker.url, str(tmp_path / "child.db")],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert wait_until(lambda: _status(watch) == ["online"], 10), _status(watch)
        child.kill()  # no DISCONNECT: the broker must publish the will
        child.wait(10)
        assert wait_until(lambda: _status(watch)[-1:] == ["offline"], 15), _status(watch)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        watch.close()
    late = Collector(broker.host, broker.port, f"{PREFIX}/status/workers/doomed")
    try:
        got = late.wait_for(1, timeout=5)
        assert got and got[0].retain and json.loads(got[0].payload)["state"] == "offline"
    finally:
        late.close()


def test_publish_health_retained(mosquitto: Callable[..., MosquittoBroker],
                                 make_publisher: Callable[..., MqttPublisher]) -> None:
    broker = mosquitto()
    pub = make_publisher(broker)
    assert pub.publish_health("cam1", {"camera_id": "cam1", "state": "streaming"}) is False  # not started
    pub.start()
    assert pub.wait_connected(10)
    assert pub.publish_health("cam1", {"camera_id": "cam1", "state": "streaming"})
    time.sleep(0.3)
    late = Collector(broker.host, broker.port, f"{PREFIX}/health/+")
    try:
        got = late.wait_for(1, timeout=5)
        assert got and got[0].topic == "gw/health/cam1" and got[0].retain
        assert json.loads(got[0].payload)["state"] == "streaming"
    finally:
        late.close()


class SilentBroker:
    """Accepts MQTT connections (CONNACK 0) but never acknowledges a PUBLISH."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.received = bytearray()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            while True:
                conn, _ = self.sock.accept()
                self._conns.append(conn)
                conn.recv(4096)  # CONNECT
                conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
                while chunk := conn.recv(4096):
                    self.received += chunk
        except OSError:
            pass

    def close(self) -> None:
        for c in self._conns:
            c.close()
        self.sock.close()


def test_row_kept_until_puback(tmp_path: Path) -> None:
    fake = SilentBroker()
    p = MqttPublisher(MqttConfig(url=f"mqtt://127.0.0.1:{fake.port}", topic_prefix=PREFIX, keepalive=60),
                      tmp_path / "o.db", "w1")
    try:
        p.start()
        assert p.wait_connected(10)
        p.publish(f"{ALERTS}/fire", b"unacked-alert")
        assert wait_until(lambda: b"unacked-alert" in fake.received, 10)
        time.sleep(1.0)
        st = p.stats()
        assert st["pending"] == 1 and st["published"] == 0
        assert p.outbox.peek(1)[0].attempts == 1  # sent once, not re-sent in a loop
    finally:
        p.stop(drain_timeout=0)
        fake.close()
    with Outbox(tmp_path / "o.db") as ob:
        assert [i.payload for i in ob.peek(5)] == [b"unacked-alert"]
