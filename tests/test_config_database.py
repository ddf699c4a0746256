"""api.database_url: one normalisation (SQLite paths, the PostgreSQL driver pinned to psycopg 3), clear
errors for unsupported URLs and a missing driver, and the documented postgresql:// URL end to end on the
local PostgreSQL: app start, migrations, a ticket created by the MQTT consumer, read over the API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from pipeline.config import SiteConfig
from pipeline.config_checks import normalise_database_url
from pipeline.config_errors import validate_text
from tests.fixtures.auth import login
from tests.tickets.conftest import CAMERAS, GRID, Publisher, make_alert, topic_of, wait_for

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://gw:pw@db:5432/gridwatch", "postgresql+psycopg://gw:pw@db:5432/gridwatch"),
    ("postgres://gw@db/gridwatch", "postgresql+psycopg://gw@db/gridwatch"),
    ("PostgreSQL://gw@db/gridwatch", "postgresql+psycopg://gw@db/gridwatch"),
    ("postgresql+psycopg2://gw@db/gridwatch", "postgresql+psycopg2://gw@db/gridwatch"),
    ("sqlite:///var/gridwatch.db", "sqlite:///var/gridwatch.db"),
])
def test_normalise_pins_the_postgres_driver(url: str, expected: str) -> None:
    assert normalise_database_url(url) == expected


def _site(database_url: str, **extra: Any) -> SiteConfig:
    return SiteConfig.model_validate({"grid": GRID, "cameras": CAMERAS, "api": {"database_url": database_url},
                                      "mqtt": {"topic_prefix": "gwtest", **extra}})


def test_sqlite_relative_path_resolves_against_the_config_file(tmp_path: Path) -> None:
    site = _site("sqlite:///data/t.db")
    site.base_dir = str(tmp_path)
    assert site.database_url() == f"sqlite:///{tmp_path}/data/t.db"
    assert (tmp_path / "data").is_dir()
    from pipeline.tickets.api import database_url

    assert database_url(site) == site.database_url()  # the API uses the same normalisation


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://gw:Hunter22@db/gridwatch", "api.database_url: 'mysql://***@db/gridwatch': backend 'mysql' is not "
                                         "supported (sqlite or postgresql) (line 2)"),
    ("not a url", "api.database_url: 'not a url' is not a database URL (sqlite:///path or "
                  "postgresql://user@host/db) (line 2)"),
])
def test_unsupported_database_urls_fail_check_config(url: str, message: str) -> None:
    cfg, errors = validate_text(f"grid: []\napi: {{database_url: '{url}'}}\n")
    assert cfg is None and errors == [message]


def test_missing_driver_is_a_clear_error_with_the_install_command() -> None:
    site = _site("postgresql+pg8000://gw:Hunter22@db/gridwatch")  # pg8000 is not installed
    with pytest.raises(RuntimeError) as exc:
        site.database_url()
    assert str(exc.value) == ("api.database_url 'postgresql+pg8000://***@db/gridwatch' needs the PostgreSQL driver "
                              "'pg8000', which is not installed: pip install pg8000")


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh database on the local server, as a plain documented ``postgresql://`` URL."""
    try:
        admin = create_engine(normalise_database_url(f"{PG_SERVER}/test"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # no server: skip, whatever the reason
        pytest.skip(f"no PostgreSQL server at 127.0.0.1:5432: {exc}")
    name = f"gw_cfg_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.integration
def test_documented_postgresql_url_runs_the_service(pg_database: str, mosquitto: Any) -> None:
    from pipeline.tickets.api import create_app

    broker = mosquitto()
    site = _site(pg_database, url=broker.url, shared_group=None)
    assert site.api.database_url.startswith("postgresql://")  # as the docs write it
    app = create_app(site)
    engine = app.state.tickets.engine
    assert engine.url.drivername == "postgresql+psycopg"
    with engine.connect() as conn:
        tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert {"tickets", "ticket_events", "dead_letters", "camera_health"} <= tables
    assert revision  # migrated to head
    alert = make_alert(camera="cam2", hazard="fire")
    publisher = Publisher(broker.host, broker.port)
    try:
        with TestClient(app) as client:
            login(client)
            assert app.state.tickets.consumer.wait_subscribed(15)
            publisher.publish(topic_of(alert), alert.to_bytes())
            tickets = wait_for(lambda: client.get("/tickets").json()["items"], 15)
            assert [(t["incident_id"], t["camera_id"], t["hazard"]) for t in tickets] == [
                (alert.incident_id, "cam2", "fire")]
            detail = client.get(f"/tickets/{tickets[0]['id']}").json()
            assert detail["grid_path"] == ["T1", "D1", "C1", "G2"]
    finally:
        publisher.close()
        engine.dispose()


def test_api_without_its_driver_stops_with_one_line_and_no_password(tmp_path: Path) -> None:
    """A real `gridwatch api` process: exit 2 with the install line, no traceback, no credential."""
    import subprocess
    import sys

    site = tmp_path / "site.yaml"
    site.write_text("grid: [{code: T1, name: t, children: [{code: D1, name: d, children: [{code: C1, name: c, "
                    "children: [{code: G1, name: g}]}]}]}]\n"
                    "cameras: [{id: c1, url: 'rtsp://admin:Hunter22cam@10.0.0.7/ch1', grid: G1}]\n"
                    "mqtt: {url: 'mqtt://gw:Hunter22mqtt@127.0.0.1:1'}\n"
                    "api: {database_url: 'postgresql+pg8000://gw:Hunter22db@127.0.0.1:1/x'}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "api", "-c", str(site)], capture_output=True,
                          text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "needs the PostgreSQL driver 'pg8000', which is not installed: pip install pg8000" in output
    assert "Traceback" not in output and "Hunter22" not in output, output
