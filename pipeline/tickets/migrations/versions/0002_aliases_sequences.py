"""Incident aliases and the place index (duplicate-open guard), per-worker alert sequence tracking.

Revision ID: 0002_aliases_sequences
Revises: 0001_initial
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_aliases_sequences"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``incident_aliases``, ``worker_sequences`` and ``ix_tickets_place``."""
    op.create_index("ix_tickets_place", "tickets", ["camera_id", "hazard", "zone_id"])
    op.create_table(
        "incident_aliases",
        sa.Column("incident_id", sa.String(200), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attached_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_incident_aliases_ticket_id", "incident_aliases", ["ticket_id"])
    op.create_table(
        "worker_sequences",
        sa.Column("worker_id", sa.String(200), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("missing_total", sa.BigInteger(), nullable=False),
        sa.Column("late_total", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop both tables and the index."""
    op.drop_table("worker_sequences")
    op.drop_index("ix_incident_aliases_ticket_id", table_name="incident_aliases")
    op.drop_table("incident_aliases")
    op.drop_index("ix_tickets_place", table_name="tickets")
