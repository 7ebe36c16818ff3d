"""What only the memory store can show: its transactions serialize, a task that
would wait for itself is told so, and injected failures behave like the database's."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from consumer.adapters.memory import MemoryDuePublisher, MemoryStore
from consumer.domain.policy import Policy, RetryPolicy
from consumer.service.dispatch import Dispatcher
from consumer.service.ports import BatchKeys, Unavailable
from tests.service.conftest import T0, FixedClock, custom, seed

LEASE = timedelta(seconds=30)


async def test_transactions_serialize_and_each_sees_the_last_commit(
    memory_store: MemoryStore,
) -> None:
    go = asyncio.Event()
    first_in = asyncio.Event()

    async def first() -> None:
        async with memory_store.transaction() as tx:
            ws = await tx.lock_and_load(BatchKeys(frozenset({"user-1"})), T0)
            ws.apply([custom(1, T0)])
            await tx.save(ws, {})
            first_in.set()
            await go.wait()

    async def second() -> set[str]:
        async with memory_store.transaction() as tx:
            ws = await tx.lock_and_load(BatchKeys(frozenset({"user-1"})), T0)
            return set(ws.followups)

    a = asyncio.create_task(first())
    await first_in.wait()
    b = asyncio.create_task(second())
    # Yield until the second one is at the store (checked out, waiting for the first).
    while memory_store.checked_out() < 2:  # noqa: ASYNC110
        await asyncio.sleep(0)
    assert await memory_store.get_followup("f-0001") is None  # not committed yet
    go.set()
    await a
    assert await b == {"f-0001"}


async def test_a_write_inside_ones_own_transaction_is_refused_not_a_deadlock(
    memory_store: MemoryStore,
) -> None:
    async def claim_inside() -> None:
        async with memory_store.transaction():
            await memory_store.claim_due("a", T0, LEASE, 10)

    with pytest.raises(RuntimeError, match="wait for itself"):
        await claim_inside()


async def test_a_unit_of_work_is_over_with_its_block(memory_store: MemoryStore) -> None:
    async with memory_store.transaction() as tx:
        pass
    with pytest.raises(RuntimeError, match="over"):
        await tx.lock_offsets([("in", 0)])


async def test_a_send_whose_mark_is_lost_is_sent_again_after_the_lease(
    memory_store: MemoryStore, publisher: MemoryDuePublisher, clock: FixedClock
) -> None:
    [fid] = await seed(memory_store, [custom(1, T0)], T0)
    d = Dispatcher(memory_store, publisher, Policy(), RetryPolicy(), clock, lease=LEASE, owner="a")
    # Published, then the database goes away before the mark.
    memory_store.fail_next_writes(Unavailable("database: connection lost"), op="mark_executed")
    with pytest.raises(Unavailable):
        await d.dispatch_due()
    assert publisher.published_ids == [fid]
    row = memory_store.followup_row(fid)
    assert row is not None
    assert (row.status, row.lease_owner) == ("pending", "a")
    clock.advance(LEASE)
    assert await d.dispatch_due() == 0
    clock.advance(timedelta(milliseconds=1))
    assert await d.dispatch_due() == 1
    # At least once: the copy carries the same event_id for the receiver to drop.
    assert [m.record["event_id"] for m in publisher.published] == [fid, fid]
    row = memory_store.followup_row(fid)
    assert row is not None
    assert (row.status, row.lease_owner) == ("executed", None)
