"""Cheaper writes: two indexes no query needs, room for in-place updates.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

Every index is paid on every write, and ingest writes a user's row and a
follow-up per event:

- `idx_followups_status_scheduled (status, scheduled_at)`: no query filters
  on both; pending rows by time use the partial `idx_followups_pending_due`,
  executed ones `idx_followups_executed_at`, a user's `idx_followups_user_status`.
- `idx_user_projection_last_activity`: only the daily re-engagement sweep reads
  `last_activity_at`, walking users in id order (the primary key) anyway. With
  it gone, an activity no longer changes an indexed column of the user's row.
- `fillfactor = 80` on the two projections updated in place (users,
  conversations): free room in each page lets PostgreSQL write the new row
  version beside the old one without touching any index (a HOT update).
  It applies to pages written from now on.

Nothing changes for the previous release's code: it never named these indexes.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_followups_status_scheduled")
    op.execute("DROP INDEX IF EXISTS idx_user_projection_last_activity")
    op.execute("ALTER TABLE user_projection SET (fillfactor = 80)")
    op.execute("ALTER TABLE conversation_emotions SET (fillfactor = 80)")


def downgrade() -> None:
    """Drops nothing: recreates two indexes nothing reads, and the default fill factor.

    On (status, scheduled_at) and on (last_activity_at): writes get slower again."""
    op.execute(
        "CREATE INDEX IF NOT EXISTS idx_followups_status_scheduled "
        "ON scheduled_followups (status, scheduled_at)"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS idx_user_projection_last_activity "
        "ON user_projection (last_activity_at)"
    )
    op.execute("ALTER TABLE user_projection RESET (fillfactor)")
    op.execute("ALTER TABLE conversation_emotions RESET (fillfactor)")
