"""The input of a fault scenario: a mixed stream plus follow-ups falling due soon,
bound to one run's topics, with bad values spread among it if asked."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.config import Settings
from harness.events import (
    CODEC,
    TIME_ZONES,
    Event,
    activity,
    cancelled,
    confirmed,
    mixed_stream,
    ms,
    scored,
)
from harness.topics import Raw, topic_of

EVENTS_PER_USER = 17.5  # mixed_stream's average, to size the stream


@dataclass
class Input:
    phase1: list[Raw]
    phase2: list[Raw]
    valid1: int  # valid records of phase 1 (the rest: bad values)
    horizon: datetime  # every follow-up due during the run is due by then
    soon: int
    bad: list[bool] = field(default_factory=list)  # per phase-1 record
    bad_kinds: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return len(self.phase1) + len(self.phase2)


@dataclass(frozen=True)
class Stream:
    """Events, still unbound to topics (each run gets its own topics)."""

    phase1: list[Event]
    phase2: list[Event]
    horizon: datetime
    soon: int


def make_stream(seed: int, events: int, window: tuple[float, float]) -> Stream:
    """About `events` events; soon follow-ups due `window` seconds from now."""
    now = datetime.now(UTC)
    soon_users = max(20, int(events / EVENTS_PER_USER / 4))
    users = max(10, int((events - 2 * soon_users) / EVENTS_PER_USER))
    base = now.replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    phase1, phase2 = mixed_stream(seed, users, base)
    rng = random.Random(seed + 1)
    lo, hi = window
    soon: list[Event] = []
    horizon = now
    for i in range(soon_users):
        user = f"s{seed}-soon-{i}"
        due = ms(now + timedelta(seconds=rng.uniform(lo, hi)))
        horizon = max(horizon, due)
        occurred = ms(now - timedelta(minutes=rng.randint(5, 600)))
        soon.append(
            confirmed(
                user,
                f"{user}-bk",
                due - timedelta(hours=24),
                occurred,
                conversation_id=f"{user}-quiet",
                timezone=rng.choice(TIME_ZONES),
                event_id=f"s{seed}-soon-c{i}",
                fmt=rng.choice(("json", "avro")),
            )
        )
        soon.append(
            activity(
                user,
                occurred + timedelta(minutes=1),
                event_id=f"s{seed}-soon-a{i}",
                fmt=rng.choice(("json", "avro")),
            )
        )
    merged = sorted(phase1 + soon, key=lambda e: e.record["occurred_at"])
    return Stream(merged, phase2, horizon, soon_users)


def bind(s: Settings, stream: Stream, bad: Sequence[tuple[str, str, bytes | None]] = ()) -> Input:
    """The stream as raw records on the topics of `s`, bad values spread in phase 1."""
    raw1: list[Raw] = [(topic_of(s, e.kind), e.key, e.value) for e in stream.phase1]
    raw2: list[Raw] = [(topic_of(s, e.kind), e.key, e.value) for e in stream.phase2]
    flags = [False] * len(raw1)
    kinds: Counter[str] = Counter()
    rng = random.Random(7)
    for name, kind, value in bad:
        at = rng.randrange(len(raw1) + 1)
        raw1.insert(at, (topic_of(s, kind), b"bad-key", value))
        flags.insert(at, True)
        kinds[name] += 1
    return Input(raw1, raw2, len(stream.phase1), stream.horizon, stream.soon, flags, kinds)


def bad_values(count: int) -> list[tuple[str, str, bytes | None]]:
    """`count` bad values of the kinds below, round robin: (kind name, event kind, value)."""
    now = ms(datetime.now(UTC))
    conf = confirmed("u-bad", "bk-bad", now + timedelta(days=3), now).record
    score = scored("u-bad", "conv-bad", 0.5, now, message_id="m-bad").record
    act = activity("u-bad", now).record
    canc = cancelled("u-bad", "bk-bad", now).record
    good_avro = CODEC.encode_avro("booking_confirmed", conf)
    no_booking = {k: v for k, v in conf.items() if k != "booking_id"}
    high = CODEC.encode_avro("message_emotion_scored", {**score, "score": 1.5})
    other = CODEC.encode_avro("user_activity", act)

    def js(record: dict[str, Any]) -> bytes:
        return json.dumps(
            record, default=lambda v: v.isoformat() if isinstance(v, datetime) else v
        ).encode()

    kinds: list[tuple[str, str, bytes | None]] = [
        ("garbage", "booking_confirmed", b"\xff\x00 neither json nor avro"),
        ("truncated avro", "booking_confirmed", good_avro[:-6]),
        ("unknown fingerprint", "booking_confirmed", b"\xc3\x01" + b"\x01" * 8 + good_avro[10:]),
        ("json array", "user_activity", b'[{"event_id": "x"}]'),
        ("missing field", "booking_confirmed", js(no_booking)),
        ("string score", "message_emotion_scored", js({**score, "score": "0.5"})),
        ("score above 1", "message_emotion_scored", high),
        ("negative score", "message_emotion_scored", js({**score, "score": -0.01})),
        ("naive timestamp", "user_activity", js({**act, "occurred_at": "2025-03-01T10:00:00"})),
        ("year 2500", "user_activity", js({**act, "occurred_at": "2500-01-01T00:00:00Z"})),
        ("blank user id", "booking_cancelled", js({**canc, "user_id": "   "})),
        ("unknown time zone", "booking_confirmed", js({**conf, "timezone": "Mars/Olympus_Mons"})),
        ("tombstone", "booking_cancelled", None),
        ("another topic's schema", "message_emotion_scored", other),
        ("NUL in an id", "user_activity", js({**act, "event_id": "ev\x00il"})),
        ("empty value", "user_activity", b""),
    ]  # fmt: skip
    out = []
    for i in range(count):
        name, kind, value = kinds[i % len(kinds)]
        if value is not None and value.startswith(b"{"):
            # Distinct event ids, so no two are the same record.
            value = value.replace(b'"event_id": "', f'"event_id": "bad{i}-'.encode(), 1)
        out.append((name, kind, value))
    return out
