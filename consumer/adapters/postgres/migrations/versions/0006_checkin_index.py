"""The conversation index holds check-ins only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

`idx_followups_conversation (conversation_id)` had a row for every follow-up,
though its one reader, ingest's lookup of a conversation's check-ins
(`sql.LOCK_FOLLOWUPS`), asks for `trigger_type = 'emotion_based'` only. Every
re-engagement, post-event and custom row was paid for in it on every insert and
on every move (a move changes `due_at`, so it is never an in-place update), the
re-engagement rows all under the same key ''. `idx_followups_checkins` is the
same index for the check-ins alone, a small part of the rows.

Nothing changes for the previous release's code: its lookup of check-ins names
the trigger type too, so it uses the new index.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS idx_followups_checkins ON scheduled_followups "
        "(conversation_id) WHERE trigger_type = 'emotion_based'"
    )
    op.execute("DROP INDEX IF EXISTS idx_followups_conversation")


def downgrade() -> None:
    """Drops nothing: the index on every row's conversation again; writes get slower."""
    op.execute(
        "CREATE INDEX IF NOT EXISTS idx_followups_conversation "
        "ON scheduled_followups (conversation_id)"
    )
    op.execute("DROP INDEX IF EXISTS idx_followups_checkins")
