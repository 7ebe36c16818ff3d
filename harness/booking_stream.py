"""The generated stream of the benchmarks: a year of a booking business, pre-encoded, in
event-time order, built chunk by chunk (the long replay's 10,000,000 events do not fit in
memory at once). `bench.lib.stream.generate` is the same stream in one piece."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.adapters.codec import Codec

ACTIVITY, EMOTION, CONFIRMED, CANCELLED = range(4)
MIX = (0.50, 0.30, 0.15, 0.05)
# The schema of each kind of record, in the order of MIX (a record's first field).
SCHEMAS = ("user_activity", "message_emotion_scored", "booking_confirmed", "booking_cancelled")

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

# random() draws two 32-bit words; getrandbits skips them in blocks of this many draws.
_SKIP_BLOCK = 1 << 16


@dataclass
class Chunk:
    """Consecutive records of the stream: (kind, key, value), kind indexing SCHEMAS."""

    records: list[tuple[int, bytes, bytes]]
    counts: list[int]  # per kind
    formats: Counter[str]
    value_bytes: int


@dataclass(slots=True)
class _Booking:
    booking_id: str
    user: int
    event_date_ms: int


def chunks(
    n: int,
    users: int,
    fmt: str,
    seed: int,
    codec: Codec,
    now: datetime,
    size: int = 200_000,
) -> Iterator[Chunk]:
    """A year of a booking business, compressed into n events, oldest first, in chunks
    of `size` records (the last one shorter). The same stream for the same arguments,
    whatever the size."""
    if size < 1:
        raise ValueError("size must be positive")
    builder = _Builder(n, users, fmt, seed, codec, now)
    for lo in range(0, n, size):
        yield builder.chunk(lo, min(n, lo + size))


class _Builder:
    """The generator's state between chunks. The random draws are those of one pass
    over all n events: the customers of all n events first, then everything else."""

    def __init__(
        self, n: int, users: int, fmt: str, seed: int, codec: Codec, now: datetime
    ) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.n = n
        self.fmt = fmt
        self.now_ms = (now - EPOCH) // timedelta(milliseconds=1)
        self.span_ms = 365 * DAY_MS
        self.start_ms = self.now_ms - self.span_ms

        # Some customers are far busier than others (Pareto, alpha 3: the busiest
        # are a few dozen times the median).
        self.cum = list(itertools.accumulate(rng.paretovariate(3.0) for _ in range(users)))
        self.population = range(users)
        # The customer of every event, drawn chunk by chunk from a copy of the
        # generator as it is now; the generator itself skips those draws.
        self.who_rng = random.Random()
        self.who_rng.setstate(rng.getstate())
        for lo in range(0, n, _SKIP_BLOCK):
            rng.getrandbits(64 * (min(n, lo + _SKIP_BLOCK) - lo))

        self.user_ids = [f"user-{u:06d}" for u in range(users)]
        self.keys = [u.encode() for u in self.user_ids]
        self.tz = [rng.choice(TIMEZONES) if rng.random() < 0.7 else None for _ in range(users)]
        # Each user's conversations and the mood of each (mean score).
        self.moods = [
            [rng.betavariate(2.5, 1.8) for _ in range(rng.randint(1, 3))] for _ in range(users)
        ]
        self.encoders: dict[str, Callable[[str, Mapping[str, Any]], bytes]] = {
            "avro": codec.encode_avro,
            "json": codec.encode_json,
        }
        self.thresholds = list(itertools.accumulate(MIX))
        self.open_bookings: list[_Booking] = []
        self.booking_seq = 0

    def chunk(self, lo: int, hi: int) -> Chunk:
        rng = self.rng
        who = self.who_rng.choices(self.population, cum_weights=self.cum, k=hi - lo)
        out = Chunk([], [0, 0, 0, 0], Counter(), 0)
        for i, u in zip(range(lo, hi), who, strict=True):
            t_ms = min(self.now_ms, self.start_ms + int((i + rng.random()) * self.span_ms / self.n))
            r = rng.random()
            kind = next(k for k, limit in enumerate(self.thresholds) if r < limit or k == 3)
            booking = self._to_cancel(t_ms) if kind == CANCELLED else None
            if kind == CANCELLED and booking is None:
                kind = CONFIRMED  # nothing to cancel yet (start of the stream)

            record: dict[str, Any] = {
                "event_id": f"evt-{i:08d}",
                "occurred_at": EPOCH + timedelta(milliseconds=t_ms),
            }
            if kind == ACTIVITY:
                self._activity(record, u)
            elif kind == EMOTION:
                self._emotion(record, u, i)
            elif kind == CONFIRMED:
                u = self._confirmed(record, u, t_ms)
            else:
                assert booking is not None
                u = self._cancelled(record, booking)

            value_format = (
                self.fmt if self.fmt != "mixed" else ("avro" if rng.random() < 0.5 else "json")
            )
            value = self.encoders[value_format](SCHEMAS[kind], record)
            out.records.append((kind, self.keys[u], value))
            out.counts[kind] += 1
            out.formats[value_format] += 1
            out.value_bytes += len(value)
        return out

    def _to_cancel(self, t_ms: int) -> _Booking | None:
        """A booking confirmed earlier in the stream whose event still lies ahead."""
        rng, open_bookings = self.rng, self.open_bookings
        for _ in range(8):
            if not open_bookings:
                break
            j = rng.randrange(len(open_bookings))
            candidate = open_bookings[j]
            open_bookings[j] = open_bookings[-1]
            open_bookings.pop()
            if candidate.event_date_ms > t_ms:
                return candidate
        return None

    @staticmethod
    def _conversation(u: int, k: int) -> str:
        return f"conv-{u:06d}-{k}"

    def _activity(self, record: dict[str, Any], u: int) -> None:
        rng = self.rng
        k = rng.randrange(len(self.moods[u]))
        record.update(
            user_id=self.user_ids[u],
            activity_type=rng.choice(ACTIVITY_TYPES),
            conversation_id=self._conversation(u, k) if rng.random() < 0.5 else None,
        )

    def _emotion(self, record: dict[str, Any], u: int, i: int) -> None:
        rng = self.rng
        k = rng.randrange(len(self.moods[u]))
        score = min(1.0, max(0.0, rng.gauss(self.moods[u][k], 0.15)))
        record.update(
            user_id=self.user_ids[u],
            conversation_id=self._conversation(u, k),
            message_id=f"msg-{i:08d}",
            score=round(score, 3),
            label=rng.choice(LABELS) if rng.random() < 0.4 else None,
        )

    def _confirmed(self, record: dict[str, Any], u: int, t_ms: int) -> int:
        """A new booking, or (5%) an open one confirmed again with another date: it
        moves. Returns the booking's user."""
        rng, open_bookings = self.rng, self.open_bookings
        if open_bookings and rng.random() < 0.05:
            booking = rng.choice(open_bookings)
            u = booking.user
            booking.event_date_ms = max(
                t_ms + 2 * HOUR_MS,
                booking.event_date_ms + rng.randint(-3, 7) * DAY_MS,
            )
        else:
            self.booking_seq += 1
            offset = rng.randint(2 * 4, 60 * 24 * 4) * 15 * 60_000  # 2 h .. 60 days
            booking = _Booking(f"bk-{self.booking_seq:07d}", u, t_ms + offset)
            open_bookings.append(booking)
        k = rng.randrange(len(self.moods[u]))
        record.update(
            user_id=self.user_ids[u],
            booking_id=booking.booking_id,
            event_date=EPOCH + timedelta(milliseconds=booking.event_date_ms),
            conversation_id=self._conversation(u, k) if rng.random() < 0.6 else None,
            timezone=self.tz[u],
        )
        return u

    def _cancelled(self, record: dict[str, Any], booking: _Booking) -> int:
        rng = self.rng
        record.update(
            user_id=self.user_ids[booking.user],
            booking_id=booking.booking_id,
            reason=rng.choice(CANCEL_REASONS) if rng.random() < 0.5 else None,
        )
        return booking.user
