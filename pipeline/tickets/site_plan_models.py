"""Table of the site plans (平面图): one uploaded plan image per grid node (or the whole site), with the
camera pins placed on it (migration 0011_site_plans).

``grid_path`` is the node's code path (``T1/D1``; ``""`` for the whole site) and is unique: a new upload
for the same node replaces the image and keeps the pins. ``pins`` holds ``{"camera_id", "x", "y"}`` with
``x``, ``y`` normalised 0..1 of the image. The image itself lies in the evidence store
(``<evidence_dir>/site-plans/<name>``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.tickets.models import Base, UTCDateTime


class SitePlan(Base):
    """A site plan image and its camera pins."""

    __tablename__ = "site_plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grid_path: Mapped[str] = mapped_column(String(300), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    pins: Mapped[list[Any]] = mapped_column(JSON, default=list)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    uploaded_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pins_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
