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
    locale: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    record = {
        "event_id": event_id or new_id("evc"),
        "occurred_at": occurred_at,
        "user_id": user_id,
        "booking_id": booking_id,
        "event_date": event_date,
        "conversation_id": conversation_id,
        "timezone": timezone,
    }
    if locale is not None:  # left out otherwise, as a producer on the v2 schema writes it
        record["locale"] = locale
    return Event("booking_confirmed", record, fmt)


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
    locale: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    record = {
        "event_id": event_id or new_id("eva"),
        "occurred_at": occurred_at,
        "user_id": user_id,
        "activity_type": activity_type,
        "conversation_id": conversation_id,
    }
    if locale is not None:  # left out otherwise, as a producer on the v1 schema writes it
        record["locale"] = locale
    return Event("user_activity", record, fmt)


TIME_ZONES = (None, "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
MOODS = ((0.0, 0.45), (0.3, 0.8), (0.6, 1.0))  # score ranges of a conversation, phase one
MOODS_LATER = ((0.0, 0.45), (0.5, 1.0))  # and in phase two


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
    gen = _MixedStream(seed, base)
    for u in range(users):
        gen.add_user(u)
    return gen.by_time(gen.phase1), gen.by_time(gen.phase2) + gen.late


class _MixedStream:
    """The state behind `mixed_stream`: one `random.Random` drawn from in a fixed order
    (the order is the stream: keep it when changing anything here), a serial for the
    event ids, the phases being built and the current user's clock."""

    def __init__(self, seed: int, base: datetime) -> None:
        self.seed = seed
        self.base = base
        self.rng = random.Random(seed)
        self.serial = iter(range(10**9))
        self.phase1: list[Event] = []
        self.phase2: list[Event] = []
        self.late: list[Event] = []
        # Of the user being generated (set by add_user).
        self.user = ""
        self.tz: str | None = None
        self.clock = base

    def eid(self, kind: str) -> str:
        return f"s{self.seed}-{kind}-{next(self.serial)}"

    def fmt(self) -> str:
        return self.rng.choice(("json", "avro"))

    def tick(self, max_minutes: int = 180) -> datetime:
        """The current user's clock, moved on by a random step."""
        self.clock += timedelta(
            minutes=self.rng.randint(1, max_minutes), seconds=self.rng.randint(0, 59)
        )
        return self.clock

    @staticmethod
    def by_time(events: list[Event]) -> list[Event]:
        return sorted(events, key=lambda e: e.record["occurred_at"])

    def add_user(self, u: int) -> None:
        """All events of user number `u`, in both phases."""
        rng = self.rng
        self.user = f"s{self.seed}-user-{u}"
        self.tz = rng.choice(TIME_ZONES)
        self.clock = self.base + timedelta(minutes=rng.randint(0, 3 * 24 * 60))

        bookings: list[str] = []
        for b in range(rng.randint(1, 4)):
            booking = self.booking(b)
            if booking is not None:
                bookings.append(booking)
        conversations = [f"{self.user}-conv{c}" for c in range(rng.randint(1, 2))]
        moods = {c: rng.choice(MOODS) for c in conversations}
        for conv in conversations:
            self.scores(self.phase1, conv, moods[conv], rng.randint(2, 8))
        for _ in range(rng.randint(0, 4)):
            self.phase1.append(
                activity(
                    self.user,
                    self.tick(),
                    activity_type=rng.choice(("login", "search", "view")),
                    event_id=self.eid("a"),
                    fmt=self.fmt(),
                )
            )
        early = self.early_cancellation()

        # Phase two: strictly later than everything of this user in phase one.
        self.clock += timedelta(hours=1)
        self.cancellations(bookings)
        if early is not None:
            self.late_confirmation(early)
        for conv in conversations:
            moods[conv] = rng.choice(MOODS_LATER)
            self.scores(self.phase2, conv, moods[conv], rng.randint(0, 5))
        self.trailing_activity()

    def booking(self, b: int) -> str | None:
        """Booking number `b` of the current user, confirmed (now and then confirmed
        again with another date) in phase one; its id, or None for an expired one."""
        rng = self.rng
        user = self.user
        booking = f"{user}-bk{b}"
        if rng.random() < 0.1:
            when = self.base - timedelta(days=rng.randint(400, 700), hours=rng.randint(0, 23))
            self.phase1.append(
                confirmed(
                    user,
                    booking,
                    when,
                    when - timedelta(days=20),
                    event_id=self.eid("c"),
                    fmt=self.fmt(),
                )
            )
            return None
        # Dates on a 10-hour grid: neighbours often fall within the ±1 day window.
        date = self.base + timedelta(
            days=20, hours=10 * rng.randint(0, 12), minutes=rng.randint(0, 59)
        )
        conv = rng.choice((None, f"{user}-conv0", f"{user}-conv-bk{b}"))
        self.phase1.append(
            confirmed(
                user,
                booking,
                date,
                self.tick(),
                conversation_id=conv,
                timezone=self.tz,
                event_id=self.eid("c"),
                fmt=self.fmt(),
            )
        )
        if rng.random() < 0.3:
            moved = date + timedelta(hours=rng.choice((-30, -12, 8, 20, 50, 100)))
            self.phase1.append(
                confirmed(
                    user,
                    booking,
                    moved,
                    self.tick(),
                    conversation_id=conv,
                    timezone=self.tz,
                    event_id=self.eid("c"),
                    fmt=self.fmt(),
                )
            )
        return booking

    def scores(self, target: list[Event], conv: str, mood: tuple[float, float], count: int) -> None:
        """`count` emotion scores in conversation `conv`, within the range `mood`."""
        rng = self.rng
        for _ in range(count):
            target.append(
                scored(
                    self.user,
                    conv,
                    round(rng.uniform(*mood), 2),
                    self.tick(90),
                    message_id=self.eid("m"),
                    label=rng.choice((None, "joy", "anger")),
                    event_id=self.eid("s"),
                    fmt=self.fmt(),
                )
            )

    def early_cancellation(self) -> str | None:
        """Now and then a cancellation, in phase one, of a booking confirmed only in
        phase two (see late_confirmation); the booking's id, or None."""
        if self.rng.random() >= 0.15:
            return None
        early = f"{self.user}-bk-early"
        self.phase1.append(
            cancelled(
                self.user,
                early,
                self.tick(),
                reason="changed plans",
                event_id=self.eid("x"),
                fmt=self.fmt(),
            )
        )
        return early

    def cancellations(self, bookings: list[str]) -> None:
        """Phase two: cancellations of some of the phase-one bookings."""
        for booking in bookings:
            if self.rng.random() < 0.35:
                self.phase2.append(
                    cancelled(
                        self.user,
                        booking,
                        self.tick(),
                        reason=self.rng.choice((None, "weather")),
                        event_id=self.eid("x"),
                        fmt=self.fmt(),
                    )
                )

    def late_confirmation(self, early: str) -> None:
        """Phase two: the confirmation of a booking whose cancellation came first."""
        date = self.base + timedelta(days=25, hours=self.rng.randint(0, 100))
        self.phase2.append(
            confirmed(
                self.user,
                early,
                date,
                self.tick(),
                timezone=self.tz,
                event_id=self.eid("c"),
                fmt=self.fmt(),
            )
        )

    def trailing_activity(self) -> None:
        """Phase two: maybe some activity; maybe some delivered last that happened
        early, which must never move anything backwards."""
        if self.rng.random() < 0.5:
            self.phase2.append(
                activity(self.user, self.tick(), event_id=self.eid("a"), fmt=self.fmt())
            )
        if self.rng.random() < 0.3:
            self.late.append(
                activity(
                    self.user,
                    self.base - timedelta(hours=self.rng.randint(1, 50)),
                    event_id=self.eid("a"),
                    fmt=self.fmt(),
                )
            )
