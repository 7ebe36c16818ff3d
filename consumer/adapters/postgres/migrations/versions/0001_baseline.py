"""Baseline: the schema that shipped (schema.sql as released, commit f6b9aa2).

Revision ID: 0001
Revises:
Create Date: 2026-05-01

Table for table, column for column (in the same order), the same constraints and
indexes as that file made (tests/fixtures/schema_shipped.sql is a copy of it).

A database that schema.sql created has no alembic_version table: `migrate`
recognises it and records it at this revision (or at 0002 if it already has
`cancelled_by`) instead of running this; see consumer/adapters/postgres/schema.py.
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = [
    # The table of the original design, same columns and indexes, plus what
    # leasing, retries and the projections need.
    """
    CREATE TABLE scheduled_followups (
        id              varchar(64)  PRIMARY KEY,
        conversation_id text         NOT NULL DEFAULT '',
        user_id         varchar(255) NOT NULL,
        trigger_type    varchar(32)  NOT NULL,
        trigger_data    jsonb        NOT NULL DEFAULT '{}'::jsonb,
        scheduled_at    timestamptz  NOT NULL,
        executed_at     timestamptz,
        cancelled_at    timestamptz,
        status          varchar(16)  NOT NULL DEFAULT 'pending',
        template_id     varchar(64),
        message_content text,
        created_at      timestamptz  NOT NULL DEFAULT now(),
        error_message   text,
        retry_count     integer      NOT NULL DEFAULT 0,
        -- When the dispatcher may next try it: scheduled_at, later the retry backoff.
        due_at          timestamptz  NOT NULL,
        -- A dispatcher's claim: who holds it and until when (then anyone may retake it).
        lease_owner     varchar(128),
        lease_until     timestamptz,
        updated_at      timestamptz  NOT NULL DEFAULT now(),
        CONSTRAINT ck_followups_status
            CHECK (status IN ('pending', 'executed', 'cancelled', 'failed', 'expired')),
        CONSTRAINT ck_followups_trigger_type
            CHECK (trigger_type IN ('post_event', 're_engagement', 'emotion_based', 'custom'))
    )
    """,
    "CREATE INDEX idx_followups_status_scheduled ON scheduled_followups (status, scheduled_at)",
    "CREATE INDEX idx_followups_user_status ON scheduled_followups (user_id, status)",
    "CREATE INDEX idx_followups_conversation ON scheduled_followups (conversation_id)",
    # The dispatcher's claim query walks this small index only.
    "CREATE INDEX idx_followups_pending_due ON scheduled_followups (due_at) "
    "WHERE status = 'pending'",
    # Retention deletes old executed rows by executed_at.
    "CREATE INDEX idx_followups_executed_at ON scheduled_followups (executed_at) "
    "WHERE status = 'executed'",
    # Per-user projection: activity, time zone, current re-engagement.
    """
    CREATE TABLE user_projection (
        user_id            varchar(255) PRIMARY KEY,
        last_activity_at   timestamptz,
        timezone           varchar(64),
        timezone_at        timestamptz,
        reengagement_cycle integer,
        refused_followups  integer     NOT NULL DEFAULT 0,
        updated_at         timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX idx_user_projection_last_activity ON user_projection (last_activity_at)",
    # Per-booking projection: latest confirmation, cancellation, its follow-up.
    """
    CREATE TABLE booking_projection (
        booking_id       varchar(255) PRIMARY KEY,
        user_id          varchar(255) NOT NULL,
        event_date       timestamptz,
        conversation_id  text,
        timezone         varchar(64),
        confirmed_at     timestamptz,
        confirm_event_id varchar(255),
        cancelled_at     timestamptz,
        cancel_reason    text,
        followup_id      varchar(64),
        updated_at       timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX idx_booking_projection_user ON booking_projection (user_id)",
    # Per-conversation projection: the score history (one per message, the newest
    # 500), of which templates use the newest EMOTION_HISTORY_LIMIT.
    """
    CREATE TABLE conversation_emotions (
        conversation_id text         PRIMARY KEY,
        user_id         varchar(255) NOT NULL,
        -- [[message_id, scored_at ISO-8601, score], ...], newest first.
        history         jsonb        NOT NULL DEFAULT '[]'::jsonb,
        checkin_id      varchar(64),
        updated_at      timestamptz  NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX idx_conversation_emotions_user ON conversation_emotions (user_id)",
    # Consumer positions, written in the same transaction as the effects they
    # caused: the source of truth on restart and rebalance.
    """
    CREATE TABLE consumer_offsets (
        group_id    varchar(255) NOT NULL,
        topic       varchar(255) NOT NULL,
        partition   integer      NOT NULL,
        next_offset bigint       NOT NULL,
        updated_at  timestamptz  NOT NULL DEFAULT now(),
        PRIMARY KEY (group_id, topic, partition)
    )
    """,
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    """Drops the service's five tables with every row in them (an empty database)."""
    op.execute(
        "DROP TABLE consumer_offsets, conversation_emotions, booking_projection, "
        "user_projection, scheduled_followups"
    )
