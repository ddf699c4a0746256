"""Cameras and zones managed at run time (``cameras``; seeded from the site YAML into an empty database).

Revision ID: 0008_cameras
Revises: 0007_verdicts
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_cameras"
down_revision: str | None = "0007_verdicts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``cameras`` (one row per camera id; a deleted camera stays as a tombstone row)."""
    op.create_table(
        "cameras",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("grid", sa.String(200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_cameras_revision", "cameras", ["revision"])


def downgrade() -> None:
    """Drop ``cameras``."""
    op.drop_index("ix_cameras_revision", table_name="cameras")
    op.drop_table("cameras")
