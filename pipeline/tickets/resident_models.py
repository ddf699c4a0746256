"""Tables of the resident report (一楼一码): the QR codes printed per building unit and the reports made
through them (migration 0008).

``report_codes``: one printed code, bound to a grid cell and a place name (``3号楼2单元``); its ``token``
is the unguessable part of the URL ``/r/<token>``. ``resident_reports``: one accepted report, linked to
the ticket it opened; it keeps what the abuse limits count (code, client address, time) and the hash of the
resident's tracking token (the token itself is only in the link the resident got).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, true
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.tickets.models import Base, UTCDateTime


class ReportCode(Base):
    """A QR code on a building unit's door."""

    __tablename__ = "report_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    grid_path: Mapped[str] = mapped_column(String(300), index=True)
    place: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ResidentReport(Base):
    """One accepted resident report and the ticket it opened."""

    __tablename__ = "resident_reports"
    __table_args__ = (
        Index("ix_resident_reports_code_created", "code_id", "created_at"),
        Index("ix_resident_reports_client_created", "client_address", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code_id: Mapped[int] = mapped_column(ForeignKey("report_codes.id", ondelete="CASCADE"))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    tracking_hash: Mapped[str] = mapped_column(String(64), unique=True)
    category: Mapped[str] = mapped_column(String(16))
    client_address: Mapped[str | None] = mapped_column(String(100), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
