"""Missing alert sequence ranges per worker (``alert_gaps``), for resend requests.

Revision ID: 0010_alert_gaps
Revises: 0009_resident_reports
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_alert_gaps"
down_revision: str | None = "0009_resident_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``alert_gaps`` with its (worker, first seq) index."""
    op.create_table(
        "alert_gaps",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detected_at", sa.DateTime(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("last_request_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_alert_gaps_worker_first", "alert_gaps", ["worker_id", "first_seq"])


def downgrade() -> None:
    """Drop ``alert_gaps``."""
    op.drop_index("ix_alert_gaps_worker_first", table_name="alert_gaps")
    op.drop_table("alert_gaps")
