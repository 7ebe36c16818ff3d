"""The Ingestor on both stores: a batch and its offsets in one transaction, records
already applied skipped, bad values dead-lettered, a value the store refuses isolated."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta

import pytest

from consumer.adapters.memory import MemoryDeadLetters, MemoryStore
from consumer.domain.events import EventKind, InputEvent, UserActivity
from consumer.domain.model import Status, TriggerType
from consumer.domain.working_set import WorkingSet
from consumer.service.ports import (
    BadValue,
    BatchKeys,
    Conflict,
    DeadLetter,
    IngestStore,
    Partition,
    Store,
    Unavailable,
    UnitOfWork,
)
from tests.integration.helpers import activity, cancelled, confirmed
from tests.service.conftest import (
    ACTIVITY,
    CONFIRMED,
    T0,
    FixedClock,
    Rec,
    ingestor,
    recs,
)

H = timedelta(hours=1)
D = timedelta(days=1)


async def pending(store: Store, user_id: str, trigger: TriggerType) -> list[datetime]:
    found = await store.list_followups(
        user_id=user_id, status=Status.PENDING, trigger_type=trigger, limit=100
    )
    return [v.scheduled_at for v in found]


async def everything(store: Store) -> list[str]:
    found = await store.list_followups(user_id=None, status=None, trigger_type=None, limit=1000)
    return sorted(f"{v.id}:{v.status}" for v in found)


async def test_a_batch_is_applied_and_its_offsets_saved(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    records = [
        *recs([confirmed("u1", "b1", T0 + 5 * D, T0 - H)]),
        *recs([activity("u2", T0 - 2 * H), activity("u2", T0 - H)], partition=1, start=3),
    ]
    outcome = await ingestor(store, dead_letters, clock).process(records)
    assert outcome.applied == Counter({CONFIRMED: 1, ACTIVITY: 2})
    assert outcome.scheduled == Counter({TriggerType.POST_EVENT: 1, TriggerType.RE_ENGAGEMENT: 2})
    assert outcome.earliest_due == T0 + 6 * D
    assert outcome.dead == Counter()
    assert await pending(store, "u1", TriggerType.POST_EVENT) == [T0 + 6 * D]
    assert len(await pending(store, "u2", TriggerType.RE_ENGAGEMENT)) == 1
    assert await store.load_offsets([(CONFIRMED, 0), (ACTIVITY, 1)]) == {
        (CONFIRMED, 0): 1,
        (ACTIVITY, 1): 5,
    }
    assert dead_letters.sent == []


class Crash(Exception):
    """The process died after writing, before the commit."""


class _SaveThenCrash:
    def __init__(self, tx: UnitOfWork) -> None:
        self.tx = tx

    async def lock_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        return await self.tx.lock_offsets(partitions)

    async def lock_and_load(self, keys: BatchKeys, now: datetime) -> WorkingSet:
        return await self.tx.lock_and_load(keys, now)

    async def save(self, ws: WorkingSet, offsets: Mapping[Partition, int]) -> None:
        await self.tx.save(ws, offsets)
        raise Crash


class CrashBeforeCommit:
    """The store, except that every transaction dies right after its save."""

    def __init__(self, inner: IngestStore) -> None:
        self.inner = inner

    async def load_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        return await self.inner.load_offsets(partitions)

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[UnitOfWork]:
        async with self.inner.transaction() as tx:
            yield _SaveThenCrash(tx)


class StaleOffsets(CrashBeforeCommit):
    """The store, except that offsets read outside a transaction come back empty
    (as if another instance moved them just after we looked)."""

    async def load_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        return {}

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        return self.inner.transaction()


async def test_effects_and_offsets_commit_together_or_not_at_all(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    records = recs([confirmed("u1", "b1", T0 + 5 * D, T0 - H), activity("u2", T0 - H)])
    with pytest.raises(Crash):
        await ingestor(CrashBeforeCommit(store), dead_letters, clock).process(records)
    assert await everything(store) == []
    assert await store.load_offsets([(CONFIRMED, 0)]) == {}

    outcome = await ingestor(store, dead_letters, clock).process(records)
    assert sum(outcome.applied.values()) == 2
    assert len(await everything(store)) == 3
    assert await store.load_offsets([(CONFIRMED, 0), (ACTIVITY, 0)]) == {
        (CONFIRMED, 0): 1,
        (ACTIVITY, 0): 2,
    }


async def test_records_below_the_saved_offsets_are_skipped(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    first = [
        *recs([confirmed("u1", "b1", T0 + 5 * D, T0 - H)]),
        Rec(CONFIRMED, 0, 1, b"not json"),
    ]
    service = ingestor(store, dead_letters, clock)
    await service.process(first)
    before = await everything(store)
    assert len(dead_letters.sent) == 1

    # Redelivered with one new record after them: only that one is applied.
    again = [*first, *recs([confirmed("u2", "b2", T0 + 6 * D, T0 - H)], start=2)]
    outcome = await service.process(again)
    assert outcome.applied == Counter({CONFIRMED: 1})
    assert outcome.dead == Counter()
    assert len(dead_letters.sent) == 1  # not sent twice
    assert len(await everything(store)) == len(before) + 2  # u2's post-event and re-engagement
    assert await store.load_offsets([(CONFIRMED, 0)]) == {(CONFIRMED, 0): 3}

    # Positions read too early are checked again under lock, in the transaction.
    late = await ingestor(StaleOffsets(store), dead_letters, clock).process(again)
    assert late.applied == Counter()
    assert late.scheduled == Counter()
    assert await store.load_offsets([(CONFIRMED, 0)]) == {(CONFIRMED, 0): 3}


async def test_undecodable_values_are_dead_lettered_with_their_headers(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    headers = [("traceparent", b"00-abc-01"), ("dlq.error.type", b"from an earlier trip")]
    records = [
        Rec(ACTIVITY, 2, 7, b"\x00\x01 not a value", b"u1", headers),
        Rec(ACTIVITY, 2, 8, None, b"u1"),
        Rec(ACTIVITY, 2, 9, b'{"event_id": "e-1"}', b"u1"),
        *recs([activity("u1", T0 - H)], partition=2, start=10),
    ]
    outcome = await ingestor(store, dead_letters, clock).process(records)
    assert outcome.applied == Counter({ACTIVITY: 1})
    assert outcome.dead == Counter({(ACTIVITY, "decode_error"): 2, (ACTIVITY, "schema_error"): 1})
    assert [d.record.offset for d in dead_letters.sent] == [7, 8, 9]
    garbage = dead_letters.sent[0]
    assert garbage.record.value == b"\x00\x01 not a value"
    sent = garbage.headers()
    assert sent == [
        ("traceparent", b"00-abc-01"),
        ("dlq.original.topic", ACTIVITY.encode()),
        ("dlq.original.partition", b"2"),
        ("dlq.original.offset", b"7"),
        ("dlq.error.type", b"decode_error"),
        ("dlq.error.message", garbage.message.encode()),
    ]
    assert "tombstone" in dead_letters.sent[1].message
    assert "'occurred_at': required field is missing" in dead_letters.sent[2].message
    assert await store.load_offsets([(ACTIVITY, 2)]) == {(ACTIVITY, 2): 11}


async def test_a_dead_letter_is_never_lost_when_its_topic_is_away(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    records = [Rec(ACTIVITY, 0, 0, b"garbage"), *recs([activity("u1", T0 - H)], start=1)]
    service = ingestor(store, dead_letters, clock)
    dead_letters.reachable = False
    with pytest.raises(Unavailable):
        await service.process(records)
    assert await store.load_offsets([(ACTIVITY, 0)]) == {}
    assert await everything(store) == []

    dead_letters.reachable = True
    await service.process(records)
    assert [d.record.offset for d in dead_letters.sent] == [0]
    assert await store.load_offsets([(ACTIVITY, 0)]) == {(ACTIVITY, 0): 2}


async def test_records_the_adapter_could_not_read_go_out_and_commit_with_the_batch(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    def unreadable(offset: int) -> DeadLetter:
        record = Rec(ACTIVITY, 0, offset, b"v", b"k", [("kept", b"1")])
        raw = (("dlq.original.header.key", b"\xff"), ("dlq.original.header.value", b"x"))
        return DeadLetter(record, "decode_error", "header key not UTF-8", raw)

    first, second = recs([activity("u1", T0 - H)]), recs([activity("u2", T0 - H)], start=2)
    service = ingestor(store, dead_letters, clock)
    outcome = await service.process([*first, *second], unreadable=[unreadable(1)])
    assert outcome.applied == Counter({ACTIVITY: 2})
    assert outcome.dead == Counter({(ACTIVITY, "decode_error"): 1})
    [sent] = dead_letters.sent
    assert sent.headers()[0] == ("kept", b"1")
    assert sent.headers()[-2:] == [
        ("dlq.original.header.key", b"\xff"),
        ("dlq.original.header.value", b"x"),
    ]
    assert await store.load_offsets([(ACTIVITY, 0)]) == {(ACTIVITY, 0): 3}

    # Read again (a crash before Kafka heard of it): applied already, not sent twice.
    await service.process([*first, *second], unreadable=[unreadable(1)])
    assert len(dead_letters.sent) == 1
    # Nothing readable in a batch: the position still moves past the unreadable one.
    await service.process([], unreadable=[unreadable(3)])
    assert [d.record.offset for d in dead_letters.sent] == [1, 3]
    assert await store.load_offsets([(ACTIVITY, 0)]) == {(ACTIVITY, 0): 4}


class ActivityOfUser:
    """A decoder with no rules of its own: the value is the user id. Values the
    wire rules would catch reach the store this way."""

    async def prepare(self, values: Sequence[bytes | None]) -> None:
        pass

    def __call__(self, kind: EventKind, value: bytes | None) -> InputEvent:
        if value is None:
            raise BadValue("decode_error", "tombstone")
        user = value.decode()
        return UserActivity(f"ev-{user[:40]}", T0 - H, user, "login", None)


activity_of_user = ActivityOfUser()


async def test_a_value_the_store_refuses_is_dead_lettered_and_the_rest_applied(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    too_long = "x" * 300  # user_id is varchar(255)
    records = [
        Rec(ACTIVITY, 0, offset, value)
        for offset, value in enumerate([b"u1", too_long.encode(), b"u2"])
    ]
    service = ingestor(store, dead_letters, clock, activity_of_user)
    outcome = await service.process(records)
    assert outcome.applied == Counter({ACTIVITY: 2})
    assert outcome.dead == Counter({(ACTIVITY, "storage_error"): 1})
    [refused] = dead_letters.sent
    assert (refused.record.offset, refused.error_type) == (1, "storage_error")
    assert "too long" in refused.message
    for user in ("u1", "u2"):
        assert len(await pending(store, user, TriggerType.RE_ENGAGEMENT)) == 1
    assert await store.load_offsets([(ACTIVITY, 0)]) == {(ACTIVITY, 0): 3}


async def test_replay_applies_without_moving_the_offsets(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    records = recs([confirmed("u1", "b1", T0 + 5 * D, T0 - H)])
    service = ingestor(store, dead_letters, clock)
    await service.process(records, save_offsets=False)
    assert await pending(store, "u1", TriggerType.POST_EVENT) == [T0 + 6 * D]
    assert await store.load_offsets([(CONFIRMED, 0)]) == {}
    # The rules are idempotent: the same events again change nothing.
    outcome = await service.process(records)
    assert (outcome.applied, outcome.scheduled) == (Counter({CONFIRMED: 1}), Counter())


async def test_a_cancellation_closes_the_followup_it_leaves_empty(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    service = ingestor(store, dead_letters, clock)
    await service.process(recs([confirmed("u1", "b1", T0 + 5 * D, T0 - H)]))
    outcome = await service.process(recs([cancelled("u1", "b1", T0)]))
    assert outcome.cancelled == Counter({TriggerType.POST_EVENT: 1})
    assert await pending(store, "u1", TriggerType.POST_EVENT) == []


# --- the memory store's own controls -----------------------------------------------------


async def test_the_memory_store_refuses_what_it_is_told_to(
    dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    store = MemoryStore(refuse=lambda value: value == "u-poison")
    records = [Rec(ACTIVITY, 0, i, v) for i, v in enumerate([b"u1", b"u-poison", b"u2"])]
    outcome = await ingestor(store, dead_letters, clock, activity_of_user).process(records)
    assert outcome.applied == Counter({ACTIVITY: 2})
    assert [d.record.offset for d in dead_letters.sent] == [1]
    assert store.offsets() == {(ACTIVITY, 0): 3}
    assert store.checked_out() == 0


async def test_a_batch_that_conflicts_is_run_again(
    memory_store: MemoryStore, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    memory_store.fail_next_writes(Conflict("40P01: deadlock detected"))
    outcome = await ingestor(memory_store, dead_letters, clock).process(
        recs([activity("u1", T0 - H)])
    )
    assert outcome.applied == Counter({ACTIVITY: 1})
    assert memory_store.offsets() == {(ACTIVITY, 0): 1}
    assert memory_store.commits == 1  # the one that conflicted left nothing


# --- lanes: one batch, several transactions side by side ---------------------------------


class _LaneDies(_SaveThenCrash):
    def __init__(self, tx: UnitOfWork, store: OddLaneDiesOnce) -> None:
        super().__init__(tx)
        self.store = store

    async def save(self, ws: WorkingSet, offsets: Mapping[Partition, int]) -> None:
        await self.tx.save(ws, offsets)
        if not self.store.died and any(p % 2 for _, p in offsets):
            self.store.died = True
            raise Unavailable("the connection broke before the commit", resource="database")


class OddLaneDiesOnce(CrashBeforeCommit):
    """The store, except that the first transaction holding an odd partition's
    offsets dies right after its save."""

    def __init__(self, inner: IngestStore) -> None:
        super().__init__(inner)
        self.died = False

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[UnitOfWork]:
        async with self.inner.transaction() as tx:
            yield _LaneDies(tx, self)


def spread() -> list[Rec]:
    """Four users' events on four partitions of two topics (a user keeps its partition)."""
    out: list[Rec] = []
    for p in range(4):
        user = f"u{p}"
        out += recs([confirmed(user, f"b{p}", T0 + 5 * D, T0 - 3 * H)], partition=p)
        out += recs([activity(user, T0 - 2 * H), activity(user, T0 - H)], partition=p)
    return out


