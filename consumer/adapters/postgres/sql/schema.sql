-- Idempotent: `followup-consumer migrate` runs this whole file in one
-- transaction under an advisory lock, as often as it likes.

-- The table of the original design, same columns and indexes, plus what
-- leasing, retries and the projections need.
CREATE TABLE IF NOT EXISTS scheduled_followups (
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
    CONSTRAINT ck_followups_status
        CHECK (status IN ('pending', 'executed', 'cancelled', 'failed', 'expired')),
    CONSTRAINT ck_followups_trigger_type
        CHECK (trigger_type IN ('post_event', 're_engagement', 'emotion_based', 'custom'))
);
-- When the dispatcher may next try it: scheduled_at, later the retry backoff.
ALTER TABLE scheduled_followups ADD COLUMN IF NOT EXISTS due_at timestamptz;
UPDATE scheduled_followups SET due_at = scheduled_at WHERE due_at IS NULL;
ALTER TABLE scheduled_followups ALTER COLUMN due_at SET NOT NULL;
-- A dispatcher's claim: who holds it and until when (then anyone may retake it).
ALTER TABLE scheduled_followups ADD COLUMN IF NOT EXISTS lease_owner varchar(128);
ALTER TABLE scheduled_followups ADD COLUMN IF NOT EXISTS lease_until timestamptz;
ALTER TABLE scheduled_followups ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
-- Who cancelled it: 'operator' (a fact the rules never undo), or NULL: a rule did
-- (the rules recompute such a row from the events). For rows cancelled before
-- this column existed: the rules never cancel re-engagements or custom
-- follow-ups, and a post-event follow-up they cancel has no active booking left;
-- those are an operator's (true of new rows too, so repeating this is harmless).
ALTER TABLE scheduled_followups ADD COLUMN IF NOT EXISTS cancelled_by varchar(16);
UPDATE scheduled_followups SET cancelled_by = 'operator'
WHERE status = 'cancelled' AND cancelled_by IS NULL AND (
    trigger_type IN ('re_engagement', 'custom')
    OR (trigger_type = 'post_event'
        AND jsonb_array_length(coalesce(trigger_data->'active_booking_ids', '[]'::jsonb)) > 0)
);
-- Quiet hours and the daily cap: why a pending follow-up waits past scheduled_at
-- ('quiet_hours', 'daily_cap'; due_at says until when), and when a dispatcher
-- approved sending it (counted against the cap while its lease is live).
ALTER TABLE scheduled_followups ADD COLUMN IF NOT EXISTS held_reason varchar(16);
ALTER TABLE scheduled_followups ADD COLUMN IF NOT EXISTS approved_at timestamptz;

CREATE INDEX IF NOT EXISTS idx_followups_status_scheduled
    ON scheduled_followups (status, scheduled_at);
CREATE INDEX IF NOT EXISTS idx_followups_user_status
    ON scheduled_followups (user_id, status);
CREATE INDEX IF NOT EXISTS idx_followups_conversation
    ON scheduled_followups (conversation_id);
-- The dispatcher's claim query walks this small index only.
CREATE INDEX IF NOT EXISTS idx_followups_pending_due
    ON scheduled_followups (due_at) WHERE status = 'pending';
-- Retention deletes old executed rows by executed_at.
CREATE INDEX IF NOT EXISTS idx_followups_executed_at
    ON scheduled_followups (executed_at) WHERE status = 'executed';

-- Per-user projection: activity, time zone, current re-engagement.
CREATE TABLE IF NOT EXISTS user_projection (
    user_id            varchar(255) PRIMARY KEY,
    last_activity_at   timestamptz,
    timezone           varchar(64),
    timezone_at        timestamptz,
    reengagement_cycle integer,
    refused_followups  integer     NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_user_projection_last_activity
    ON user_projection (last_activity_at);

-- Per-booking projection: latest confirmation, cancellation, its follow-up.
CREATE TABLE IF NOT EXISTS booking_projection (
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
);
CREATE INDEX IF NOT EXISTS idx_booking_projection_user ON booking_projection (user_id);

-- Per-conversation projection: the score history (one per message, the newest
-- 500), of which templates use the newest EMOTION_HISTORY_LIMIT.
CREATE TABLE IF NOT EXISTS conversation_emotions (
    conversation_id text         PRIMARY KEY,
    user_id         varchar(255) NOT NULL,
    -- [[message_id, scored_at ISO-8601, score], ...], newest first.
    history         jsonb        NOT NULL DEFAULT '[]'::jsonb,
    checkin_id      varchar(64),
    updated_at      timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_conversation_emotions_user ON conversation_emotions (user_id);

-- Consumer positions, written in the same transaction as the effects they
-- caused: the source of truth on restart and rebalance.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_id    varchar(255) NOT NULL,
    topic       varchar(255) NOT NULL,
    partition   integer      NOT NULL,
    next_offset bigint       NOT NULL,
    updated_at  timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
