"""Migrations on SQLite and PostgreSQL: schema created at start-up, idempotent, matches the ORM."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from pipeline.tickets.db import alembic_config, create_db_engine, init_db, migrate
from pipeline.tickets.models import Base

TABLES = {"tickets", "ticket_events", "dead_letters", "camera_health", "alembic_version"}


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def test_init_db_creates_schema_at_head(db_url: str) -> None:
    engine = init_db(db_url)
    try:
        insp = inspect(engine)
        assert set(insp.get_table_names()) >= TABLES
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("ticket_events")}
        assert ("ticket_id", "message_key") in uniques
        assert ("incident_id",) in {tuple(u["column_names"]) for u in insp.get_unique_constraints("tickets")}
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == _head()
            # The migration and the ORM models describe the same schema.
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_init_db_twice_is_a_no_op(db_url: str) -> None:
    init_db(db_url).dispose()
    engine = init_db(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    engine = create_db_engine(db_url)
    migrate(engine)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = init_db(f"sqlite:///{tmp_path}/sub/dir/t.db")  # parent folders are created
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    engine.dispose()


def test_packaged_alembic_ini_works_without_the_app(tmp_path: Path) -> None:
    """The ini inside the package drives a plain ``alembic upgrade`` (env.py builds its own engine)."""
    from alembic.config import Config

    from pipeline.tickets.db import ALEMBIC_INI

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{tmp_path}/cli.db")
    command.upgrade(cfg, "head")
    engine = create_db_engine(f"sqlite:///{tmp_path}/cli.db")
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()
