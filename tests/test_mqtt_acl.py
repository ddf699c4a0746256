"""`gridwatch mqtt-acl` against a real Mosquitto: patrol users see only their cells, nobody without a
role publishes alerts, the worker and the ticket consumer still work with their logins, also over TLS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from pipeline.alerts.publisher import MqttPublisher
from pipeline.config import MqttConfig, SiteConfig
from pipeline.mqtt_acl import (
    AclError,
    BrokerUser,
    db_principals,
    render_acl,
    site_principals,
    write_broker_files,
)
from pipeline.mqtt_passwd import mosquitto_hash, parse_passwd, verify_mosquitto_hash
from pipeline.mqtt_url import broker_address, configure_client
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.models import Ticket
from tests.fixtures.mqtt import MosquittoBroker, free_port
from tests.tickets.conftest import CAMERAS, GRID, make_alert, topic_of, wait_for

PATROL_USERS = [BrokerUser("li", "patrol", ("G1",), "li-pass"),  # cell code
                BrokerUser("wang", "patrol", ("T1/D1/C1/G2",), "wang-pass")]  # grid path


def make_site(tmp_path: Path, url: str, **mqtt: Any) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": GRID, "cameras": CAMERAS,
        "api": {"database_url": f"sqlite:///{tmp_path}/tickets.db", "evidence_dir": str(tmp_path / "ev")},
        "mqtt": {"url": url, "topic_prefix": "gwtest", "username": "worker", "password": "worker-pass",
                 "service_username": "tickets", "service_password": "tickets-pass", **mqtt}})


@dataclass
class Client:
    """A paho client with a user name, collecting (topic, payload) of what it receives."""

    broker: MosquittoBroker
    username: str | None
    password: str | None = None
    received: list[tuple[str, bytes]] = field(default_factory=list)
    connack: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        if self.username is not None:
            self.c.username_pw_set(self.username, self.password)
        self.c.on_connect = lambda c, u, flags, reason, props: self.connack.append(reason)
        self.c.on_message = lambda c, u, msg: self.received.append((msg.topic, bytes(msg.payload)))
        self.c.connect(self.broker.host, self.broker.port)
        self.c.loop_start()
        wait_for(lambda: self.connack)

    @property
    def refused(self) -> bool:
        return bool(self.connack[0].is_failure)

    def subscribe(self, *filters: str) -> None:
        granted: list[Any] = []
        self.c.on_subscribe = lambda c, u, mid, codes, props: granted.append(codes)
        self.c.subscribe([(f, 1) for f in filters])
        wait_for(lambda: granted)

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1; returns once acknowledged, or once the broker dropped the connection.

        Mosquitto 2.0.11 drops a denied QoS 1 message and answers a 3.1.1 client with a PUBACK that
        carries an MQTT 5 reason code (135, not authorised); paho takes it as a protocol error and
        disconnects.
        """
        info = self.c.publish(topic, payload, qos=1)
        wait_for(lambda: info.is_published() or not self.c.is_connected())

    def topics(self) -> list[str]:
        return [t for t, _ in self.received]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@dataclass
class Secured:
    broker: MosquittoBroker
    site: SiteConfig
    out: Path
    clients: list[Client] = field(default_factory=list)

    def client(self, username: str | None, password: str | None = None) -> Client:
        c = Client(self.broker, username, password)
        self.clients.append(c)
        return c


Secure = Callable[..., Secured]


@pytest.fixture
def secure(mosquitto: Callable[..., MosquittoBroker], tmp_path: Path) -> Iterator[Secure]:
    """Factory: a private Mosquitto that loads the files `write_broker_files` made for a test site."""
    made: list[Secured] = []

    def make(users: list[BrokerUser] = PATROL_USERS, extra_config: str = "", **mqtt: Any) -> Secured:
        broker = mosquitto(start=False)
        site = make_site(tmp_path, broker.url, **mqtt)
        out = tmp_path / "mqtt"
        write_broker_files(site, site_principals(site) + users, out)
        broker.extra_config = (out / "auth.conf").read_text() + extra_config  # what an operator includes
        broker.start()
        s = Secured(broker, site, out)
        made.append(s)
        return s

    yield make
    for s in made:
        for c in s.clients:
            c.close()


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = init_db(f"sqlite:///{tmp_path}/tickets.db")
    yield session_factory(engine)
    engine.dispose()


