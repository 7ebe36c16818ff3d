"""Pure: the backoff arithmetic (domain.policy) and the one retry loop (service.retry)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from consumer.domain.model import Status
from consumer.domain.policy import Backoff, Policy, RetryPolicy
from consumer.service.ports import Conflict, Unavailable
from consumer.service.retry import Stopped, retrying
from tests.service.conftest import T0

S = timedelta(seconds=1)
NO_WAIT = Backoff(first=timedelta(0), cap=timedelta(0))


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(first=S / 2, cap=5 * S)
    assert [b.delay(n) for n in range(6)] == [S / 2, S, 2 * S, 4 * S, 5 * S, 5 * S]
    # A long outage never overflows.
    assert b.delay(10_000) == 5 * S


def test_retry_policy_backs_off_then_gives_up() -> None:
    policy = RetryPolicy(max_retries=4, base=2 * S, cap=10 * S)
    assert [policy.next_attempt(n, T0) for n in range(6)] == [
        T0 + 2 * S,
        T0 + 4 * S,
        T0 + 8 * S,
        T0 + 10 * S,
        None,
        None,
    ]
    assert RetryPolicy(max_retries=0).next_attempt(0, T0) is None
    assert RetryPolicy(max_retries=100).next_attempt(99, T0) == T0 + RetryPolicy().cap


def test_too_late_is_strictly_older_than_max_lateness() -> None:
    policy = Policy(max_lateness=timedelta(hours=48))
    edge = T0 - timedelta(hours=48)
    assert not policy.too_late(edge, T0)
    assert policy.too_late(edge - timedelta(microseconds=1), T0)
    assert policy.status_for(edge, T0) is Status.PENDING
    assert policy.status_for(edge - S, T0) is Status.EXPIRED


class Flaky:
    """Fails with each of `errors` in turn, then returns how often it was called."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.failed = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            self.failed.set()
            raise self.errors.pop(0)
        return self.calls


async def test_retrying_waits_out_the_failures_it_is_told_to() -> None:
    op = Flaky(Unavailable("db"), Conflict("deadlock"), Unavailable("db"))
    result = await retrying(op, retry_on=(Unavailable, Conflict), what="op", backoff=NO_WAIT)
    assert result == 4


async def test_retrying_outlasts_a_long_outage() -> None:
    # More doublings than a timedelta can hold: the delay stays at its cap.
    op = Flaky(*(Unavailable(f"down {n}") for n in range(60)))
    tiny = Backoff(first=timedelta(milliseconds=1), cap=timedelta(milliseconds=1))
    assert await retrying(op, retry_on=Unavailable, what="op", backoff=tiny) == 61


async def test_retrying_gives_up_after_its_attempts_with_the_last_failure() -> None:
    op = Flaky(Conflict("1"), Conflict("2"), Conflict("3"))
    with pytest.raises(Conflict, match="2"):
        await retrying(op, retry_on=Conflict, what="op", backoff=NO_WAIT, attempts=2)
    assert op.calls == 2


async def test_retrying_lets_other_failures_through_at_once() -> None:
    op = Flaky(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await retrying(op, retry_on=Unavailable, what="op", backoff=NO_WAIT)
    assert op.calls == 1


async def test_retrying_stops_when_told_instead_of_trying_again() -> None:
    stop = asyncio.Event()
    stop.set()
    op = Flaky(Unavailable("db"))
    with pytest.raises(Stopped):
        await retrying(op, retry_on=Unavailable, what="op", stop=stop)
    assert op.calls == 1
    # Success needs no permission: a stop set before an operation that works is no failure.
    assert await retrying(Flaky(), retry_on=Unavailable, what="op", stop=stop) == 1


async def test_a_stop_ends_a_long_backoff_promptly() -> None:
    stop = asyncio.Event()
    op = Flaky(Unavailable("db"))
    waiting = asyncio.create_task(
        retrying(
            op,
            retry_on=Unavailable,
            what="op",
            backoff=Backoff(first=timedelta(hours=1), cap=timedelta(hours=1)),
            stop=stop,
        )
    )
    await op.failed.wait()
    stop.set()
    async with asyncio.timeout(5):
        with pytest.raises(Stopped):
            await waiting
    assert op.calls == 1