async def test_lanes_apply_a_batch_as_one_transaction_would(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    reference = MemoryStore()  # one transaction a batch
    single = await ingestor(reference, dead_letters, clock).process(spread())
    laned = await ingestor(store, dead_letters, clock, lanes=2).process(spread())
    assert laned.applied == single.applied == Counter({CONFIRMED: 4, ACTIVITY: 8})
    assert (laned.scheduled, laned.earliest_due) == (single.scheduled, single.earliest_due)
    assert await everything(store) == await everything(reference)
    partitions = [(t, p) for t in (CONFIRMED, ACTIVITY) for p in range(4)]
    assert await store.load_offsets(partitions) == await reference.load_offsets(partitions)


async def test_a_lane_that_fails_is_applied_alone_when_the_batch_is_retried(
    store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    flaky = OddLaneDiesOnce(store)
    service = ingestor(flaky, dead_letters, clock, lanes=2)
    prepared = await service.prepare(spread())
    with pytest.raises(Unavailable):
        await service.apply(prepared)
    # The even lane committed, effects and offsets; the odd one left nothing.
    saved = await store.load_offsets([(ACTIVITY, p) for p in range(4)])
    assert saved == {(ACTIVITY, 0): 2, (ACTIVITY, 2): 2}
    assert await pending(store, "u1", TriggerType.POST_EVENT) == []

    retried = await service.apply(prepared)  # what the runner does after an outage
    assert retried.applied == Counter({CONFIRMED: 2, ACTIVITY: 4})  # the odd lane only
    reference = MemoryStore()
    await ingestor(reference, dead_letters, clock).process(spread())
    assert await everything(store) == await everything(reference)