def _started_publisher(mqtt: MqttConfig, tmp_path: Path) -> MqttPublisher:
    pub = MqttPublisher(mqtt, tmp_path / f"outbox-{uuid.uuid4().hex[:6]}.db", "w1")
    pub.start()
    assert pub.wait_connected(10), "worker could not log in"
    return pub


# -- the files -------------------------------------------------------------------------------


def test_the_service_has_its_own_broker_login() -> None:
    cfg = MqttConfig(url="mqtts://wk:wk-pass@broker:8883", service_username="api", service_password="api-pass")
    worker, service = broker_address(cfg), broker_address(cfg, "service")
    assert (worker.username, worker.password, service.username, service.password) == ("wk", "wk-pass", "api",
                                                                                        "api-pass")
    assert (service.host, service.port, service.tls) == ("broker", 8883, True)
    shared = MqttConfig(url="mqtt://wk:wk-pass@broker")  # no service login: both use the worker's
    assert broker_address(shared, "service").username == "wk"
    with pytest.raises(ValueError, match="service_password needs a user name"):
        MqttConfig(url="mqtt://broker", service_password="x")


def test_files_are_stable_and_follow_passwords(tmp_path: Path) -> None:
    site = make_site(tmp_path, "mqtt://127.0.0.1:1883")
    out = tmp_path / "mqtt"
    first = write_broker_files(site, site_principals(site) + PATROL_USERS, out)
    assert sorted(first.changed) == ["acl", "auth.conf", "passwd"] and first.users == ["li", "tickets", "wang",
                                                                                         "worker"]
    hashes = parse_passwd((out / "passwd").read_text())
    assert verify_mosquitto_hash(hashes["li"], "li-pass") and not verify_mosquitto_hash(hashes["li"], "wang-pass")
    assert (out / "passwd").stat().st_mode & 0o777 == 0o600
    assert write_broker_files(site, site_principals(site) + PATROL_USERS, out).changed == []  # no new salts
    moved = [BrokerUser("li", "patrol", ("G1",), "new-pass"), PATROL_USERS[1]]
    assert write_broker_files(site, site_principals(site) + moved, out).changed == ["passwd"]
    assert parse_passwd((out / "passwd").read_text())["wang"] == hashes["wang"]


def test_acl_rules(tmp_path: Path) -> None:
    site = make_site(tmp_path, "mqtt://127.0.0.1:1883")
    acl = render_acl(site, site_principals(site) + PATROL_USERS)
    blocks = {b.split("\n", 1)[0]: b for b in acl.split("user ")[1:]}
    assert not any(line.startswith("topic") for line in acl.split("user ")[0].splitlines())  # anonymous: none
    assert [line for line in blocks["li"].splitlines() if line.startswith("topic")] == [
        "topic read gwtest/alerts/T1/D1/C1/G1/#", "topic read gwtest/notify/T1/D1/C1/G1/#"]
    assert "topic write gwtest/alerts/#" in blocks["worker"] and "read gwtest/alerts" not in blocks["worker"]
    assert "topic read $share/gridwatch-api/gwtest/alerts/#" in blocks["tickets"]
    assert "write gwtest/alerts" not in blocks["tickets"]


def test_emqx_rules_mirror_the_mosquitto_ones(tmp_path: Path) -> None:
    site = make_site(tmp_path, "mqtt://127.0.0.1:1883")
    write_broker_files(site, site_principals(site) + PATROL_USERS, tmp_path / "mqtt", emqx=True)
    rules = [line for line in (tmp_path / "mqtt" / "emqx" / "acl.conf").read_text().splitlines()
             if line.startswith("{")]
    assert rules[-1] == "{deny, all}."  # first match wins: anonymous and everyone unnamed get nothing
    assert [r for r in rules if '"li"' in r] == [
        '{allow, {username, "li"}, subscribe, ["gwtest/alerts/T1/D1/C1/G1/#", "gwtest/notify/T1/D1/C1/G1/#"]}.']
    worker = [r for r in rules if '"worker"' in r]
    assert worker[0].startswith('{allow, {username, "worker"}, publish, ["gwtest/alerts/#"')
    assert not list((tmp_path / "mqtt").glob("*.conf"))[1:]  # only auth.conf where Mosquitto includes *.conf


