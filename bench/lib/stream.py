"""The generated stream: a year of a booking business, pre-encoded, in event-time order."""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.lib.names import INPUTS
from consumer.adapters.codec import Codec

ACTIVITY, EMOTION, CONFIRMED, CANCELLED = range(4)
MIX = (0.50, 0.30, 0.15, 0.05)

TIMEZONES = (
    "Europe/Berlin",
    "Europe/London",
    "Europe/Madrid",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Africa/Johannesburg",
)
ACTIVITY_TYPES = ("login", "search", "page_view", "message_sent", "profile_update", "app_open")
LABELS = ("joy", "gratitude", "neutral", "confusion", "frustration", "anger", "sadness")
CANCEL_REASONS = ("change of plans", "found another venue", "illness", "weather", "price")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass
class Stream:
    """Pre-encoded records in event-time order: (input index, key, value)."""

    records: list[tuple[int, bytes, bytes]]
    counts: list[int]
    formats: Counter[str]
    value_bytes: int
    seconds: float


@dataclass
class _Booking:
    booking_id: str
    user: int
    event_date_ms: int


def generate(n: int, users: int, fmt: str, seed: int, codec: Codec, now: datetime) -> Stream:
    """A year of a booking business, compressed into n events, oldest first."""
    started = time.perf_counter()
    rng = random.Random(seed)
    now_ms = (now - EPOCH) // timedelta(milliseconds=1)
    span_ms = 365 * DAY_MS
    start_ms = now_ms - span_ms

    # Some customers are far busier than others (Pareto, alpha 3: the busiest
    # are a few dozen times the median).
    cum = list(itertools.accumulate(rng.paretovariate(3.0) for _ in range(users)))
    who = rng.choices(range(users), cum_weights=cum, k=n)
    user_ids = [f"user-{u:06d}" for u in range(users)]
    keys = [u.encode() for u in user_ids]
    tz = [rng.choice(TIMEZONES) if rng.random() < 0.7 else None for _ in range(users)]
    # Each user's conversations and the mood of each (mean score).
    moods = [[rng.betavariate(2.5, 1.8) for _ in range(rng.randint(1, 3))] for _ in range(users)]

    encoders: dict[str, Callable[[str, Mapping[str, Any]], bytes]] = {
        "avro": codec.encode_avro,
        "json": codec.encode_json,
    }
    schema_names = [name for name, _, _ in INPUTS]
    thresholds = list(itertools.accumulate(MIX))
    records: list[tuple[int, bytes, bytes]] = []
    counts = [0, 0, 0, 0]
    formats: Counter[str] = Counter()
    value_bytes = 0
    open_bookings: list[_Booking] = []
    booking_seq = 0

    def conversation(u: int, k: int) -> str:
        return f"conv-{u:06d}-{k}"

    for i in range(n):
        u = who[i]
        t_ms = min(now_ms, start_ms + int((i + rng.random()) * span_ms / n))
        occurred = EPOCH + timedelta(milliseconds=t_ms)
        event_id = f"evt-{i:08d}"
        r = rng.random()
        kind = next(k for k, limit in enumerate(thresholds) if r < limit or k == 3)

        booking: _Booking | None = None
        if kind == CANCELLED:
            # A booking confirmed earlier in the stream whose event still lies ahead.
            for _ in range(8):
                if not open_bookings:
                    break
                j = rng.randrange(len(open_bookings))
                candidate = open_bookings[j]
                open_bookings[j] = open_bookings[-1]
                open_bookings.pop()
                if candidate.event_date_ms > t_ms:
                    booking = candidate
                    break
            if booking is None:
                kind = CONFIRMED  # nothing to cancel yet (start of the stream)

        record: dict[str, Any] = {"event_id": event_id, "occurred_at": occurred}
        if kind == ACTIVITY:
            k = rng.randrange(len(moods[u]))
            record.update(
                user_id=user_ids[u],
                activity_type=rng.choice(ACTIVITY_TYPES),
                conversation_id=conversation(u, k) if rng.random() < 0.5 else None,
            )
        elif kind == EMOTION:
            k = rng.randrange(len(moods[u]))
            score = min(1.0, max(0.0, rng.gauss(moods[u][k], 0.15)))
            record.update(
                user_id=user_ids[u],
                conversation_id=conversation(u, k),
                message_id=f"msg-{i:08d}",
                score=round(score, 3),
                label=rng.choice(LABELS) if rng.random() < 0.4 else None,
            )
        elif kind == CONFIRMED:
            if open_bookings and rng.random() < 0.05:
                # The same booking confirmed again with another date: it moves.
                booking = rng.choice(open_bookings)
                u = booking.user
                booking.event_date_ms = max(
                    t_ms + 2 * HOUR_MS,
                    booking.event_date_ms + rng.randint(-3, 7) * DAY_MS,
                )
            else:
                booking_seq += 1
                offset = rng.randint(2 * 4, 60 * 24 * 4) * 15 * 60_000  # 2 h .. 60 days
                booking = _Booking(f"bk-{booking_seq:07d}", u, t_ms + offset)
                open_bookings.append(booking)
            k = rng.randrange(len(moods[u]))
            record.update(
                user_id=user_ids[u],
                booking_id=booking.booking_id,
                event_date=EPOCH + timedelta(milliseconds=booking.event_date_ms),
                conversation_id=conversation(u, k) if rng.random() < 0.6 else None,
                timezone=tz[u],
            )
        else:
            assert booking is not None
            u = booking.user
            record.update(
                user_id=user_ids[u],
                booking_id=booking.booking_id,
                reason=rng.choice(CANCEL_REASONS) if rng.random() < 0.5 else None,
            )

        value_format = fmt if fmt != "mixed" else ("avro" if rng.random() < 0.5 else "json")
        value = encoders[value_format](schema_names[kind], record)
        records.append((kind, keys[u], value))
        counts[kind] += 1
        formats[value_format] += 1
        value_bytes += len(value)
    return Stream(records, counts, formats, value_bytes, time.perf_counter() - started)
