"""Cameras and zones kept in the ticket database (table ``cameras``, migration ``0008_cameras``).

Each row holds one camera's entry exactly as the site YAML's ``cameras[]`` item (``spec``, validated with
:class:`~pipeline.config.CameraConfig`), its grid cell, its place in the list and a ``revision``: one counter
over all cameras that grows with every change (create, replace, zones, delete). A deleted camera stays as a
tombstone row (``deleted``), so the counter never goes back and a re-created id gets a higher revision than
anything a worker has seen.

The site YAML seeds the table once, at the first start on an empty database (:func:`seed_from_site`); the
seeding writes the audit event ``cameras.seed``, whose presence stops any later seeding, so a site whose
cameras were all deleted stays empty.

Example:
    >>> with sessions() as s, s.begin():  # doctest: +SKIP
    ...     put_camera(s, CameraConfig(id="cam1", url="a.mp4", grid="G1"), actor="li")
    1
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, func, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from pipeline.config import CameraConfig, SiteConfig
from pipeline.tickets.models import Base, UTCDateTime, utcnow
from pipeline.tickets.users import AuditEvent, audit

SEED_ACTION = "cameras.seed"
"""Audit action of the one-time seeding from the site YAML."""
_PG_CAMERA_LOCK = 0x63616D73  # "cams": serialises revision numbers over API replicas
_local_lock = threading.Lock()  # the same within one process (SQLite)


class CameraRow(Base):
    """One camera of the run-time config (or the tombstone of a deleted one)."""

    __tablename__ = "cameras"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    grid: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(Integer, index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def camera(self) -> CameraConfig:
        """The stored entry as the site YAML's camera model."""
        return CameraConfig.model_validate(self.spec)


def camera_spec(camera: CameraConfig) -> dict[str, Any]:
    """What is stored and published for ``camera``: its YAML entry as JSON (every field, defaults included)."""
    return camera.model_dump(mode="json")


@contextmanager
def camera_write_lock(session: Session) -> Iterator[None]:
    """Serialise camera writes: revisions must be handed out one at a time.

    Call inside the write transaction; on PostgreSQL the advisory lock lasts until it ends.
    """
    with _local_lock:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CAMERA_LOCK})
        yield


def current_revision(session: Session) -> int:
    """The highest revision stored (0: no camera ever)."""
    return int(session.scalar(select(func.max(CameraRow.revision))) or 0)


def list_cameras(session: Session) -> list[CameraRow]:
    """Live cameras (no tombstones) in list order."""
    return list(session.scalars(select(CameraRow).where(CameraRow.deleted.is_(False))
                                .order_by(CameraRow.position, CameraRow.id)))


def get_camera(session: Session, camera_id: str) -> CameraRow | None:
    """The live camera ``camera_id`` (None when unknown or deleted)."""
    row = session.get(CameraRow, camera_id)
    return row if row is not None and not row.deleted else None


def changed_rows(session: Session, after: int) -> list[CameraRow]:
    """Every row, tombstones too, changed after revision ``after``."""
    return list(session.scalars(select(CameraRow).where(CameraRow.revision > after).order_by(CameraRow.revision)))


def put_camera(session: Session, camera: CameraConfig, actor: str | None, position: int | None = None) -> int:
    """Store ``camera`` (create, or replace the one with its id; a tombstone comes back to life).

    Returns:
        The new revision. The caller holds :func:`camera_write_lock` and commits.
    """
    revision = current_revision(session) + 1
    row = session.get(CameraRow, camera.id)
    if row is None:
        if position is None:
            position = int(session.scalar(select(func.max(CameraRow.position))) or 0) + 1
        row = CameraRow(id=camera.id, position=position)
        session.add(row)
    elif position is not None:
        row.position = position
    row.grid, row.spec, row.revision, row.deleted = camera.grid, camera_spec(camera), revision, False
    row.updated_at, row.updated_by = utcnow(), actor
    return revision


def delete_camera(session: Session, camera_id: str, actor: str | None) -> int | None:
    """Turn camera ``camera_id`` into a tombstone; its new revision, or None when there was none."""
    row = get_camera(session, camera_id)
    if row is None:
        return None
    row.revision = current_revision(session) + 1
    row.deleted, row.updated_at, row.updated_by = True, utcnow(), actor
    return row.revision


def is_seeded(session: Session) -> bool:
    """Whether the table was seeded (or written) before: any row, or the seeding's audit event."""
    if session.scalar(select(func.count()).select_from(CameraRow)):
        return True
    return session.scalar(select(AuditEvent.id).where(AuditEvent.action == SEED_ACTION).limit(1)) is not None


def seed_from_site(session: Session, site: SiteConfig) -> int:
    """Copy the site YAML's cameras into an empty, never seeded table; how many were copied (0: seeded before).

    The caller commits. Several API replicas starting at once are serialised by :func:`camera_write_lock`.
    """
    with camera_write_lock(session):
        if is_seeded(session):
            return 0
        for position, camera in enumerate(site.cameras, start=1):
            put_camera(session, camera, actor=None, position=position)
        audit(session, None, SEED_ACTION, "cameras", None, count=len(site.cameras),
              revision=current_revision(session))
        return len(site.cameras)


def database_cameras(session: Session) -> list[CameraConfig]:
    """Every live camera as the site YAML's model, in list order."""
    return [row.camera() for row in list_cameras(session)]


def camera_grid_path(session: Session, site: SiteConfig, camera_id: str) -> list[str] | None:
    """The grid path of live camera ``camera_id`` (None when unknown, deleted or on a cell the site lacks)."""
    row = get_camera(session, camera_id)
    if row is None or row.grid not in site._cells():
        return None
    return site.grid_path(row.grid)