def test_one_login_for_worker_and_service_gets_both_rule_sets_and_a_warning(tmp_path: Path) -> None:
    site = make_site(tmp_path, "mqtt://127.0.0.1:1883", service_username=None, service_password=None)
    report = write_broker_files(site, site_principals(site), tmp_path / "mqtt")
    assert report.users == ["worker"] and "cannot keep them apart" in report.warnings[0]
    acl = (tmp_path / "mqtt" / "acl").read_text()
    assert "topic readwrite gwtest/alerts/#" in acl and "topic readwrite gwtest/debug/reply/#" in acl


@pytest.mark.parametrize(("user", "message"), [
    (BrokerUser("ghost", "patrol", ("G77",), "x"), "no grid node 'G77'"),
    (BrokerUser("zhao", "dispatcher", (), "x"), "needs at least one grid scope"),
    (BrokerUser("root", "superuser", (), "x"), "unknown role 'superuser'"),
    (BrokerUser("a b", "viewer", ("G1",), "x"), "must match"),
    (BrokerUser("worker", "patrol", ("G1",), "x"), "given twice"),
])
def test_bad_users_are_refused_and_nothing_is_written(tmp_path: Path, user: BrokerUser, message: str) -> None:
    site = make_site(tmp_path, "mqtt://127.0.0.1:1883")
    with pytest.raises(AclError, match=message):
        write_broker_files(site, site_principals(site) + [user], tmp_path / "mqtt")
    assert not (tmp_path / "mqtt").exists()


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_hashes_match_mosquitto_passwd(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "alice", "s3cret"], check=True)
    theirs = parse_passwd(pw.read_text())["alice"]
    assert verify_mosquitto_hash(theirs, "s3cret") and not verify_mosquitto_hash(theirs, "s3cret!")
    _, _, iterations, salt, _ = theirs.split("$")
    import base64

    assert mosquitto_hash("s3cret", base64.b64decode(salt), int(iterations)) == theirs


# -- a real Mosquitto with the files ---------------------------------------------------------


def test_patrol_user_reads_only_its_own_cell(secure: Secure, tmp_path: Path) -> None:
    s = secure()
    li, wang = s.client("li", "li-pass"), s.client("wang", "wang-pass")
    li.subscribe("gwtest/alerts/#", "gwtest/alerts/T1/D1/C1/G2/#")  # asks for everything, and for G2 by name
    wang.subscribe("gwtest/alerts/#")
    pub = _started_publisher(s.site.mqtt, tmp_path)
    alerts = [make_alert(camera=c) for c in ("cam2", "cam1", "cam2", "cam1")]  # G2, G1, G2, G1
    for a in alerts:
        pub.publish_alert(a)
    wait_for(lambda: len(li.received) == 2 and len(wang.received) == 2)
    wait_for(lambda: pub.stats()["pending"] == 0)
    pub.stop()
    assert li.topics() == [topic_of(alerts[1]), topic_of(alerts[3])]  # G1 only, none of G2
    assert wang.topics() == [topic_of(alerts[0]), topic_of(alerts[2])]


def test_anonymous_and_patrol_clients_cannot_publish_alerts(secure: Secure, tmp_path: Path) -> None:
    s = secure()
    watcher = s.client("tickets", "tickets-pass")
    watcher.subscribe("gwtest/alerts/#", "gwtest/notify/#")
    anonymous = s.client(None)
    assert anonymous.refused  # no anonymous login at all
    assert s.client("li", "wrong-pass").refused
    li = s.client("li", "li-pass")
    forged = make_alert(camera="cam1")
    li.publish(topic_of(forged), forged.to_bytes())  # its own cell: still read-only
    s.client("worker", "worker-pass").publish("gwtest/notify/T1/D1/C1/G1", b"{}")  # not the service's
    real = make_alert(camera="cam1")
    s.client("worker", "worker-pass").publish(topic_of(real), real.to_bytes())  # the marker: all before it is routed
    wait_for(lambda: watcher.received)
    assert watcher.received == [(topic_of(real), real.to_bytes())]


