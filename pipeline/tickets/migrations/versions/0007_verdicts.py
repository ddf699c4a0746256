"""Operators' verdicts on tickets (``ticket_verdicts``): the training labels of the retraining loop.

Revision ID: 0007_verdicts
Revises: 0006_check_timeout_webhook_drop
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_verdicts"
down_revision: str | None = "0006_check_timeout_webhook_drop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``ticket_verdicts`` (one row per verdict; the latest of a ticket is its label)."""
    op.create_table(
        "ticket_verdicts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("boxes", sa.JSON(), nullable=True),
        sa.Column("frame_sha256", sa.String(64), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_ticket_verdicts_ticket_id", "ticket_verdicts", ["ticket_id"])


def downgrade() -> None:
    """Drop ``ticket_verdicts``."""
    op.drop_index("ix_ticket_verdicts_ticket_id", table_name="ticket_verdicts")
    op.drop_table("ticket_verdicts")
