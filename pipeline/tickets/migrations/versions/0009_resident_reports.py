"""Resident report (一楼一码): QR codes per building unit, the reports made through them, ticket source.

* ``report_codes``: a printed code (unguessable ``token``) bound to a grid cell and a place name.
* ``resident_reports``: an accepted report, its ticket, the hash of its tracking token and what the abuse
  limits count (code, client address, time).
* ``tickets.source``: ``camera`` (an alert; every existing ticket) or ``resident`` (a report).

Revision ID: 0009_resident_reports
Revises: 0008_cameras
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_resident_reports"
down_revision: str | None = "0008_cameras"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the two tables and add ``tickets.source`` (plain ADD COLUMN with a default)."""
    op.create_table(
        "report_codes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("grid_path", sa.String(300), nullable=False),
        sa.Column("place", sa.String(100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("token"),
    )
    op.create_index("ix_report_codes_grid_path", "report_codes", ["grid_path"])
    op.create_table(
        "resident_reports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("code_id", sa.Integer(), sa.ForeignKey("report_codes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tracking_hash", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("client_address", sa.String(100), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("tracking_hash"),
    )
    op.create_index("ix_resident_reports_ticket_id", "resident_reports", ["ticket_id"])
    op.create_index("ix_resident_reports_code_created", "resident_reports", ["code_id", "created_at"])
    op.create_index("ix_resident_reports_client_created", "resident_reports", ["client_address", "created_at"])
    op.add_column("tickets", sa.Column("source", sa.String(16), nullable=False, server_default="camera"))


def downgrade() -> None:
    """Drop them again (ALTER TABLE .. DROP COLUMN: SQLite >= 3.35, PostgreSQL)."""
    op.execute("ALTER TABLE tickets DROP COLUMN source")
    op.drop_table("resident_reports")
    op.drop_table("report_codes")
