"""Order does not matter, end to end: one generated history (a few thousand events
of many users: bookings whose dates chain, confirmations re-sent with other dates,
cancellations before and after their confirmations, scores with repeated message
ids, activity, exact duplicates) goes through the real service three times, into
three empty databases:

- run A: one instance, the events produced in one shuffled order, keyed by user,
  3 partitions per topic, batches of up to 20,000 records;
- run B: two instances in one consumer group, each with its share of the
  partitions before anything is produced, another shuffled order, keys that
  scatter each user's events over the partitions (random or none), 4 partitions
  per topic, batches of at most 97 records, applied in parts of at most 11 scores;
- `replay` of run A's topics into a third database, in parts of at most 5 scores.

Once each has committed every record (its stored offsets reach the end of the
topics), the follow-ups and the three projections are compared row by row.
Nothing is dispatched in between (SCHEDULER_ENABLED=false), and every time in
the history is far from `now - MAX_LATENESS`, so the seconds between the runs
cannot turn a pending follow-up into an expired one.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from consumer.config import Settings
from consumer.entrypoints.replay import replay
from tests.integration.helpers import (
    Event,
    activity,
    cancelled,
    confirmed,
    consumed_to_end,
    create_topics,
    extra_database,
    input_topics,
    ms,
    produce_raw,
    query,
    running,
    scored,
    snapshot,
    snapshot_diff,
    topic_of,
    wait_until,
)

pytestmark = pytest.mark.integration

ZONES = (None, "Europe/Berlin", "America/New_York", "Asia/Tokyo")


class _History:
    """A generated history: per user, bookings clustered around one day (so that
    chains form), some re-sent with other dates, some cancelled (before or after,
    once or twice), some only ever cancelled, some long past; scores in one or
    two conversations, with some messages scored twice; activity."""

    def __init__(self, seed: int, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.now = now
        self.base = ms(now - timedelta(days=12))  # everything happened 8 to 12 days ago
        self.serial = iter(range(10**9))
        self.events: list[Event] = []

    def eid(self, kind: str) -> str:
        return f"o{self.seed}-{kind}-{next(self.serial)}"

    def when(self) -> datetime:
        rng = self.rng
        return self.base + timedelta(minutes=rng.randrange(4 * 24 * 60), seconds=rng.randrange(60))

    def fmt(self) -> str:
        return self.rng.choice(("json", "avro"))

    def user(self, user: str) -> None:
        rng = self.rng
        tz = rng.choice(ZONES)
        # The user's bookings cluster around one day, on a 10-hour grid.
        center = ms(self.now + timedelta(days=rng.randint(3, 30), hours=rng.randint(0, 23)))
        for b in range(rng.randint(1, 5)):
            self.booking(user, f"{user}-b{b}", center, tz)
        for c in range(rng.randint(1, 2)):
            self.conversation(user, f"{user}-c{c}")
        for _ in range(rng.randint(0, 4)):
            self.events.append(activity(user, self.when(), event_id=self.eid("a"), fmt=self.fmt()))

    def booking(self, user: str, booking: str, center: datetime, tz: str | None) -> None:
        rng = self.rng
        if rng.random() < 0.1:  # long past: expired (or cancelled)
            dates = [ms(self.now - timedelta(days=rng.randint(30, 400)))]
        else:
            dates = [center + timedelta(hours=10 * rng.randint(-3, 3))]
            for _ in range(rng.choice((0, 0, 1, 2))):  # re-sent with another date
                dates.append(dates[0] + timedelta(hours=rng.choice((-30, -12, 8, 20, 72))))
        conv = rng.choice((None, f"{user}-c0", f"{user}-c1"))
        if rng.random() < 0.05:
            dates = []  # only ever cancelled
        for date in dates:
            self.events.append(
                confirmed(
                    user,
                    booking,
                    date,
                    self.when(),
                    conversation_id=conv,
                    timezone=rng.choice((tz, tz, None)),
                    event_id=self.eid("c"),
                    fmt=self.fmt(),
                )
            )
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
            reason = rng.choice((None, "weather", "ill"))
            self.events.append(
                cancelled(
                    user,
                    booking,
                    self.when(),
                    reason=reason,
                    event_id=self.eid("x"),
                    fmt=self.fmt(),
                )
            )

    def conversation(self, user: str, conv: str) -> None:
        rng = self.rng
        mood = rng.choice(((0.0, 0.5), (0.2, 0.8), (0.5, 1.0)))
        count = rng.randint(2, 10)
        for _ in range(count):
            self.events.append(
                scored(
                    user,
                    conv,
                    round(rng.uniform(*mood), 2),
                    self.when(),
                    # Some messages are scored twice, with other values and times.
                    message_id=f"{conv}-m{rng.randrange(max(1, count - 2))}",
                    event_id=self.eid("s"),
                    fmt=self.fmt(),
                )
            )


def history(seed: int, users: int, now: datetime) -> list[Event]:
    h = _History(seed, now)
    for u in range(users):
        h.user(f"o{seed}-u{u}")
    # Exact duplicates: the same record produced twice.
    return h.events + h.rng.sample(h.events, len(h.events) // 30)


def run_settings(settings: Settings, database_url: str, **changes: object) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return settings.model_copy(
        update={
            "database_url": database_url,
            "kafka_group_id": f"{prefix}-group",
            "topic_booking_confirmed": f"{prefix}.booking.confirmed",
            "topic_booking_cancelled": f"{prefix}.booking.cancelled",
            "topic_emotion_scored": f"{prefix}.message.emotion_scored",
            "topic_user_activity": f"{prefix}.user.activity",
            "topic_followup_due": f"{prefix}.followup.due",
            "topic_dlq": f"{prefix}.followup.dlq",
            "scheduler_enabled": False,
            **changes,
        }
    )


async def test_two_orders_two_instances_give_the_same_tables(settings: Settings) -> None:
    now = datetime.now(UTC)
    events = history(seed=10, users=150, now=now)
    async with extra_database(settings) as other_database:
        a = run_settings(settings, settings.database_url, topic_partitions=3)
        # b applies its fetches in parts of at most 11 scores (INGEST_BATCH_MAX_SCORES).
        b = run_settings(
            settings,
            other_database,
            topic_partitions=4,
            ingest_batch_max_records=97,
            ingest_batch_max_scores=11,
        )

        order_a = events[:]
        random.Random(1).shuffle(order_a)
        order_b = events[:]
        random.Random(2).shuffle(order_b)
        scatter = random.Random(3)

        def key_b() -> bytes | None:
            return scatter.choice((None, uuid.UUID(int=scatter.getrandbits(128)).bytes))

        for s in (a, b):
            await create_topics(s)
        await produce_raw(a, [(topic_of(a, e.kind), e.key, e.value) for e in order_a])
        async with running(a) as service:
            await consumed_to_end(a, timeout=180, service=service)

        # `replay` of A's topics into a third database, in parts of at most 5 scores.
        async with extra_database(settings) as replayed_database:
            c = a.model_copy(
                update={
                    "database_url": replayed_database,
                    "ingest_batch_max_records": 300,
                    "ingest_batch_max_scores": 5,
                }
            )
            report = await replay(c, lambda: datetime.now(UTC), progress=False)
            assert report.events == len(events)
            replayed = await snapshot(c)

        async with running(b) as one, running(b) as two:
            # Both in the group with their share of the partitions, then the events.
            async def shares() -> list[int]:
                return [len(one.consumer.assignment()), len(two.consumer.assignment())]

            await wait_until(
                shares, lambda got: all(got) and sum(got) == 4 * len(input_topics(b)), timeout=60
            )
            await produce_raw(b, [(topic_of(b, e.kind), key_b(), e.value) for e in order_b])
            await consumed_to_end(b, timeout=180, service=one)
            assert not two.stop.is_set()
            assert one.positions, "the first instance applied records"
            assert two.positions, "the second instance applied records"

        first, second = await snapshot(a), await snapshot(b)

    compared = {table: len(rows) for table, rows in first.items()}
    assert snapshot_diff(first, second) == [], compared
    assert first == second
    assert snapshot_diff(first, replayed) == [], compared

    # Not a comparison of empty tables: the history reaches every rule.
    kinds = Counter((r["trigger_type"], r["status"]) for r in first["scheduled_followups"])
    assert (
        min(
            kinds[("post_event", "pending")],
            kinds[("post_event", "cancelled")],
            kinds[("post_event", "expired")],
            kinds[("emotion_based", "expired")],
            kinds[("emotion_based", "cancelled")],
            kinds[("re_engagement", "pending")],
        )
        > 0
    ), kinds
    chained = await query(
        a,
        "SELECT count(*) AS n FROM scheduled_followups "
        "WHERE jsonb_array_length(trigger_data->'booking_ids') > 1",
    )
    assert chained[0]["n"] > 0
    print(f"compared row by row: {compared}; follow-ups by kind: {dict(kinds)}")
