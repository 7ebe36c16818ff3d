"""Pure: the backoff arithmetic (domain.policy) and the one retry loop (service.retry)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from consumer.domain.model import Status
from consumer.domain.policy import Backoff, Policy, RetryPolicy
from consumer.service.ports import Conflict, Unavailable
from consumer.service.retry import Outages, Stopped, retrying
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


# --- what an operator reads: state changes, not each failure ---------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reported(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test.outages"]
    caplog.clear()
    return lines


def report(clock: Clock) -> Outages:
    return Outages(clock=clock, logger=logging.getLogger("test.outages"))


class Outage:
    """Fails with Unavailable(database, reason) while `reasons` last; each try takes
    `step` seconds of the fake clock."""

    def __init__(self, clock: Clock, reasons: list[str], step: float = 1.0) -> None:
        self.clock = clock
        self.reasons = reasons
        self.step = step

    async def __call__(self) -> str:
        self.clock.now += self.step
        if self.reasons:
            raise Unavailable(self.reasons.pop(0), resource="database")
        return "done"


async def test_an_outage_reads_as_one_line_down_and_one_line_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "test.outages")
    clock = Clock()
    outages = report(clock)
    first = Backoff(first=timedelta(seconds=0.5), cap=timedelta(seconds=0.5))
    op = Outage(clock, ["connection refused"] * 20, step=0.6)
    assert (
        await retrying(op, retry_on=Unavailable, what="ingest", backoff=NO_WAIT, outages=outages)
        == "done"
    )
    assert reported(caplog) == [
        ("WARNING", "database unavailable: connection refused; retrying in 0.0 s"),
        ("INFO", "database available again after 12.0 s"),
    ]
    # The delay told is the one waited.
    op = Outage(clock, ["connection refused"])
    await retrying(op, retry_on=Unavailable, what="ingest", backoff=first, outages=outages)
    assert reported(caplog)[0] == (
        "WARNING", "database unavailable: connection refused; retrying in 0.5 s"
    )  # fmt: skip


async def test_a_long_outage_is_recalled_once_a_minute_and_when_its_reason_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "test.outages")
    clock = Clock()
    reasons = ["connection refused"] * 100 + ["the database system is starting up"] * 3
    op = Outage(clock, reasons, step=1.0)
    await retrying(op, retry_on=Unavailable, what="ingest", backoff=NO_WAIT, outages=report(clock))
    assert reported(caplog) == [
        ("WARNING", "database unavailable: connection refused; retrying in 0.0 s"),
        (
            "WARNING",
            "database still unavailable for 60 s now (61 tries): connection refused; "
            "retrying in 0.0 s",
        ),
        (
            "WARNING",
            "database still unavailable for 100 s now (101 tries): the database system is "
            "starting up; retrying in 0.0 s",
        ),
        ("INFO", "database available again after 103 s"),
    ]


class Database:
    """One database for several loops: down until `up_at` on the fake clock; each try
    takes a second, and the clock moves while it is in flight."""

    def __init__(self, clock: Clock, up_at: float) -> None:
        self.clock = clock
        self.up_at = up_at

    async def query(self) -> str:
        began = self.clock.now
        self.clock.now += 1
        await asyncio.sleep(0)  # the other loop's try runs meanwhile
        if began < self.up_at:
            raise Unavailable("connection refused", resource="database")
        return "rows"


async def test_the_loops_of_a_process_share_what_they_see(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "test.outages")
    clock = Clock()
    outages = report(clock)
    db = Database(clock, up_at=clock.now + 7)
    await asyncio.gather(
        retrying(db.query, retry_on=Unavailable, what="ingest", backoff=NO_WAIT, outages=outages),
        retrying(db.query, retry_on=Exception, what="dispatch", backoff=NO_WAIT, outages=outages),
    )
    lines = reported(caplog)
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert lines[0][1] == "database unavailable: connection refused; retrying in 0.0 s"
    assert lines[1][1].startswith("database available again after ")


async def test_a_failure_that_is_not_an_outage_carries_its_traceback_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "test.outages")
    clock = Clock()
    op = Flaky(ValueError("a bug"), ValueError("a bug"))
    await retrying(op, retry_on=Exception, what="dispatch", backoff=NO_WAIT, outages=report(clock))
    records = [r for r in caplog.records if r.name == "test.outages"]
    assert [r.getMessage() for r in records] == [
        "dispatch failing: ValueError: a bug; retrying in 0.0 s",
        "dispatch working again after 0.0 s",
    ]
    assert records[0].exc_info is not None
    assert records[1].exc_info is None


async def test_short_lived_failures_can_stay_out_of_the_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    op = Flaky(Conflict("40P01: deadlock detected"))
    await retrying(op, retry_on=Conflict, what="batch", backoff=NO_WAIT, outages=None)
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
