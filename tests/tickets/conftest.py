"""Fixtures of the ticket tests: site configs, databases (SQLite and a throw-away PostgreSQL database),
alert factories, an MQTT publisher and a polling helper."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from pipeline.alerts.schema import AlertV1, alert_topic, example_alert
from pipeline.config import SiteConfig
from pipeline.tickets.db import init_db, session_factory

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

GRID: list[dict[str, Any]] = [
    {"code": "T1", "name": "Town", "children": [
        {"code": "D1", "name": "District 1", "children": [
            {"code": "C1", "name": "Community 1", "children": [
                {"code": "G1", "name": "Cell 1", "patrol": "Li Wei"},
                {"code": "G2", "name": "Cell 2"}]}]},
        {"code": "D2", "name": "District 2", "children": [
            {"code": "C2", "name": "Community 2", "children": [{"code": "G3", "name": "Cell 3"}]}]}]},
    {"code": "T10", "name": "Other town", "children": [
        {"code": "D1", "name": "D1 of T10", "children": [
            {"code": "C9", "name": "C9", "children": [{"code": "G9", "name": "Cell 9"}]}]}]},
]
CAMERAS: list[dict[str, Any]] = [
    {"id": "cam1", "name": "North gate", "url": "a.mp4", "grid": "G1"},
    {"id": "cam2", "url": "b.mp4", "grid": "G2"},
    {"id": "cam3", "url": "c.mp4", "grid": "G3"},
    {"id": "cam9", "url": "d.mp4", "grid": "G9"},
]
CAMERA_PATHS = {"cam1": ["T1", "D1", "C1", "G1"], "cam2": ["T1", "D1", "C1", "G2"],
                "cam3": ["T1", "D2", "C2", "G3"], "cam9": ["T10", "D1", "C9", "G9"]}


def make_site(tmp_path: Path, database_url: str | None = None, mqtt_url: str | None = None,
              **mqtt_opts: Any) -> SiteConfig:
    """A site with the test grid and cameras, its DB and evidence in ``tmp_path``."""
    return SiteConfig.model_validate({
        "grid": GRID, "cameras": CAMERAS,
        "api": {"database_url": database_url or f"sqlite:///{tmp_path}/tickets.db",
                "evidence_dir": str(tmp_path / "evidence")},
        "mqtt": {"url": mqtt_url, "topic_prefix": "gwtest", **mqtt_opts},
    })


_counter = iter(range(1, 1_000_000))


def make_alert(event: str = "opened", incident_id: str | None = None, camera: str = "cam1",
               hazard: str = "parking", ts: float | None = None, **update: Any) -> AlertV1:
    """A valid ``AlertV1`` for one of the test cameras (fields overridable).

    Each call gets a zone of its own unless ``zone`` is given, so independent alerts do not meet the
    duplicate-open guard (one active ticket per camera, zone and hazard); pass ``zone`` to test it.
    """
    base = example_alert()
    n = next(_counter)
    t0 = 1_714_550_400.0 + n * 10
    data = base.model_dump(mode="json")
    data.update({
        "event": event, "incident_id": incident_id or f"{camera}-z1-{hazard}-{uuid.uuid4().hex[:10]}",
        "hazard": hazard, "camera": {"id": camera, "name": None},
        "zone": {"id": f"z{n}", "kind": "fire_lane", "name": f"Zone {n}"},
        "grid": {"path": CAMERA_PATHS[camera], "names": ["a", "b", "c", "d"], "patrol": None},
        "ts": _iso(ts if ts is not None else t0 + 5), "started_at": _iso(t0),
    })
    data.update(update)
    return AlertV1.model_validate(data)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat()


def topic_of(alert: AlertV1, prefix: str = "gwtest") -> str:
    """The topic the worker would publish ``alert`` on."""
    return alert_topic(prefix, alert.grid.path, alert.camera.id, alert.hazard.value)


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``cond`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


class Publisher:
    """A paho client publishing QoS 1 and waiting for the broker's PUBACK."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(mosquitto_broker: Any) -> Any:
    """The test's private Mosquitto (``tests/fixtures/mqtt.py``): .host .port .url .stop() .start()."""
    return mosquitto_broker


@pytest.fixture
def publisher(broker: Any) -> Iterator[Publisher]:
    """Publisher connected to the test's private Mosquitto."""
    p = Publisher(broker.host, broker.port)
    yield p
    p.close()


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A fresh SQLite ticket store (migrated); test files that need another store define their own."""
    engine = init_db(f"sqlite:///{tmp_path}/tickets.db")
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file."""
    return f"sqlite:///{tmp_path}/tickets.db"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A uniquely named PostgreSQL database on 127.0.0.1:5432, dropped afterwards."""
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the server means: skip
        pytest.skip(f"no PostgreSQL server reachable at 127.0.0.1:5432 as user postgres: {exc}")
    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tickets.db"
    url: str = request.getfixturevalue("pg_url")
    return url
