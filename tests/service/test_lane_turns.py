"""Two batches in flight (the runner's `LaneTurns`), and the gate a rebalance waits at.

Lane i of a batch waits for lane i of the batch before it, not for that whole
batch: each partition's batches still commit in order, and the result is that of
applying the batches one after the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from consumer.adapters.memory import MemoryDeadLetters, MemoryStore
from consumer.domain.working_set import WorkingSet
from consumer.service.batch_gate import BatchGate
from consumer.service.ingest import BatchAbandoned, LaneTurns
from consumer.service.ports import (
    IngestStore,
    Partition,
    Store,
    Unavailable,
    UnitOfWork,
)
from tests.integration.helpers import activity, confirmed
from tests.service.conftest import ACTIVITY, T0, FixedClock, Rec, ingestor, recs
from tests.service.test_ingest import CrashBeforeCommit, _SaveThenCrash, everything

H = timedelta(hours=1)
D = timedelta(days=1)
LANES = 2


async def turns_of_the_loop() -> None:
    """Enough turns of the event loop for the memory store to finish any transaction
    that can go on (it never waits for I/O)."""
    for _ in range(200):
        await asyncio.sleep(0)


def batch(first: bool) -> list[Rec]:
    """Four users on four partitions; the second batch follows the first on each."""
    out: list[Rec] = []
    for p in range(4):
        user = f"u{p}"
        if first:
            out += recs([confirmed(user, f"b{p}", T0 + 5 * D, T0 - 3 * H)], partition=p)
            out += recs([activity(user, T0 - 2 * H)], partition=p)
        else:
            out += recs([activity(user, T0 - H)], partition=p, start=1)
    return out


async def one_after_the_other(dead_letters: MemoryDeadLetters, clock: FixedClock) -> list[str]:
    """The follow-ups left by the two batches applied in turn, one transaction each."""
    reference = MemoryStore()
    for first in (True, False):
        await ingestor(reference, dead_letters, clock).process(batch(first))
    return await everything(reference)


class _Tx(_SaveThenCrash):
    def __init__(self, tx: UnitOfWork, store: HeldLane) -> None:
        super().__init__(tx)
        self.store = store
        self.lane: int | None = None

    async def save(self, ws: WorkingSet, offsets: Mapping[Partition, int]) -> None:
        await self.tx.save(ws, offsets)
        self.lane = next(p % LANES for _, p in offsets)
        if self.lane == 1 and not self.store.released.is_set():
            self.store.held.set()
            await self.store.released.wait()
        if self.lane == 1 and self.store.die_once:
            self.store.die_once = False
            raise Unavailable("the connection broke before the commit", resource="database")


class HeldLane(CrashBeforeCommit):
    """The store, except that lane 1's transaction waits before its commit until
    released (and, with `die_once`, then fails once); commits are recorded."""

    def __init__(self, inner: IngestStore, *, die_once: bool = False) -> None:
        super().__init__(inner)
        self.held = asyncio.Event()
        self.released = asyncio.Event()
        self.die_once = die_once
        self.commits: list[tuple[int, dict[Partition, int]]] = []
        self.committed = asyncio.Condition()

    async def until_commits(self, done: Callable[[list[int]], bool]) -> None:
        """Until `done` holds for the lanes committed so far, in order."""
        async with self.committed:
            await self.committed.wait_for(lambda: done([lane for lane, _ in self.commits]))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[UnitOfWork]:
        async with self.inner.transaction() as tx:
            wrapped = _Tx(tx, self)
            yield wrapped
        if wrapped.lane is not None:
            parts = [(ACTIVITY, p) for p in range(4) if p % LANES == wrapped.lane]
            self.commits.append((wrapped.lane, await self.inner.load_offsets(parts)))
            async with self.committed:
                self.committed.notify_all()


@pytest.mark.integration  # the memory store runs one transaction at a time
async def test_a_lane_goes_on_while_the_other_lane_of_the_batch_before_is_slow(
    postgres_store: Store, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    held = HeldLane(postgres_store)
    service = ingestor(held, dead_letters, clock, lanes=LANES)
    first = LaneTurns(LANES)
    second = LaneTurns(LANES, first)
    one = asyncio.create_task(service.apply(await service.prepare(batch(True)), first))
    two = asyncio.create_task(service.apply(await service.prepare(batch(False)), second))
    await held.held.wait()
    # Lane 0 of the second batch commits while lane 1 of the first is still open.
    await asyncio.wait_for(held.until_commits(lambda lanes: lanes.count(0) == 2), 30)
    assert not one.done()
    assert [lane for lane, _ in held.commits] == [0, 0]
    held.released.set()
    await asyncio.gather(one, two)
    # Lane 1's batches committed in order: the first's offsets, then the second's.
    lane1 = [offsets for lane, offsets in held.commits if lane == 1]
    assert lane1 == [
        {(ACTIVITY, 1): 1, (ACTIVITY, 3): 1},
        {(ACTIVITY, 1): 2, (ACTIVITY, 3): 2},
    ]
    assert await everything(postgres_store) == await one_after_the_other(dead_letters, clock)


async def test_a_lane_waits_for_its_lane_before_through_a_retry(
    memory_store: MemoryStore, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    held = HeldLane(memory_store, die_once=True)
    service = ingestor(held, dead_letters, clock, lanes=LANES)
    first = LaneTurns(LANES)
    second = LaneTurns(LANES, first)
    prepared = await service.prepare(batch(True))
    one = asyncio.create_task(service.apply(prepared, first))
    two = asyncio.create_task(service.apply(await service.prepare(batch(False)), second))
    await held.held.wait()
    held.released.set()
    with pytest.raises(Unavailable):
        await one
    await turns_of_the_loop()  # were lane 1 of the second batch not waiting, it would be done
    assert not two.done()  # it waits: the lane before it has not committed
    await service.apply(prepared, first)  # the runner's retry of the first batch
    await two
    assert await everything(memory_store) == await one_after_the_other(dead_letters, clock)


async def test_a_batch_whose_batch_before_was_not_applied_is_not_applied(
    memory_store: MemoryStore, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    service = ingestor(memory_store, dead_letters, clock, lanes=LANES)
    first = LaneTurns(LANES)
    second = LaneTurns(LANES, first)
    first.abandon()  # the first batch failed, or the service stopped
    with pytest.raises(BatchAbandoned):
        await service.apply(await service.prepare(batch(False)), second)
    assert await everything(memory_store) == []
    assert await memory_store.load_offsets([(ACTIVITY, p) for p in range(4)]) == {}


# --- the gate -----------------------------------------------------------------------------


async def test_a_pause_waits_for_the_batches_in_flight_and_holds_new_ones() -> None:
    gate = BatchGate()
    await gate.enter()
    await gate.enter()
    paused = asyncio.Event()
    resume = asyncio.Event()

    async def rebalance() -> None:
        async with gate.paused():
            paused.set()
            await resume.wait()

    listener = asyncio.create_task(rebalance())
    gate.leave()
    await asyncio.sleep(0)
    assert not paused.is_set()  # one batch still in flight
    gate.leave()
    await asyncio.wait_for(paused.wait(), timeout=5)
    starting = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    assert not starting.done()  # no batch starts during the pause
    resume.set()
    await asyncio.wait_for(starting, timeout=5)
    await listener
    assert gate.in_flight == 1


async def test_a_pause_with_nothing_in_flight_is_immediate() -> None:
    gate = BatchGate()
    async with gate.paused():
        assert gate.in_flight == 0
    await asyncio.wait_for(gate.enter(), timeout=5)
