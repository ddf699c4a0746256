"""Site plan images with camera pins (``site_plans``), one per grid node or the whole site.

Revision ID: 0011_site_plans
Revises: 0010_alert_gaps
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_site_plans"
down_revision: str | None = "0010_alert_gaps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``site_plans`` (unique grid path)."""
    op.create_table(
        "site_plans",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("grid_path", sa.String(300), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("pins", sa.JSON(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(), nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=True),
        sa.Column("pins_updated_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    """Drop ``site_plans``."""
    op.drop_table("site_plans")
