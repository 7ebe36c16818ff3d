"""Every rule of CONTRACT.md end to end: values produced to the real topics, the real
service consuming them, the effects read back from PostgreSQL (and `followup.due`).

Values are JSON for some events and Avro single-object encoding for others, so
that both wire formats reach every rule.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from consumer.config import Settings
from consumer.domain.model import emotion_checkin_id, post_event_id, reengagement_id
from consumer.entrypoints.runner import Service
from tests.integration.helpers import (
    CODEC,
    DispatchRounds,
    Event,
    activity,
    cancelled,
    confirmed,
    create_topics,
    headers_of,
    ms,
    new_id,
    nothing_due,
    produce_events,
    produce_raw,
    query,
    read_to_end,
    running,
    scored,
    wait_consumed,
    wait_until,
)

pytestmark = pytest.mark.integration


def now_ms() -> datetime:
    return ms(datetime.now(UTC))


async def followups(
    settings: Settings, user_id: str, trigger_type: str | None = None
) -> list[asyncpg.Record]:
    sql = "SELECT * FROM scheduled_followups WHERE user_id = $1"
    args: list[Any] = [user_id]
    if trigger_type is not None:
        sql += " AND trigger_type = $2"
        args.append(trigger_type)
    return await query(settings, sql + " ORDER BY scheduled_at, id", *args)


async def one_row(settings: Settings, sql: str, *args: Any) -> asyncpg.Record:
    rows = await query(settings, sql, *args)
    assert len(rows) == 1, rows
    return rows[0]


def data(row: asyncpg.Record) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(row["trigger_data"])
    return value


class Feed:
    """Produces events one step at a time and waits until each step is committed."""

    def __init__(self, settings: Settings, service: Service) -> None:
        self.settings = settings
        self.service = service
        self.count = 0

    async def __call__(self, *events: Event) -> None:
        await produce_events(self.settings, events)
        self.count += len(events)
        await wait_consumed(self.settings, self.count, service=self.service)


# --- post-event follow-ups --------------------------------------------------------------


async def test_confirmed_booking_schedules_post_event_at_event_date_plus_delay(
    settings: Settings,
) -> None:
    now = now_ms()
    user, booking = new_id("u"), new_id("bk")
    event_date = now + timedelta(days=3, hours=5)
    plain = confirmed(user, booking, event_date, now - timedelta(minutes=5))
    # A second user whose JSON value carries its timestamps with a +02:00 offset.
    other, other_booking = new_id("u"), new_id("bk")
    local = ZoneInfo("Etc/GMT-2")  # UTC+02:00
    other_date = ms((now + timedelta(days=4)).astimezone(local))
    offset_value = json.dumps(
        {
            "event_id": new_id("evc"),
            "occurred_at": (now - timedelta(hours=1)).astimezone(local).isoformat(),
            "user_id": other,
            "booking_id": other_booking,
            "event_date": other_date.isoformat(),
            "conversation_id": "conv-offset",
            "timezone": "Europe/Berlin",
        }
    ).encode()
    assert b"+02:00" in offset_value
    await create_topics(settings)
    async with running(settings) as service:
        await produce_events(settings, [plain])
        await produce_raw(
            settings, [(settings.topic_booking_confirmed, other.encode(), offset_value)]
        )
        await wait_consumed(settings, 2, service=service)

        rows = await followups(settings, user, "post_event")
        assert len(rows) == 1
        row = rows[0]
        assert row["id"] == post_event_id(user, booking)
        assert row["status"] == "pending"
        assert row["scheduled_at"] == event_date + timedelta(hours=24)
        assert row["conversation_id"] == f"booking_{booking}"
        assert row["executed_at"] is None
        assert row["cancelled_at"] is None
        assert data(row)["booking_ids"] == [booking]
        assert datetime.fromisoformat(data(row)["event_date"]) == event_date
        projected = await one_row(
            settings, "SELECT * FROM booking_projection WHERE booking_id = $1", booking
        )
        assert projected["followup_id"] == row["id"]
        assert projected["event_date"] == event_date
        assert projected["cancelled_at"] is None

        other_rows = await followups(settings, other, "post_event")
        assert len(other_rows) == 1
        assert other_rows[0]["scheduled_at"] == other_date.astimezone(UTC) + timedelta(hours=24)
        assert other_rows[0]["conversation_id"] == "conv-offset"
        assert other_rows[0]["status"] == "pending"


async def test_reconfirmation_with_new_event_date_moves_the_same_followup(
    settings: Settings,
) -> None:
    now = now_ms()
    user, booking = new_id("u"), new_id("bk")
    first_date, second_date = now + timedelta(days=5), now + timedelta(days=9, hours=3)
    first = confirmed(user, booking, first_date, now - timedelta(hours=3), fmt="avro")
    second = confirmed(user, booking, second_date, now - timedelta(hours=2), fmt="avro")
    # An older confirmation delivered last: the newest one (by occurred_at) wins.
    stale = confirmed(user, booking, now + timedelta(days=20), now - timedelta(hours=4))
    await create_topics(settings)
    async with running(settings) as service:
        feed = Feed(settings, service)
        await feed(first)
        (before,) = await followups(settings, user, "post_event")
        assert before["scheduled_at"] == first_date + timedelta(hours=24)

        await feed(second)
        (moved,) = await followups(settings, user, "post_event")
        assert moved["id"] == before["id"] == post_event_id(user, booking)
        assert moved["status"] == "pending"
        assert moved["scheduled_at"] == second_date + timedelta(hours=24)
        assert datetime.fromisoformat(data(moved)["event_date"]) == second_date

        await feed(stale)
        (after,) = await followups(settings, user, "post_event")
        assert after["id"] == moved["id"]
        assert after["scheduled_at"] == second_date + timedelta(hours=24)
        projected = await one_row(
            settings, "SELECT * FROM booking_projection WHERE booking_id = $1", booking
        )
        assert projected["event_date"] == second_date
        assert projected["confirm_event_id"] == second.event_id


async def test_bookings_within_a_day_share_a_followup_cancelled_only_with_all(
    settings: Settings,
) -> None:
    now = now_ms()
    user = new_id("u")
    b1, b2, b3 = new_id("bk1"), new_id("bk2"), new_id("bk3")
    date = now + timedelta(days=6)
    c1 = confirmed(user, b1, date, now - timedelta(hours=5))
    c2 = confirmed(user, b2, date + timedelta(hours=20), now - timedelta(hours=4), fmt="avro")
    # Three days away: outside the ±1 day window, its own follow-up.
    c3 = confirmed(user, b3, date + timedelta(days=3), now - timedelta(hours=3))
    await create_topics(settings)
    async with running(settings) as service:
        feed = Feed(settings, service)
        await feed(c1, c2, c3)
        rows = await followups(settings, user, "post_event")
        assert len(rows) == 2
        shared, alone = rows
        assert shared["id"] == post_event_id(user, b1)
        assert shared["scheduled_at"] == date + timedelta(hours=20 + 24)  # the later event
        assert data(shared)["booking_ids"] == [b1, b2]
        assert data(shared)["active_booking_ids"] == [b1, b2]
        assert alone["scheduled_at"] == date + timedelta(days=3, hours=24)
        assert data(alone)["booking_ids"] == [b3]
        links = await query(
            settings,
            "SELECT booking_id, followup_id FROM booking_projection WHERE user_id = $1",
            user,
        )
        assert {r["booking_id"]: r["followup_id"] for r in links} == {
            b1: shared["id"],
            b2: shared["id"],
            b3: alone["id"],
        }

        await feed(cancelled(user, b1, now - timedelta(hours=2), reason="changed plans"))
        shared_now, alone_now = await followups(settings, user, "post_event")
        assert shared_now["id"] == shared["id"]
        assert shared_now["status"] == "pending"
        assert shared_now["cancelled_at"] is None
        assert data(shared_now)["active_booking_ids"] == [b2]
        assert alone_now["status"] == "pending"

        cancel_at = now - timedelta(hours=1)
        await feed(cancelled(user, b2, cancel_at, fmt="avro"))
        final = {r["id"]: r for r in await followups(settings, user, "post_event")}
        assert final[shared["id"]]["status"] == "cancelled"
        assert final[shared["id"]]["cancelled_at"] == cancel_at
        assert final[alone["id"]]["status"] == "pending"


async def test_cancellation_consumed_before_its_confirmation_still_wins(
    settings: Settings,
) -> None:
    now = now_ms()
    user, booking, control = new_id("u"), new_id("bk"), new_id("bk-control")
    await create_topics(settings)
    async with running(settings) as service:
        feed = Feed(settings, service)
        # The cancellation is produced and fully consumed first ...
        await feed(cancelled(user, booking, now - timedelta(minutes=1)))
        # ... then its confirmation arrives, plus an unrelated booking as a control.
        await feed(
            confirmed(user, booking, now + timedelta(days=2), now - timedelta(minutes=2)),
            confirmed(
                user, control, now + timedelta(days=9), now - timedelta(minutes=2), fmt="avro"
            ),
        )
        pending = await query(
            settings,
            "SELECT trigger_data->>'booking_id' AS booking FROM scheduled_followups "
            "WHERE user_id = $1 AND trigger_type = 'post_event' AND status = 'pending'",
            user,
        )
        assert [r["booking"] for r in pending] == [control]
        projected = await one_row(
            settings, "SELECT * FROM booking_projection WHERE booking_id = $1", booking
        )
        assert projected["cancelled_at"] == now - timedelta(minutes=1)
        assert projected["confirmed_at"] == now - timedelta(minutes=2)
        # The same `cancelled` follow-up as when the cancellation comes second.
        (row,) = await query(
            settings, "SELECT * FROM scheduled_followups WHERE id = $1", projected["followup_id"]
        )
        assert row["id"] == post_event_id(user, booking)
        assert row["status"] == "cancelled"
        assert row["cancelled_at"] == now - timedelta(minutes=1)


async def test_shared_followup_timing_does_not_depend_on_cross_topic_order(
    settings: Settings,
) -> None:
    now = now_ms()
    first_date = now + timedelta(days=6)
    second_date = first_date + timedelta(hours=20)  # within a day: joins the first
    t1, t2, t3 = (now - timedelta(hours=h) for h in (3, 2, 1))

    def story(user: str) -> tuple[Event, Event, Event]:
        """Book b1, book b2 (joins b1's follow-up), cancel b1: the same facts for both."""
        return (
            confirmed(user, f"{user}-b1", first_date, t1),
            confirmed(user, f"{user}-b2", second_date, t2),
            cancelled(user, f"{user}-b1", t3),
        )

    x, y = new_id("ux"), new_id("uy")
    x_b1, x_b2, x_cancel = story(x)
    y_b1, y_b2, y_cancel = story(y)
    await create_topics(settings)
    async with running(settings) as service:
        feed = Feed(settings, service)
        await feed(x_b1, y_b1)
        await feed(x_b2)  # X: the confirmation topic is ahead ...
        await feed(x_cancel, y_cancel)
        await feed(y_b2)  # ... Y: the cancellation topic is ahead.
        sql = (
            "SELECT * FROM scheduled_followups WHERE user_id = $1 "
            "AND trigger_type = 'post_event' AND status = 'pending'"
        )
        (for_x,) = await query(settings, sql, x)
        (for_y,) = await query(settings, sql, y)
    assert data(for_x)["active_booking_ids"] == [f"{x}-b2"]
    assert data(for_y)["active_booking_ids"] == [f"{y}-b2"]
    assert for_y["scheduled_at"] == second_date + timedelta(hours=24)
    assert for_x["scheduled_at"] == for_y["scheduled_at"]
    assert datetime.fromisoformat(data(for_x)["event_date"]) == second_date


# --- emotions ----------------------------------------------------------------------------


async def test_low_emotion_schedules_one_checkin_and_recovery_cancels_it(
    settings: Settings,
) -> None:
    now = now_ms()
    user, conv, flat_conv = new_id("u"), new_id("conv"), new_id("conv-flat")
    start = now - timedelta(minutes=30)
    at = [start + timedelta(minutes=i) for i in range(8)]
    # Running averages 0.6, 0.55, 0.5, 0.45, 0.38: below 0.4 with the fifth score.
    low = [
        scored(user, conv, s, at[i], fmt="avro") for i, s in enumerate([0.6, 0.5, 0.4, 0.3, 0.1])
    ]
    # Another conversation whose average is exactly 0.4 all along: not below, no check-in.
    flat = [scored(user, flat_conv, s, at[i]) for i, s in enumerate([0.7, 0.1, 0.4, 0.4, 0.4])]
    await create_topics(settings)
    async with running(settings) as service:
        feed = Feed(settings, service)
        await feed(*low, *flat)
        rows = await followups(settings, user, "emotion_based")
        assert len(rows) == 1
        checkin = rows[0]
        assert checkin["id"] == emotion_checkin_id(user, conv, low[4].record["message_id"])
        assert checkin["status"] == "pending"
        assert checkin["conversation_id"] == conv
        assert checkin["scheduled_at"] == at[4] + timedelta(hours=24)
        conv_row = await one_row(
            settings, "SELECT * FROM conversation_emotions WHERE conversation_id = $1", conv
        )
        assert conv_row["checkin_id"] == checkin["id"]

        # A further low score does not add a second check-in.
        await feed(scored(user, conv, 0.2, at[5], fmt="avro"))
        assert [r["id"] for r in await followups(settings, user, "emotion_based")] == [
            checkin["id"]
        ]

        # Window now [0.2, 0.1, 0.3, 0.4, 0.5]; 0.95 pushes out 0.5: [0.95, 0.2, 0.1, 0.3, 0.4]
        # averages 0.39: still low. A second 0.95 makes it 0.5: recovered, cancelled.
        await feed(scored(user, conv, 0.95, at[6]))
        (still,) = await followups(settings, user, "emotion_based")
        assert still["status"] == "pending"
        await feed(scored(user, conv, 0.95, at[7]))
        (recovered,) = await followups(settings, user, "emotion_based")
        assert recovered["id"] == checkin["id"]
        assert recovered["status"] == "cancelled"
        assert recovered["cancelled_at"] == at[7]


async def test_emotion_history_keeps_every_score_newest_first(settings: Settings) -> None:
    now = now_ms()
    user, conv = new_id("u"), new_id("conv")
    at = [now - timedelta(minutes=60 - i) for i in range(7)]
    events = [
        scored(
            user, conv, 0.71 + i / 100, at[i], message_id=f"m{i}", fmt="avro" if i % 2 else "json"
        )
        for i in range(7)
    ]
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != events
    await create_topics(settings)
    async with running(settings) as service:
        feed = Feed(settings, service)
        await feed(*shuffled)
        # A re-delivery of an old score (same message) changes nothing.
        await feed(events[0])
        row = await one_row(
            settings, "SELECT * FROM conversation_emotions WHERE conversation_id = $1", conv
        )
        # The whole history, one entry per message; templates read the newest five.
        history = json.loads(row["history"])
        assert [h[0] for h in history] == ["m6", "m5", "m4", "m3", "m2", "m1", "m0"]
        assert [datetime.fromisoformat(h[1]) for h in history] == at[::-1]
        assert [h[2] for h in history] == pytest.approx([0.77, 0.76, 0.75, 0.74, 0.73, 0.72, 0.71])
        assert row["user_id"] == user
        assert await followups(settings, user, "emotion_based") == []


# --- activity and re-engagement -------------------------------------------------------------


def nine_at_or_after(moment: datetime, tz: ZoneInfo) -> datetime:
    """The first 09:00 local time at or after `moment`, in UTC."""
    local = moment.astimezone(tz)
    due = datetime.combine(local.date(), time(9), tzinfo=tz)
    if due < local:
        due = datetime.combine(local.date() + timedelta(days=1), time(9), tzinfo=tz)
    return due.astimezone(UTC)


async def test_activity_moves_the_single_reengagement_to_nine_local_never_backwards(
    settings: Settings,
) -> None:
    new_york, tokyo = ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")
    settings = settings.model_copy(update={"scheduler_timezone": "America/New_York"})
    now = now_ms()
    idle = timedelta(days=30)
    day = (now - timedelta(days=2) + idle).astimezone(new_york).date()
    # User 1: activity whose +30 days falls at 08:30 New York time, then one at 14:00.
    a1 = datetime.combine(day, time(8, 30), tzinfo=new_york).astimezone(UTC) - idle
    a2 = datetime.combine(day, time(14, 0), tzinfo=new_york).astimezone(UTC) - idle
    # User 2: +30 days lands exactly on 09:00:00 local: due at that instant.
    a_exact = datetime.combine(day, time(9), tzinfo=new_york).astimezone(UTC) - idle
    u1, u2, u3 = new_id("u1"), new_id("u2"), new_id("u3")
    # User 3: a booking says Asia/Tokyo; a later plain activity decides the time.
    booked_at, u3_active = now - timedelta(days=3, hours=1), now - timedelta(days=1, hours=7)
    await create_topics(settings)
    async with running(settings) as service:
        feed = Feed(settings, service)
        await feed(activity(u1, a1), activity(u2, a_exact, fmt="avro"))
        (r1,) = await followups(settings, u1, "re_engagement")
        assert r1["id"] == reengagement_id(u1, 0)
        assert r1["status"] == "pending"
        assert r1["scheduled_at"] == datetime.combine(day, time(9), tzinfo=new_york)
        (r2,) = await followups(settings, u2, "re_engagement")
        assert r2["scheduled_at"] == a_exact + idle

        await feed(activity(u1, a2, activity_type="search", fmt="avro"))
        (moved,) = await followups(settings, u1, "re_engagement")
        assert moved["id"] == r1["id"]
        expected = datetime.combine(day + timedelta(days=1), time(9), tzinfo=new_york)
        assert moved["scheduled_at"] == expected == nine_at_or_after(a2 + idle, new_york)
        assert datetime.fromisoformat(data(moved)["last_activity"]) == a2

        # Older activity, in between and before: never moves it backwards.
        await feed(activity(u1, a1 + timedelta(hours=1)), activity(u1, a1 - timedelta(days=3)))
        (kept,) = await followups(settings, u1, "re_engagement")
        assert kept["scheduled_at"] == expected
        user_row = await one_row(settings, "SELECT * FROM user_projection WHERE user_id = $1", u1)
        assert user_row["last_activity_at"] == a2

        await feed(
            confirmed(u3, new_id("bk"), now + timedelta(days=10), booked_at, timezone="Asia/Tokyo"),
            activity(u3, u3_active, fmt="avro"),
        )
        (r3,) = await followups(settings, u3, "re_engagement")
        due3 = nine_at_or_after(u3_active + idle, tokyo)
        assert due3 != nine_at_or_after(u3_active + idle, new_york)
        assert r3["scheduled_at"] == due3
        assert r3["scheduled_at"].astimezone(tokyo).time() == time(9)
        assert r3["status"] == "pending"


async def test_per_user_limit_refuses_and_counts_beyond_it(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_pending_followups_per_user": 2})
    now = now_ms()
    user, other = new_id("u"), new_id("u-other")
    b1, b2, b3, b4 = (new_id(f"bk{i}") for i in range(1, 5))
    date = now + timedelta(days=10)
    await create_topics(settings)
    async with running(settings) as service:
        feed = Feed(settings, service)
        await feed(activity(user, now - timedelta(hours=6)))  # re-engagement: 1 pending
        await feed(confirmed(user, b1, date, now - timedelta(hours=5)))  # post-event: 2
        await feed(
            confirmed(user, b2, date + timedelta(days=5), now - timedelta(hours=4), fmt="avro"),
            confirmed(user, b3, date + timedelta(days=10), now - timedelta(hours=3)),
            scored(user, new_id("conv"), 0.1, now - timedelta(hours=3)),  # check-in: refused
        )
        rows = await followups(settings, user)
        assert sorted((r["trigger_type"], r["status"]) for r in rows) == [
            ("post_event", "pending"),
            ("re_engagement", "pending"),
        ]
        assert data(next(r for r in rows if r["trigger_type"] == "post_event"))["booking_ids"] == [
            b1
        ]
        user_row = await one_row(settings, "SELECT * FROM user_projection WHERE user_id = $1", user)
        assert user_row["refused_followups"] == 3
        links = await query(
            settings,
            "SELECT booking_id, followup_id FROM booking_projection WHERE user_id = $1",
            user,
        )
        assert {r["booking_id"]: r["followup_id"] is None for r in links} == {
            b1: False,
            b2: True,
            b3: True,
        }

        # The consumer kept going: other users are served; freed room is usable again.
        await feed(
            activity(other, now - timedelta(hours=1)),
            cancelled(user, b1, now - timedelta(hours=2)),
        )
        await feed(confirmed(user, b4, date + timedelta(days=20), now - timedelta(hours=1)))
        assert len(await followups(settings, other, "re_engagement")) == 1
        pending = await query(
            settings,
            "SELECT trigger_data->>'booking_id' AS booking FROM scheduled_followups "
            "WHERE user_id = $1 AND trigger_type = 'post_event' AND status = 'pending'",
            user,
        )
        assert [r["booking"] for r in pending] == [b4]
        user_row = await one_row(settings, "SELECT * FROM user_projection WHERE user_id = $1", user)
        assert user_row["refused_followups"] == 3


# --- firing ------------------------------------------------------------------------------


async def test_year_old_booking_is_expired_and_never_published(settings: Settings) -> None:
    now = now_ms()
    old_user, late_user = new_id("u-old"), new_id("u-late")
    old = confirmed(
        old_user, new_id("bk"), now - timedelta(days=365), now - timedelta(days=366), fmt="avro"
    )
    # The control: due an hour ago, within MAX_LATENESS: sent at once.
    late_date = now - timedelta(hours=25)
    late = confirmed(late_user, new_id("bk"), late_date, now - timedelta(days=2))
    await create_topics(settings)
    async with running(settings) as service:
        rounds = DispatchRounds(service)
        await Feed(settings, service)(old, late)
        (expired,) = await followups(settings, old_user, "post_event")
        assert expired["status"] == "expired"
        assert expired["scheduled_at"] == old.record["event_date"] + timedelta(hours=24)
        (reengagement,) = await followups(settings, old_user, "re_engagement")
        assert reengagement["status"] == "expired"
        sent = await wait_until(
            lambda: followups(settings, late_user, "post_event"),
            lambda rows: len(rows) == 1 and rows[0]["status"] == "executed",
        )
        # More dispatch rounds, begun after it was sent, leave the expired ones alone
        # and send nothing more.
        await rounds.after_now(2)
        rows = await followups(settings, old_user)
        out = await read_to_end(settings, settings.topic_followup_due)
    assert {r["status"] for r in rows} == {"expired"}
    assert all(r["executed_at"] is None for r in rows)
    assert len(out) == 1
    due = CODEC.decode("followup_due", out[0].value)
    assert due["followup_id"] == sent[0]["id"]
    assert due["user_id"] == late_user
    assert due["scheduled_at"] == late_date + timedelta(hours=24)
    assert due["emitted_at"] >= due["scheduled_at"]


async def test_template_is_chosen_from_the_emotions_at_firing_time(settings: Settings) -> None:
    now = now_ms()
    user, booking, conv = new_id("u"), new_id("bk"), new_id("conv")
    due_at = now + timedelta(seconds=4)
    await create_topics(settings)
    async with running(settings) as service:
        feed = Feed(settings, service)
        # When confirmed, the conversation's average is low (0.2) ...
        await feed(
            scored(user, conv, 0.2, now - timedelta(minutes=10), fmt="avro"),
            confirmed(
                user,
                booking,
                due_at - timedelta(hours=24),
                now - timedelta(minutes=9),
                conversation_id=conv,
            ),
        )
        # ... by the time it fires, [0.9 x4, 0.2] averages 0.76: high.
        await feed(
            *(scored(user, conv, 0.9, now - timedelta(minutes=8 - i), fmt="avro") for i in range(4))
        )
        assert datetime.now(UTC) < due_at, "setup too slow: the follow-up may already have fired"
        (pending,) = await followups(settings, user, "post_event")
        assert pending["status"] == "pending"
        executed = await wait_until(
            lambda: followups(settings, user, "post_event"),
            lambda rows: rows[0]["status"] == "executed",
        )
        # Published before it was marked executed; nothing else left due to publish.
        await nothing_due(settings)
        out = await read_to_end(settings, settings.topic_followup_due)
    assert len(out) == 1
    record = out[0]
    assert record.key == user.encode()
    assert headers_of(record)["content-type"] == b"application/vnd.apache.avro+binary"
    due = CODEC.decode("followup_due", record.value)
    assert due["template_id"] == "post_event_high_emotion"
    assert due["trigger_type"] == "post_event"
    assert due["followup_id"] == due["event_id"] == executed[0]["id"]
    assert due["conversation_id"] == conv
    assert due["booking_id"] == booking
    assert due["message"] == executed[0]["message_content"]
    assert executed[0]["template_id"] == "post_event_high_emotion"
    event_date = due_at - timedelta(hours=24)
    assert f"{event_date:%B} {event_date.day}, {event_date.year}" in due["message"]
    # The low-emotion check-in of the first score was cancelled by the recovery, not sent.
    (checkin,) = await followups(settings, user, "emotion_based")
    assert checkin["status"] == "cancelled"
