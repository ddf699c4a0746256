"""Case life cycle (GB/T 30428 steps), deadlines, escalation, proof uploads, camera checks, notifications.

Existing rows are migrated in place (tickets and the ``from_status``/``to_status`` of their transition
events):

=============  ==============  ====================================================================
old status     new status      why
=============  ==============  ====================================================================
open           received        受理: the alert arrived, nobody has looked at it yet
assigned       dispatched      派遣: a person was given the ticket (verification was implicit)
in_progress    in_progress     处置
resolved       resolved        the worker said it is fixed
verified       checked         核查: the old "verified" meant a dispatcher confirmed the *fix*
closed         closed          结案
false_alarm    false_alarm
=============  ==============  ====================================================================

The stage timestamps (``verified_at`` .. ``closed_at``) are filled from the first matching transition
event; ``verified_at`` of an old ticket is its first move out of ``open`` (dispatch or false alarm).

Revision ID: 0004_casework
Revises: 0003_users
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_casework"
down_revision: str | None = "0003_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RENAME_UP = {"open": "received", "assigned": "dispatched", "verified": "checked"}
# Down: the new states without an old twin fold into the nearest old one.
_RENAME_DOWN = {"received": "open", "verified": "open", "dispatched": "assigned", "checked": "verified"}
_STAGE_COLUMNS = ("verified_at", "dispatched_at", "in_progress_at", "resolved_at", "checked_at", "closed_at")
# (column, the old to_status values whose first transition fills it) - evaluated before the rename.
_BACKFILL = (
    ("verified_at", ("assigned", "false_alarm")),
    ("dispatched_at", ("assigned",)),
    ("in_progress_at", ("in_progress",)),
    ("resolved_at", ("resolved",)),
    ("checked_at", ("verified",)),
    ("closed_at", ("closed", "false_alarm")),
)


def _rename(mapping: dict[str, str]) -> None:
    # One CASE per column, so "verified" -> "checked" and "open"/"received" never chain into each other.
    for table, columns in (("tickets", ("status",)), ("ticket_events", ("from_status", "to_status"))):
        for column in columns:
            whens = " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in mapping.items())
            keys = ", ".join(f"'{old}'" for old in mapping)
            op.execute(f"UPDATE {table} SET {column} = CASE {column} {whens} ELSE {column} END "
                       f"WHERE {column} IN ({keys})")


def upgrade() -> None:
    """Add stage times, deadline and escalation columns; create the case tables; rename old states."""
    # Plain ADD COLUMN (no batch copy): on SQLite a batch rebuild drops ``tickets``, and with foreign keys
    # on that would cascade-delete every ticket event.
    for column in _STAGE_COLUMNS:
        op.add_column("tickets", sa.Column(column, sa.DateTime(), nullable=True))
    op.add_column("tickets", sa.Column("due_at", sa.DateTime(), nullable=True))
    op.add_column("tickets", sa.Column("due_stage", sa.String(16), nullable=True))
    op.add_column("tickets", sa.Column("overdue", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("tickets", sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("tickets", sa.Column("escalated_at", sa.DateTime(), nullable=True))
    op.add_column("tickets", sa.Column("reopen_count", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_tickets_due_at", "tickets", ["due_at"])
    op.create_index("ix_tickets_closed_at", "tickets", ["closed_at"])
    for column, targets in _BACKFILL:
        keys = ", ".join(f"'{t}'" for t in targets)
        op.execute(f"UPDATE tickets SET {column} = (SELECT MIN(e.ts) FROM ticket_events e "
                   f"WHERE e.ticket_id = tickets.id AND e.kind = 'transition' AND e.to_status IN ({keys}))")
    _rename(_RENAME_UP)

    op.create_table(
        "ticket_attachments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_ticket_attachments_ticket_id", "ticket_attachments", ["ticket_id"])
    op.create_table(
        "camera_checks",
        sa.Column("check_id", sa.String(200), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("camera_id", sa.String(100), nullable=False),
        sa.Column("window_seconds", sa.Float(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("result_at", sa.DateTime(), nullable=True),
        sa.Column("snapshot_url", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_camera_checks_ticket_id", "camera_checks", ["ticket_id"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("grid_path", sa.String(300), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_notifications_ticket_id", "notifications", ["ticket_id"])
    op.create_index("ix_notifications_published_at", "notifications", ["published_at"])
    op.create_table(
        "service_locks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False, server_default="0"),
        sa.Column("last_run_at", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    """Drop the case tables and columns; fold the new states back into the old ones."""
    op.drop_table("service_locks")
    op.drop_index("ix_notifications_published_at", table_name="notifications")
    op.drop_index("ix_notifications_ticket_id", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_camera_checks_ticket_id", table_name="camera_checks")
    op.drop_table("camera_checks")
    op.drop_index("ix_ticket_attachments_ticket_id", table_name="ticket_attachments")
    op.drop_table("ticket_attachments")
    _rename(_RENAME_DOWN)
    op.drop_index("ix_tickets_closed_at", table_name="tickets")
    op.drop_index("ix_tickets_due_at", table_name="tickets")
    # ALTER TABLE .. DROP COLUMN (SQLite >= 3.35, PostgreSQL): no table rebuild, events stay.
    for column in ("reopen_count", "escalated_at", "escalation_level", "overdue", "due_stage", "due_at",
                   *_STAGE_COLUMNS):
        op.execute(f"ALTER TABLE tickets DROP COLUMN {column}")