def test_worker_and_consumer_work_with_their_logins(secure: Secure, tmp_path: Path,
                                                    sessions: sessionmaker[Session]) -> None:
    s = secure()
    assert s.site.mqtt.shared_group  # the consumer subscribes with $share/<group>/...
    consumer = AlertConsumer(s.site.mqtt, sessions, client_id="t-tickets", retry_seconds=0.2)
    consumer.start()
    try:
        assert consumer.wait_subscribed(10)
        pub = _started_publisher(s.site.mqtt, tmp_path)
        alert = make_alert(camera="cam2", hazard="fire", zone=None)
        pub.publish_alert(alert)
        [t] = wait_for(lambda: _tickets(sessions))
        pub.stop()
    finally:
        consumer.stop()
    assert (t.incident_id, t.grid_path) == (alert.incident_id, "T1/D1/C1/G2")


def test_debug_view_round_trip_with_logins(secure: Secure) -> None:
    from pipeline.debug_view import DebugFrames, DebugRequester, DebugResponder

    s = secure()
    responder = DebugResponder(s.site.mqtt, "t-debug-worker", DebugFrames(), ["cam1"])
    responder.start()
    requester = DebugRequester(s.site.mqtt, "t-debug-api", connect_timeout=10)
    # A request sent before the worker's subscription is in place reaches no one (QoS 0, as in production,
    # where the API answers 504 and the page asks again): wait for it, or a busy machine loses the race.
    assert responder.subscribed.wait(15), "the worker's debug subscription was never acknowledged"
    try:
        # cam1 has no analysed frame: its worker answers with an empty reply (None = no answer at all)
        assert requester.fetch("cam1", timeout=15) == b""
    finally:
        requester.stop()
        responder.stop()
    assert responder.empty == 1


