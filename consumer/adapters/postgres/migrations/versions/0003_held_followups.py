"""scheduled_followups.held_reason and approved_at: quiet hours and the daily cap.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

`held_reason` says why a pending follow-up waits past its `scheduled_at`
('quiet_hours', 'daily_cap'; `due_at` says until when); `approved_at` is when
a dispatcher approved sending it, counted against the cap while its lease is
live. Both nullable, no default: the previous release's code keeps working
beside them.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE scheduled_followups ADD COLUMN held_reason varchar(16)")
    op.execute("ALTER TABLE scheduled_followups ADD COLUMN approved_at timestamptz")


def downgrade() -> None:
    """Drops scheduled_followups.held_reason and approved_at (why a follow-up is held).

    `due_at` keeps the time, so a held follow-up still waits until then."""
    op.execute("ALTER TABLE scheduled_followups DROP COLUMN approved_at")
    op.execute("ALTER TABLE scheduled_followups DROP COLUMN held_reason")
