"""The use cases against their ports, written once, run against both stores:
`MemoryStore` always, `PostgresStore` on a fresh database (marked integration).

Every test reads time from a `FixedClock` it moves by hand, never the wall clock.
After each test, no transaction or connection of the store may still be open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from consumer.adapters.codec import Codec
from consumer.adapters.memory import MemoryDeadLetters, MemoryDuePublisher, MemoryStore, Tally
from consumer.adapters.wire import WireDecoder
from consumer.domain.model import Followup, TriggerType
from consumer.domain.policy import Policy
from consumer.service.ingest import EventDecoder, Ingestor
from consumer.service.ports import BatchKeys, DeadLetterSink, IngestStore, Store

# The per-test database, topics and settings of the integration suite, reused.
from tests.integration.conftest import (  # noqa: F401
    database_url,
    postgres_store,
    services,
    settings,
)
from tests.integration.helpers import Event

# A Monday, 08:00 UTC, on a whole millisecond (the wire format's precision).
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class FixedClock:
    """The time, as the test says: `clock()` reads it, `advance` moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> datetime:
        self.now += by
        return self.now


@dataclass(frozen=True)
class Rec:
    """A consumed record (service.ports.InRecord)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()


# --- ingest: input topics and records ------------------------------------------------------

CONFIRMED = "in.booking.confirmed"
CANCELLED = "in.booking.cancelled"
SCORED = "in.message.emotion_scored"
ACTIVITY = "in.user.activity"
TOPICS = {
    CONFIRMED: "booking_confirmed",
    CANCELLED: "booking_cancelled",
    SCORED: "message_emotion_scored",
    ACTIVITY: "user_activity",
}
KIND_TOPIC = {kind: topic for topic, kind in TOPICS.items()}
DECODER = WireDecoder(Codec.load())


def recs(events: Sequence[Event], *, partition: int = 0, start: int = 0) -> list[Rec]:
    """The events as consecutive records of their topics' `partition`."""
    return [
        Rec(KIND_TOPIC[e.kind], partition, start + i, e.value, e.key) for i, e in enumerate(events)
    ]


def ingestor(
    store: IngestStore,
    dead_letters: DeadLetterSink,
    clock: FixedClock,
    decoder: EventDecoder = DECODER,
    *,
    lanes: int = 1,
) -> Ingestor:
    return Ingestor(store, decoder, Policy(), TOPICS, dead_letters, clock, lanes=lanes)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
async def memory_store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    whole: Store = store  # mypy checks that it is the whole port
    yield store
    assert whole is store
    assert store.checked_out() == 0, "a transaction or connection was left open"
    await store.close()


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Store:
    """The same test against each store."""
    found: Store = request.getfixturevalue(f"{request.param}_store")
    return found


@pytest.fixture
def publisher() -> MemoryDuePublisher:
    return MemoryDuePublisher()


@pytest.fixture
def dead_letters() -> MemoryDeadLetters:
    return MemoryDeadLetters()


@pytest.fixture
def tally() -> Tally:
    return Tally()


def custom(n: int, at: datetime, *, user: str | None = None) -> Followup:
    """An operator's follow-up due at `at`."""
    return Followup(
        id=f"f-{n:04d}",
        user_id=user or f"user-{n}",
        conversation_id=f"conv-{n}",
        trigger_type=TriggerType.CUSTOM,
        scheduled_at=at,
        custom_message=f"message {n}",
    )


async def seed(store: Store, followups: Sequence[Followup], now: datetime) -> list[str]:
    """Follow-ups written as ingest writes them; returns their ids."""
    async with store.transaction() as tx:
        ws = await tx.lock_and_load(BatchKeys(frozenset(f.user_id for f in followups)), now)
        ws.apply(followups)
        await tx.save(ws, {})
    return [f.id for f in followups]