def test_ticket_users_get_broker_logins(secure: Secure, tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    from pipeline.tickets.auth import hash_password
    from pipeline.tickets.users import add_user

    with sessions() as db:  # argon2 login hashes: Mosquitto cannot read them, so a broker password is made
        add_user(db, "zhou", "patrol", ["T1/D1/C1/G1"], hash_password("web-login"))
        add_user(db, "old", "viewer", ["T1"], None)
        db.commit()
    site = make_site(tmp_path, "mqtt://127.0.0.1:1")
    users = db_principals(site)
    assert [(u.username, u.role, u.grid_scopes) for u in users] == [("old", "viewer", ("T1",)),
                                                                     ("zhou", "patrol", ("T1/D1/C1/G1",))]
    s = secure(users=users)
    generated = dict(line.split(":", 1) for line in (s.out / "new-passwords.txt").read_text().splitlines()[1:])
    assert sorted(generated) == ["old", "zhou"]
    assert s.client("zhou", "web-login").refused
    zhou = s.client("zhou", generated["zhou"])
    assert not zhou.refused
    zhou.subscribe("gwtest/alerts/#")
    worker = s.client("worker", "worker-pass")
    g2, g1 = make_alert(camera="cam2"), make_alert(camera="cam1")
    for a in (g2, g1):
        worker.publish(topic_of(a), a.to_bytes())
    wait_for(lambda: zhou.received)
    assert zhou.topics() == [topic_of(g1)]
    again = write_broker_files(s.site, site_principals(s.site) + db_principals(site), s.out)
    assert again.changed == [] and sorted(again.kept) == ["old", "zhou"]  # their passwords stay


def test_regenerated_files_apply_on_sighup(secure: Secure) -> None:
    import signal

    s = secure()
    li = s.client("li", "li-pass")
    li.subscribe("gwtest/alerts/#")
    assert s.client("zhao", "zhao-pass").refused
    zhao_user = BrokerUser("zhao", "patrol", ("G2",), "zhao-pass")
    report = write_broker_files(s.site, site_principals(s.site) + PATROL_USERS + [zhao_user], s.out)
    assert sorted(report.changed) == ["acl", "passwd"]
    assert s.broker.proc is not None
    s.broker.proc.send_signal(signal.SIGHUP)  # Mosquitto re-reads password file and ACL
    wait_for(lambda: not s.client("zhao", "zhao-pass").refused)
    zhao = s.client("zhao", "zhao-pass")
    zhao.subscribe("gwtest/alerts/#")
    g1, g2, g1_again = make_alert(camera="cam1"), make_alert(camera="cam2"), make_alert(camera="cam1")
    worker = s.client("worker", "worker-pass")
    for a in (g1, g2, g1_again):
        worker.publish(topic_of(a), a.to_bytes())
    wait_for(lambda: zhao.received and len(li.received) == 2)
    assert zhao.topics() == [topic_of(g2)]
    assert li.topics() == [topic_of(g1), topic_of(g1_again)]  # li's session survived the reload, still G1 only


def test_cli_writes_the_files(tmp_path: Path) -> None:
    from pipeline.cli import app

    site_yaml = tmp_path / "site.yaml"
    site = make_site(tmp_path, "mqtt://127.0.0.1:1883")
    site_yaml.write_text(site.model_dump_json(exclude={"base_dir"}))  # JSON is YAML
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  - {username: li, role: patrol, grids: [G1], password: li-pass}\n")
    result = CliRunner().invoke(app, ["mqtt-acl", "-c", str(site_yaml), "--out", str(tmp_path / "o"),
                                      "--users", str(users), "--no-db", "--broker-dir", "/mosquitto/config/conf.d"])
    assert result.exit_code == 0, result.output
    assert "password_file /mosquitto/config/conf.d/passwd" in (tmp_path / "o" / "auth.conf").read_text()
    base = ["mqtt-acl", "-c", str(site_yaml), "--out", str(tmp_path / "o"), "--no-db", "--check",
            "--broker-dir", "/mosquitto/config/conf.d"]
    assert CliRunner().invoke(app, [*base, "--users", str(users)]).exit_code == 0  # current
    before = (tmp_path / "o" / "passwd").read_text()
    stale = CliRunner().invoke(app, base)  # li left the users file
    assert stale.exit_code == 1 and "passwd, acl would change" in " ".join(stale.output.split())
    assert (tmp_path / "o" / "passwd").read_text() == before  # --check writes nothing
    assert sorted(parse_passwd((tmp_path / "o" / "passwd").read_text())) == ["li", "tickets", "worker"]
    users.write_text("users:\n  - {username: li, role: patrol, grids: [G404]}\n")
    result = CliRunner().invoke(app, ["mqtt-acl", "-c", str(site_yaml), "--out", str(tmp_path / "o"),
                                      "--users", str(users), "--no-db"])
    assert result.exit_code == 2 and "G404" in result.output


def _tickets(sessions: sessionmaker[Session]) -> list[Ticket]:
    with sessions() as db:
        return list(db.scalars(select(Ticket).order_by(Ticket.id)))


# -- TLS -------------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
             "-subj", "/CN=gridwatch test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                   "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_alert_reaches_a_ticket_over_tls(secure: Secure, tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    tls_port = free_port()
    s = secure(extra_config=f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    mqtt = s.site.mqtt.model_copy(update={"url": f"mqtts://127.0.0.1:{tls_port}", "tls_ca": str(ca)})
    consumer = AlertConsumer(mqtt, sessions, client_id="t-tickets-tls", retry_seconds=0.2)
    consumer.start()
    try:
        assert consumer.wait_subscribed(10)
        pub = _started_publisher(mqtt, tmp_path)
        alert = make_alert(camera="cam1", hazard="fire", zone=None)
        pub.publish_alert(alert)
        [t] = wait_for(lambda: _tickets(sessions))
        pub.stop()
    finally:
        consumer.stop()
    assert t.incident_id == alert.incident_id

    no_ca = mqtt.model_copy(update={"tls_ca": None})  # the system CAs do not know the test CA
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="t-no-ca")
    configure_client(client, broker_address(no_ca), no_ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("127.0.0.1", tls_port)
