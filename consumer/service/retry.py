"""The one retry loop: run an operation until it succeeds, waiting out outages.

Every loop of the service (a batch through an outage, saved offsets on
assignment, a batch that conflicted with another instance) goes through
`retrying`, so they all back off the same way and all stop promptly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from consumer.domain.policy import Backoff

T = TypeVar("T")
DEFAULT_BACKOFF = Backoff()
log = logging.getLogger(__name__)


class Stopped(Exception):
    """The stop event was set while waiting to try again."""


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    what: str,
    backoff: Backoff = DEFAULT_BACKOFF,
    attempts: int | None = None,
    stop: asyncio.Event | None = None,
) -> T:
    """`operation()` until it returns; failures of `retry_on` are waited out.

    Bounded by `attempts` (then the last failure is raised) or by `stop`
    (then `Stopped` is raised); any other exception propagates at once.
    """
    failures = 0
    while True:
        try:
            return await operation()
        except retry_on as exc:
            failures += 1
            if attempts is not None and failures >= attempts:
                raise
            delay = backoff.delay(failures - 1).total_seconds()
            log.warning("%s failed; retrying", what, extra={"error": repr(exc), "retry_in": delay})
        if stop is None:
            await asyncio.sleep(delay)
            continue
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            continue
        raise Stopped(what)
