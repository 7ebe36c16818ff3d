"""The Dispatcher on both stores, with a publisher told what to refuse: due
follow-ups sent once and marked, too-late ones expired, failures retried with
backoff then given up, an outage waited out, never two senders at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from consumer.adapters.memory import MemoryDeadLetters, MemoryDuePublisher, Tally
from consumer.domain.model import TriggerType
from consumer.domain.policy import Policy, RetryPolicy
from consumer.service.dispatch import Dispatcher
from consumer.service.ports import ClaimedFollowup, DueMessage, FollowupView, Store
from tests.integration.helpers import cancelled, confirmed
from tests.service.conftest import T0, FixedClock, custom, ingestor, recs, seed

S = timedelta(seconds=1)
H = timedelta(hours=1)
LEASE = timedelta(seconds=30)
RETRY = RetryPolicy(max_retries=2, base=2 * S, cap=timedelta(minutes=1))


def dispatcher(
    store: Store,
    publisher: MemoryDuePublisher,
    clock: FixedClock,
    *,
    owner: str = "dispatcher-a",
    batch_size: int = 100,
    telemetry: Tally | None = None,
) -> Dispatcher:
    return Dispatcher(
        store,
        publisher,
        Policy(),
        RETRY,
        clock,
        batch_size=batch_size,
        lease=LEASE,
        owner=owner,
        telemetry=telemetry,
    )


async def view_of(store: Store, id_: str) -> FollowupView:
    view = await store.get_followup(id_)
    assert view is not None, id_
    return view


async def test_due_followups_are_published_once_and_marked_executed(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock, tally: Tally
) -> None:
    early, now, later = await seed(
        store, [custom(1, T0 - 60 * S), custom(2, T0), custom(3, T0 + H)], T0
    )
    d = dispatcher(store, publisher, clock, telemetry=tally)
    assert await d.dispatch_due() == 2
    assert publisher.published_ids == [early, now]
    first = publisher.published[0]
    assert first.key == "user-1"
    assert {k: first.record[k] for k in ("event_id", "message", "attempt", "scheduled_at")} == {
        "event_id": early,
        "message": "message 1",
        "attempt": 1,
        "scheduled_at": T0 - 60 * S,
    }
    for id_, n in ((early, 1), (now, 2)):
        view = await view_of(store, id_)
        assert (view.status, view.executed_at, view.message_content) == (
            "executed",
            T0,
            f"message {n}",
        )
        assert view.template_id is not None
    assert (await view_of(store, later)).status == "pending"
    assert sum(tally.executions.values()) == 2
    assert tally.lateness == [60.0, 0.0]

    assert await d.dispatch_due() == 0
    assert await store.next_due_at(clock()) == T0 + H
    clock.advance(H)
    assert await d.dispatch_due() == 1
    assert publisher.published_ids == [early, now, later]


async def test_too_late_first_attempts_expire_unsent(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock, tally: Tally
) -> None:
    # MAX_LATENESS is 48 hours: the service was down for longer than that.
    stale, fresh = await seed(store, [custom(1, T0 - 49 * H), custom(2, T0 - 47 * H)], T0)
    d = dispatcher(store, publisher, clock, telemetry=tally)
    assert await d.dispatch_due() == 2
    assert publisher.published_ids == [fresh]
    assert (await view_of(store, stale)).status == "expired"
    assert (await view_of(store, fresh)).status == "executed"
    assert tally.expirations == {TriggerType.CUSTOM: 1}
    assert await d.dispatch_due() == 0


async def test_a_retried_followup_keeps_its_chance_when_late(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock
) -> None:
    [fid] = await seed(store, [custom(1, T0)], T0)
    publisher.fail(fid, times=1)
    d = dispatcher(store, publisher, clock)
    assert await d.dispatch_due() == 1
    assert publisher.published == []
    # On time once; retried after a long outage of this instance, it is still sent.
    clock.advance(49 * H)
    assert await d.dispatch_due() == 1
    assert publisher.published_ids == [fid]
    assert publisher.published[0].record["attempt"] == 2
    view = await view_of(store, fid)
    assert (view.status, view.retry_count) == ("executed", 1)


async def test_publish_failures_back_off_then_give_up(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock, tally: Tally
) -> None:
    fid, ok = await seed(store, [custom(1, T0), custom(2, T0)], T0)
    publisher.fail(fid)
    d = dispatcher(store, publisher, clock, telemetry=tally)

    assert await d.dispatch_due() == 2  # the first attempt
    assert publisher.published_ids == [ok]
    view = await view_of(store, fid)
    assert (view.status, view.retry_count) == ("pending", 1)
    assert view.error_message is not None
    assert view.error_message.startswith("PublishRefused:")
    assert await store.next_due_at(clock()) == T0 + 2 * S  # base backoff

    clock.advance(2 * S - timedelta(milliseconds=1))
    assert await d.dispatch_due() == 0
    clock.advance(timedelta(milliseconds=1))
    assert await d.dispatch_due() == 1  # first retry
    assert (await view_of(store, fid)).retry_count == 2
    assert await store.next_due_at(clock()) == clock() + 4 * S  # doubled

    clock.advance(4 * S)
    assert await d.dispatch_due() == 1  # second and last retry (MAX_RETRIES=2)
    view = await view_of(store, fid)
    # retry_count counts retries: the two given, not the three attempts.
    assert (view.status, view.retry_count, view.executed_at) == ("failed", 2, None)
    assert await store.next_due_at(clock()) is None
    clock.advance(H)
    assert await d.dispatch_due() == 0
    assert [m.record["attempt"] for m in publisher.attempts] == [1, 1, 2, 3]
    assert publisher.published_ids == [ok]
    assert tally.publish_errors == {TriggerType.CUSTOM: 3}
    assert tally.gave_up == {TriggerType.CUSTOM: 1}


async def test_an_unreachable_broker_uses_up_no_retries(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock
) -> None:
    [fid] = await seed(store, [custom(1, T0)], T0)
    d = dispatcher(store, publisher, clock)
    publisher.reachable = False
    for _ in range(RETRY.max_retries + 3):
        assert await d.dispatch_due() == 1
        view = await view_of(store, fid)
        assert (view.status, view.retry_count) == ("pending", 0)
        assert await store.next_due_at(clock()) == clock() + RETRY.base
        clock.advance(RETRY.base)
    assert view.error_message is not None
    assert "BrokerUnreachable" in view.error_message

    publisher.reachable = True
    assert await d.dispatch_due() == 1
    assert publisher.published_ids == [fid]
    assert publisher.published[0].record["attempt"] == 1
    assert (await view_of(store, fid)).status == "executed"


async def test_two_dispatchers_never_publish_the_same_followup_twice(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock
) -> None:
    ids = await seed(store, [custom(n, T0 - n * S) for n in range(60)], T0)
    a = dispatcher(store, publisher, clock, owner="a", batch_size=7)
    b = dispatcher(store, publisher, clock, owner="b", batch_size=7)
    claimed = {"a": 0, "b": 0}
    while True:
        got_a, got_b = await asyncio.gather(a.dispatch_due(), b.dispatch_due())
        claimed["a"] += got_a
        claimed["b"] += got_b
        if got_a == got_b == 0:
            break
    assert sorted(publisher.published_ids) == sorted(ids)
    assert len(publisher.attempts) == len(ids)
    assert claimed["a"] > 0
    assert claimed["b"] > 0


async def test_a_claim_abandoned_by_a_dead_instance_is_sent_once_its_lease_runs_out(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock
) -> None:
    [fid] = await seed(store, [custom(1, T0)], T0)
    # What a process leaves behind when it dies between claim and publish.
    assert len(await store.claim_due("dead", T0, LEASE, 10)) == 1
    d = dispatcher(store, publisher, clock)
    clock.advance(LEASE)
    assert await d.dispatch_due() == 0
    clock.advance(timedelta(milliseconds=1))
    assert await d.dispatch_due() == 1
    assert publisher.published_ids == [fid]
    assert (await view_of(store, fid)).status == "executed"


async def test_a_followup_being_sent_is_not_changed_by_ingest(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock
) -> None:
    dead_letters = MemoryDeadLetters()
    ingest = ingestor(store, dead_letters, clock)
    # Confirmed yesterday for an event 24 hours ago: its follow-up is due now.
    await ingest.process(recs([confirmed("u1", "b1", T0 - 24 * H, T0 - 25 * H)]))
    [post] = await store.list_followups(
        user_id="u1", status=None, trigger_type=TriggerType.POST_EVENT, limit=10
    )
    publisher.gate = asyncio.Event()
    sending = asyncio.create_task(dispatcher(store, publisher, clock).dispatch_due())
    await publisher.waiting.wait()  # claimed, publishing

    clock.advance(S)
    outcome = await ingest.process(recs([cancelled("u1", "b1", T0)], start=1))
    assert outcome.cancelled == {}
    assert (await view_of(store, post.id)).status == "pending"

    publisher.gate.set()
    assert await sending == 1
    assert publisher.published_ids == [post.id]
    assert (await view_of(store, post.id)).status == "executed"


async def test_a_cancellation_after_an_abandoned_claim_is_kept(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock
) -> None:
    dead_letters = MemoryDeadLetters()
    ingest = ingestor(store, dead_letters, clock)
    await ingest.process(recs([confirmed("u1", "b1", T0 - 24 * H, T0 - 25 * H)]))
    [post] = await store.list_followups(
        user_id="u1", status=None, trigger_type=TriggerType.POST_EVENT, limit=10
    )
    # A dispatcher claims it and dies; its lease runs out.
    assert len(await store.claim_due("dead", T0, LEASE, 10)) == 1
    clock.advance(2 * LEASE)
    outcome = await ingest.process(recs([cancelled("u1", "b1", clock())], start=1))
    assert outcome.cancelled == {TriggerType.POST_EVENT: 1}  # what ingest believes

    await dispatcher(store, publisher, clock).dispatch_due()
    assert publisher.published_ids == []
    assert (await view_of(store, post.id)).status == "cancelled"


class OverlapPublisher(MemoryDuePublisher):
    """Its second publish (the first of the lanes: a backlog is found by one round
    alone) waits until another round publishes meanwhile, which only rounds side by
    side can do; call number `refuse_call` raises."""

    def __init__(self, refuse_call: int | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.refuse_call = refuse_call
        self.another = asyncio.Event()

    async def publish(self, messages: Sequence[DueMessage]) -> list[BaseException | None]:
        self.calls += 1
        if self.calls == self.refuse_call:
            raise RuntimeError("this round's publish breaks")
        if self.calls == 2:
            await asyncio.wait_for(self.another.wait(), timeout=10)
        elif self.calls > 2:
            self.another.set()
        return await super().publish(messages)


class SteadyPublisher(MemoryDuePublisher):
    """A steady load: after each claim the clock moves on a second (the next
    follow-up falls due), and publish number n waits until claim n + 1 is made,
    which only a round claimed while the one before it publishes can do. Call
    number `refuse_call` then raises (and the calls after it no longer wait)."""

    def __init__(self, clock: FixedClock, refuse_call: int | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.calls = 0
        self.claims = 0
        self.refuse_call = refuse_call
        self.claimed = asyncio.Condition()

    def counting_claims(self, store: Store) -> None:
        claim_due = store.claim_due

        async def counted(*args: Any) -> list[ClaimedFollowup]:
            found = await claim_due(*args)
            self.clock.advance(S)
            async with self.claimed:
                self.claims += 1
                self.claimed.notify_all()
            return found

        store.claim_due = counted  # type: ignore[method-assign,assignment]

    async def publish(self, messages: Sequence[DueMessage]) -> list[BaseException | None]:
        self.calls += 1
        call = self.calls
        if self.refuse_call is None or call <= self.refuse_call:
            async with self.claimed:
                await asyncio.wait_for(self.claimed.wait_for(lambda: self.claims > call), 10)
        if call == self.refuse_call:
            raise RuntimeError("this round's publish breaks")
        return await super().publish(messages)


async def test_under_a_steady_load_each_round_is_claimed_while_the_one_before_publishes(
    store: Store, clock: FixedClock
) -> None:
    ids = await seed(store, [custom(n, T0 + n * S) for n in range(4)], T0)
    publisher = SteadyPublisher(clock)
    publisher.counting_claims(store)
    d = Dispatcher(store, publisher, Policy(), RETRY, clock, batch_size=5, lanes=3)
    assert await d._round() == 1.0  # nothing left: the poll interval
    assert publisher.published_ids == ids  # in order, each once
    # A claim each, and the one that found nothing while the last one published.
    assert publisher.claims == 5
    for id_ in ids:
        assert (await view_of(store, id_)).status == "executed"


async def test_a_failed_publish_lets_the_round_claimed_meanwhile_publish_then_raises(
    store: Store, clock: FixedClock
) -> None:
    first, second, third = await seed(store, [custom(n, T0 + n * S) for n in range(3)], T0)
    publisher = SteadyPublisher(clock, refuse_call=1)
    publisher.counting_claims(store)
    d = Dispatcher(store, publisher, Policy(), RETRY, clock, batch_size=5, lanes=3)
    with pytest.raises(RuntimeError, match="breaks"):
        await d._round()
    # The second round was claimed while the first published: it went out. Nothing
    # more was claimed after the failure.
    assert publisher.published_ids == [second]
    assert publisher.claims == 2
    assert (await view_of(store, second)).status == "executed"
    assert {(await view_of(store, i)).status for i in (first, third)} == {"pending"}
    # The failed round's follow-up goes out once its lease runs out.
    clock.advance(LEASE + S)
    while await d.dispatch_due():
        pass
    assert sorted(publisher.published_ids) == sorted([first, second, third])


async def test_a_backlog_is_drained_by_lanes_side_by_side_each_followup_once(
    store: Store, clock: FixedClock
) -> None:
    ids = await seed(store, [custom(n, T0 - n * S) for n in range(1, 24)], T0)
    publisher = OverlapPublisher()
    d = Dispatcher(store, publisher, Policy(), RETRY, clock, batch_size=5, lanes=3)
    assert await d._round() is None  # a backlog: go on at once
    assert sorted(publisher.published_ids) == sorted(ids)  # each once
    for id_ in ids:
        assert (await view_of(store, id_)).status == "executed"
    assert await d._round() == 1.0  # nothing left: the poll interval


async def test_a_lane_that_fails_lets_the_others_finish_their_rounds(
    store: Store, clock: FixedClock
) -> None:
    ids = await seed(store, [custom(n, T0 - n * S) for n in range(1, 31)], T0)
    publisher = OverlapPublisher(refuse_call=4)
    d = Dispatcher(store, publisher, Policy(), RETRY, clock, batch_size=5, lanes=3)
    with pytest.raises(RuntimeError, match="breaks"):
        await d._round()
    views = [await view_of(store, id_) for id_ in ids]
    executed = {v.id for v in views if v.status == "executed"}
    # Every round but the broken one was published and marked; nothing twice.
    assert executed == set(publisher.published_ids)
    assert len(publisher.published_ids) == len(set(publisher.published_ids))
    assert len(executed) == 5 * (publisher.calls - 1)
    assert {v.status for v in views if v.id not in executed} == {"pending"}
    # The broken round's follow-ups go out once their lease runs out.
    clock.advance(LEASE + S)
    while await d.dispatch_due():
        pass
    assert sorted(publisher.published_ids) == sorted(ids)
