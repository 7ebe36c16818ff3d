"""The walking skeleton: booking.confirmed in, follow-up stored, followup.due out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from consumer.config import Settings
from tests.integration.helpers import (
    CODEC,
    nothing_due,
    produce,
    query,
    read_to_end,
    running,
    wait_until,
)

pytestmark = pytest.mark.integration


async def test_confirmed_booking_is_followed_up_when_due(settings: Settings) -> None:
    now = datetime.now(UTC)
    # Due a few seconds from now: event_date + FOLLOWUP_DELAY_HOURS = now + 3 s.
    event_date = now - timedelta(hours=settings.followup_delay_hours) + timedelta(seconds=3)
    user, booking = f"user-{uuid.uuid4().hex[:6]}", f"bk-{uuid.uuid4().hex[:6]}"
    value = CODEC.encode_avro(
        "booking_confirmed",
        {
            "event_id": str(uuid.uuid4()),
            "occurred_at": now,
            "user_id": user,
            "booking_id": booking,
            "event_date": event_date,
            "conversation_id": None,
            "timezone": None,
        },
    )
    async with running(settings):
        await produce(settings, settings.topic_booking_confirmed, [(user.encode(), value)])
        post_event = "SELECT * FROM scheduled_followups WHERE trigger_type = 'post_event'"
        pending = await wait_until(lambda: query(settings, post_event), lambda rows: len(rows) == 1)
        row = pending[0]
        assert row["status"] == "pending"
        assert row["user_id"] == user
        assert row["trigger_type"] == "post_event"
        expected_at = event_date + timedelta(hours=24)
        assert abs((row["scheduled_at"] - expected_at).total_seconds()) < 0.01

        executed = await wait_until(
            lambda: query(settings, post_event + " AND status = 'executed'"),
            lambda rows: len(rows) == 1,
        )
        # Published before it was marked executed; nothing else left due to publish.
        await nothing_due(settings)
        out = await read_to_end(settings, settings.topic_followup_due)

    assert executed[0]["executed_at"] >= executed[0]["scheduled_at"]
    assert len(out) == 1
    record = out[0]
    assert record.key == user.encode()
    assert dict(record.headers)["content-type"].startswith(b"application/")
    due = CODEC.decode("followup_due", record.value)
    assert due["event_id"] == row["id"] == due["followup_id"]
    assert due["user_id"] == user
    assert due["booking_id"] == booking
    assert due["conversation_id"] == f"booking_{booking}"
    assert due["template_id"] == "post_event_neutral_emotion"  # no scores yet: neutral
    assert due["message"] == executed[0]["message_content"]
    assert f"{event_date:%B} {event_date.day}, {event_date.year}" in due["message"]
    assert due["attempt"] == 1
