"""Initial ticket store: tickets, ticket_events, dead_letters, camera_health.

Revision ID: 0001_initial
Revises:
Create Date: 2024-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(200), nullable=False),
        sa.Column("hazard", sa.String(32), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("camera_id", sa.String(100), nullable=False),
        sa.Column("camera_name", sa.String(200), nullable=True),
        sa.Column("grid_l1", sa.String(64), nullable=False),
        sa.Column("grid_l2", sa.String(64), nullable=False),
        sa.Column("grid_l3", sa.String(64), nullable=False),
        sa.Column("grid_l4", sa.String(64), nullable=False),
        sa.Column("grid_path", sa.String(300), nullable=False),
        sa.Column("zone_id", sa.String(100), nullable=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("cleared_at", sa.DateTime(), nullable=True),
        sa.Column("last_event", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("snapshot_url", sa.Text(), nullable=True),
        sa.Column("clip_url", sa.Text(), nullable=True),
        sa.Column("boxes", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.UniqueConstraint("incident_id", name="uq_tickets_incident_id"),
    )
    op.create_index("ix_tickets_hazard", "tickets", ["hazard"])
    op.create_index("ix_tickets_camera_id", "tickets", ["camera_id"])
    op.create_index("ix_tickets_status_opened", "tickets", ["status", "opened_at"])
    op.create_index("ix_tickets_grid_path", "tickets", ["grid_path"])
    op.create_index("ix_tickets_opened_at", "tickets", ["opened_at"])

    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message_key", sa.String(300), nullable=False),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(32), nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.UniqueConstraint("ticket_id", "message_key", name="uq_ticket_events_message"),
    )
    op.create_index("ix_ticket_events_ticket_id", "ticket_events", ["ticket_id"])

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_text", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])

    op.create_table(
        "camera_health",
        sa.Column("camera_id", sa.String(100), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("last_frame_ts", sa.Float(), nullable=True),
        sa.Column("frames_decoded", sa.Integer(), nullable=False),
        sa.Column("frames_dropped", sa.Integer(), nullable=False),
        sa.Column("reconnects", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_table("camera_health")
    op.drop_index("ix_dead_letters_received_at", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index("ix_ticket_events_ticket_id", table_name="ticket_events")
    op.drop_table("ticket_events")
    for ix in ("ix_tickets_opened_at", "ix_tickets_grid_path", "ix_tickets_status_opened",
               "ix_tickets_camera_id", "ix_tickets_hazard"):
        op.drop_index(ix, table_name="tickets")
    op.drop_table("tickets")
