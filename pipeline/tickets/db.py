"""Engine creation and start-up migrations of the ticket store.

``init_db(url)`` creates the engine (SQLite with WAL, busy timeout and foreign keys; PostgreSQL by URL),
runs the packaged Alembic migrations to ``head`` and returns the engine. Several API replicas may start at
once against PostgreSQL, so the upgrade runs under a transaction-level advisory lock there.

Example:
    >>> engine = init_db("sqlite:///:memory:")
    >>> SessionLocal = session_factory(engine)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = PACKAGE_DIR / "alembic.ini"
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
_PG_MIGRATION_LOCK = 0x67726964  # "grid": advisory lock key held while migrating


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cur = dbapi_connection.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def create_db_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the pragmas and pool settings the ticket store needs.

    Args:
        url: SQLAlchemy URL, ``sqlite:///path``, ``sqlite:///:memory:`` or ``postgresql://...``.

    Returns:
        The engine. SQLite file parents are created; in-memory SQLite uses one shared connection.
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        db = u.database or ""
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 10}}
        if db in ("", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(u, pool_pre_ping=True, pool_size=5, max_overflow=5)


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic config pointing at the packaged migrations (works from an installed package).

    Args:
        engine: when given, ``env.py`` migrates through a connection of this engine.
    """
    cfg = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.is_file() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False)
                            .replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` on ``engine``.

    Args:
        engine: target database.
        revision: Alembic revision, ``head`` by default.
    """
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def init_db(url: str) -> Engine:
    """Create the engine for ``url`` and bring the schema to the latest revision.

    Args:
        url: SQLAlchemy database URL.

    Returns:
        The ready engine.
    """
    engine = create_db_engine(url)
    migrate(engine)
    log.info("ticket database ready at %s", engine.url.render_as_string(hide_password=True))
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Session factory whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)
