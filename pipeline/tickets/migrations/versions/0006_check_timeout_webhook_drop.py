"""Camera check timeouts and dropped webhook deliveries.

* ``camera_checks.timed_out_at``: when the service stopped waiting for the worker's answer (the case loop
  gives a check ``casework.check_timeout_seconds``); a late result is still recorded.
* ``tickets.manual_check``: the ticket's camera check timed out, a dispatcher checks it by hand (cleared
  when the ticket leaves ``resolved``).
* ``webhook_deliveries.dropped_reason``: why a delivery was dropped (status ``dropped``), e.g.
  ``target_removed`` when its target is no longer in ``api.webhooks.targets``.

Revision ID: 0006_check_timeout_webhook_drop
Revises: 0005_webhooks
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_check_timeout_webhook_drop"
down_revision: str | None = "0005_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the three columns (plain ADD COLUMN: no table rebuild on SQLite)."""
    op.add_column("camera_checks", sa.Column("timed_out_at", sa.DateTime(), nullable=True))
    op.add_column("tickets", sa.Column("manual_check", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("webhook_deliveries", sa.Column("dropped_reason", sa.String(32), nullable=True))


def downgrade() -> None:
    """Drop them again (ALTER TABLE .. DROP COLUMN: SQLite >= 3.35, PostgreSQL)."""
    op.execute("ALTER TABLE webhook_deliveries DROP COLUMN dropped_reason")
    op.execute("ALTER TABLE tickets DROP COLUMN manual_check")
    op.execute("ALTER TABLE camera_checks DROP COLUMN timed_out_at")
