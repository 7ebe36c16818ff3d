"""scheduled_followups.cancelled_by: who cancelled a follow-up.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-01

'operator' (a fact the rules never undo), or NULL: a rule did (the rules
recompute such a row from the events). Nullable, no default: code of the
previous release, which does not know the column, keeps working beside it.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE scheduled_followups ADD COLUMN cancelled_by varchar(16)")
    # For rows cancelled before this column existed: the rules never cancel
    # re-engagements or custom follow-ups, and a post-event follow-up they cancel
    # has no active booking left; those are an operator's.
    op.execute(
        """
        UPDATE scheduled_followups SET cancelled_by = 'operator'
        WHERE status = 'cancelled' AND cancelled_by IS NULL AND (
            trigger_type IN ('re_engagement', 'custom')
            OR (trigger_type = 'post_event'
                AND jsonb_array_length(
                    coalesce(trigger_data->'active_booking_ids', '[]'::jsonb)) > 0)
        )
        """
    )


def downgrade() -> None:
    """Drops scheduled_followups.cancelled_by (which cancellations were an operator's).

    An upgrade again re-derives it with the rule above, except for an operator's
    cancellation of a post-event follow-up with no active booking left, which then
    reads as a rule's (and the rules may recompute it)."""
    op.execute("ALTER TABLE scheduled_followups DROP COLUMN cancelled_by")
