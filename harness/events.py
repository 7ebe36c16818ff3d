"""Input events as a producer would write them, and a deterministic mixed stream."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from consumer.adapters.codec import Codec

CODEC = Codec.load()


def ms(when: datetime) -> datetime:
    """`when` cut to whole milliseconds, the precision of the wire format."""
    return when.replace(microsecond=when.microsecond - when.microsecond % 1000)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Event:
    """One input event as a producer would write it: kind, record and wire format."""

    kind: str
    record: dict[str, Any]
    fmt: str = "json"  # "json" or "avro"

    @property
    def key(self) -> bytes:
        return str(self.record["user_id"]).encode()

    @property
    def value(self) -> bytes:
        if self.fmt == "avro":
            return CODEC.encode_avro(self.kind, self.record)
        return CODEC.encode_json(self.kind, self.record)

    @property
    def event_id(self) -> str:
        return str(self.record["event_id"])


def confirmed(
    user_id: str,
    booking_id: str,
    event_date: datetime,
    occurred_at: datetime,
    *,
    conversation_id: str | None = None,
    timezone: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    return Event(
        "booking_confirmed",
        {
            "event_id": event_id or new_id("evc"),
            "occurred_at": occurred_at,
            "user_id": user_id,
            "booking_id": booking_id,
            "event_date": event_date,
            "conversation_id": conversation_id,
            "timezone": timezone,
        },
        fmt,
    )


def cancelled(
    user_id: str,
    booking_id: str,
    occurred_at: datetime,
    *,
    reason: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    return Event(
        "booking_cancelled",
        {
            "event_id": event_id or new_id("evx"),
            "occurred_at": occurred_at,
            "user_id": user_id,
            "booking_id": booking_id,
            "reason": reason,
        },
        fmt,
    )


def scored(
    user_id: str,
    conversation_id: str,
    score: float,
    occurred_at: datetime,
    *,
    message_id: str | None = None,
    label: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    return Event(
        "message_emotion_scored",
        {
            "event_id": event_id or new_id("evs"),
            "occurred_at": occurred_at,
            "user_id": user_id,
            "conversation_id": conversation_id,
            "message_id": message_id or new_id("msg"),
            "score": score,
            "label": label,
        },
        fmt,
    )


def activity(
    user_id: str,
    occurred_at: datetime,
    *,
    activity_type: str = "login",
    conversation_id: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    return Event(
        "user_activity",
        {
            "event_id": event_id or new_id("eva"),
            "occurred_at": occurred_at,
            "user_id": user_id,
            "activity_type": activity_type,
            "conversation_id": conversation_id,
        },
        fmt,
    )


TIME_ZONES = (None, "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")


def mixed_stream(seed: int, users: int, base: datetime) -> tuple[list[Event], list[Event]]:
    """A deterministic, realistic stream of the four input topics, in two phases.

    Per user: bookings (some within a day of each other, so they share a follow-up;
    some re-confirmed with another date; now and then one a year and more in the
    past, created `expired`), conversations with emotion scores (some dropping below
    0.4, some recovering), activity (some of it delivered late, out of order).

    Phase two holds the cancellations of phase-one bookings and the confirmations of
    bookings whose cancellation came first, in phase one. Producing phase two only
    after phase one is consumed makes the final state independent of how the
    consumer happens to interleave the topics; every event of one user on one topic
    is produced in `occurred_at` order. Every follow-up lies in the future of `base`
    (or a year and more before it), so the outcome does not depend on the clock.
    """
    rng = random.Random(seed)
    serial = iter(range(10**9))
    phase1: list[Event] = []
    phase2: list[Event] = []
    late: list[Event] = []

    def eid(kind: str) -> str:
        return f"s{seed}-{kind}-{next(serial)}"

    def fmt() -> str:
        return rng.choice(("json", "avro"))

    for u in range(users):
        user = f"s{seed}-user-{u}"
        tz = rng.choice(TIME_ZONES)
        clock = base + timedelta(minutes=rng.randint(0, 3 * 24 * 60))

        def tick(max_minutes: int = 180) -> datetime:
            nonlocal clock
            clock += timedelta(minutes=rng.randint(1, max_minutes), seconds=rng.randint(0, 59))
            return clock

        bookings: list[str] = []
        for b in range(rng.randint(1, 4)):
            booking = f"{user}-bk{b}"
            if rng.random() < 0.1:
                when = base - timedelta(days=rng.randint(400, 700), hours=rng.randint(0, 23))
                phase1.append(
                    confirmed(
                        user, booking, when, when - timedelta(days=20), event_id=eid("c"), fmt=fmt()
                    )
                )
                continue
            # Dates on a 10-hour grid: neighbours often fall within the ±1 day window.
            date = base + timedelta(
                days=20, hours=10 * rng.randint(0, 12), minutes=rng.randint(0, 59)
            )
            conv = rng.choice((None, f"{user}-conv0", f"{user}-conv-bk{b}"))
            phase1.append(
                confirmed(
                    user,
                    booking,
                    date,
                    tick(),
                    conversation_id=conv,
                    timezone=tz,
                    event_id=eid("c"),
                    fmt=fmt(),
                )
            )
            bookings.append(booking)
            if rng.random() < 0.3:
                moved = date + timedelta(hours=rng.choice((-30, -12, 8, 20, 50, 100)))
                phase1.append(
                    confirmed(
                        user,
                        booking,
                        moved,
                        tick(),
                        conversation_id=conv,
                        timezone=tz,
                        event_id=eid("c"),
                        fmt=fmt(),
                    )
                )
        conversations = [f"{user}-conv{c}" for c in range(rng.randint(1, 2))]
        moods = {c: rng.choice(((0.0, 0.45), (0.3, 0.8), (0.6, 1.0))) for c in conversations}

        def scores(
            target: list[Event], user: str, conv: str, mood: tuple[float, float], count: int
        ) -> None:
            for _ in range(count):
                target.append(
                    scored(
                        user,
                        conv,
                        round(rng.uniform(*mood), 2),
                        tick(90),
                        message_id=eid("m"),
                        label=rng.choice((None, "joy", "anger")),
                        event_id=eid("s"),
                        fmt=fmt(),
                    )
                )

        for conv in conversations:
            scores(phase1, user, conv, moods[conv], rng.randint(2, 8))
        for _ in range(rng.randint(0, 4)):
            phase1.append(
                activity(
                    user,
                    tick(),
                    activity_type=rng.choice(("login", "search", "view")),
                    event_id=eid("a"),
                    fmt=fmt(),
                )
            )
        early: str | None = None
        if rng.random() < 0.15:
            early = f"{user}-bk-early"
            phase1.append(
                cancelled(user, early, tick(), reason="changed plans", event_id=eid("x"), fmt=fmt())
            )

        # Phase two: strictly later than everything of this user in phase one.
        clock += timedelta(hours=1)
        for booking in bookings:
            if rng.random() < 0.35:
                phase2.append(
                    cancelled(
                        user,
                        booking,
                        tick(),
                        reason=rng.choice((None, "weather")),
                        event_id=eid("x"),
                        fmt=fmt(),
                    )
                )
        if early is not None:
            date = base + timedelta(days=25, hours=rng.randint(0, 100))
            phase2.append(
                confirmed(user, early, date, tick(), timezone=tz, event_id=eid("c"), fmt=fmt())
            )
        for conv in conversations:
            moods[conv] = rng.choice(((0.0, 0.45), (0.5, 1.0)))
            scores(phase2, user, conv, moods[conv], rng.randint(0, 5))
        if rng.random() < 0.5:
            phase2.append(activity(user, tick(), event_id=eid("a"), fmt=fmt()))
        if rng.random() < 0.3:
            # Delivered last, happened early: must never move anything backwards.
            late.append(
                activity(
                    user, base - timedelta(hours=rng.randint(1, 50)), event_id=eid("a"), fmt=fmt()
                )
            )

    def by_time(events: list[Event]) -> list[Event]:
        return sorted(events, key=lambda e: e.record["occurred_at"])

    return by_time(phase1), by_time(phase2) + late
