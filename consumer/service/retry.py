"""The one retry loop: run an operation until it succeeds, waiting out outages.

Every loop of the service (a batch through an outage, saved offsets on
assignment, a dispatch round, a batch that conflicted with another instance)
goes through `retrying`, so they all back off the same way and all stop promptly.

What an operator reads is the state, not each failure (`Outages`): one warning
when something goes down ("database unavailable: connection refused; retrying in
0.5 s"), a reminder once a minute or when the reason changes, and one
line when it is back ("database available again after 12.3 s"). The loops of a
process share it, so an outage that stops ingest and dispatch alike reads once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from consumer.domain.policy import Backoff
from consumer.service.ports import Unavailable

T = TypeVar("T")
DEFAULT_BACKOFF = Backoff()
REMIND_SECONDS = 60.0
# A new reason is news, but not more often than this (the first moments of an
# outage can alternate between "connection lost" and "connection refused").
NEWS_SECONDS = 5.0
log = logging.getLogger(__name__)


class Stopped(Exception):
    """The stop event was set while waiting to try again."""


@dataclass
class _Down:
    since: float
    reason: str
    reported: float
    failures: int = 1


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed try, as the outage report names it."""

    subject: str  # "database", "kafka", or the operation ("dispatch")
    reason: str
    resource: bool  # subject is something the service uses (unavailable / available)

    @classmethod
    def of(cls, exc: BaseException, what: str) -> Failure:
        if isinstance(exc, Unavailable) and exc.resource:
            return cls(exc.resource, exc.reason, resource=True)
        return cls(what, described(exc), resource=False)

    def down(self) -> str:
        return f"{self.subject} {'unavailable' if self.resource else 'failing'}"

    def up(self) -> str:
        return f"{self.subject} {'available' if self.resource else 'working'} again"


class Outages:
    """What is down, since when and why: state changes reported, repeats not."""

    def __init__(
        self,
        *,
        remind_every: float = REMIND_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.remind_every = remind_every
        self.clock = clock
        self.log = logger
        self._down: dict[str, _Down] = {}
        self._back: dict[str, float] = {}  # when each subject was last seen recovering
        self.tries: dict[str, int] = {}  # failed tries per subject, ever
        self.last_reason: dict[str, str] = {}

    def is_down(self, subject: str) -> bool:
        return subject in self._down

    def failed(
        self,
        failure: Failure,
        retry_in: float,
        exc: BaseException | None = None,
        *,
        tried_at: float | None = None,
    ) -> None:
        """A try failed. Reported if it is news: the first failure, a new reason, or
        the last report is `remind_every` old. A failure that is not an outage (a
        bug, say) carries its traceback the first time. A try begun (`tried_at`)
        before another loop saw the subject recover tells nothing new."""
        now = self.clock()
        # Every try counted, for whoever looks closer (tests): the log says changes only.
        self.tries[failure.subject] = self.tries.get(failure.subject, 0) + 1
        self.last_reason[failure.subject] = failure.reason
        back = self._back.get(failure.subject)
        if tried_at is not None and back is not None and tried_at < back:
            return
        down = self._down.get(failure.subject)
        # The fields for a JSON reader; `_said`: the text line says them already.
        extra = {
            "outage": failure.subject,
            "reason": failure.reason,
            "retry_in": retry_in,
            "_said": ("outage", "reason", "retry_in", "down_seconds"),
        }
        if down is None:
            self._down[failure.subject] = _Down(now, failure.reason, now)
            self.log.warning(
                "%s: %s; retrying in %s",
                failure.down(),
                failure.reason,
                _seconds(retry_in),
                extra=extra,
                exc_info=exc if exc is not None and not failure.resource else None,
            )
            return
        down.failures += 1
        quiet_for = now - down.reported
        if quiet_for < (self.remind_every if failure.reason == down.reason else NEWS_SECONDS):
            return
        down.reason, down.reported = failure.reason, now
        self.log.warning(
            "%s for %s now (%d tries): %s; retrying in %s",
            f"{failure.subject} still {'unavailable' if failure.resource else 'failing'}",
            _seconds(now - down.since),
            down.failures,
            failure.reason,
            _seconds(retry_in),
            extra={**extra, "down_seconds": round(now - down.since, 1)},
        )

    def recovered(self, failure: Failure) -> None:
        """A try worked: if the subject was down, say for how long (once)."""
        down = self._down.pop(failure.subject, None)
        if down is None:
            return
        self._back[failure.subject] = self.clock()
        took = self.clock() - down.since
        self.log.info(
            "%s after %s",
            failure.up(),
            _seconds(took),
            extra={
                "outage": failure.subject,
                "down_seconds": round(took, 1),
                "_said": ("outage", "down_seconds"),
            },
        )


# The process's: the loops of one instance share what they see.
OUTAGES = Outages()


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    what: str,
    backoff: Backoff = DEFAULT_BACKOFF,
    attempts: int | None = None,
    stop: asyncio.Event | None = None,
    outages: Outages | None = OUTAGES,
) -> T:
    """`operation()` until it returns; failures of `retry_on` are waited out.

    Bounded by `attempts` (then the last failure is raised) or by `stop`
    (then `Stopped` is raised); any other exception propagates at once.
    Failures are reported to `outages` (None: a debug line each, for the
    expected and short-lived, like a conflict with another transaction).
    """
    failures = 0
    last: Failure | None = None
    while True:
        tried_at = outages.clock() if outages is not None else 0.0
        try:
            result = await operation()
        except retry_on as exc:
            failures += 1
            if attempts is not None and failures >= attempts:
                raise
            delay = backoff.delay(failures - 1).total_seconds()
            last = Failure.of(exc, what)
            if outages is not None:
                outages.failed(last, delay, exc, tried_at=tried_at)
            else:
                log.debug("%s failed; retrying", what, extra={"error": repr(exc), "delay": delay})
        else:
            if last is not None and outages is not None:
                outages.recovered(last)
            return result
        if stop is None:
            await asyncio.sleep(delay)
            continue
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            continue
        raise Stopped(what)


def described(exc: BaseException) -> str:
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else f"{value:.0f} s"
