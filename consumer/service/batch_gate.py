"""Batches in flight, and a pause in which there are none (for a rebalance).

The runner keeps up to two batches in flight (`LaneTurns`); a rebalance must
still find none half-applied when its partitions move on. `paused()` stops new
batches from starting and waits for those in flight to finish, as the lock
around one batch did before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class BatchGate:
    def __init__(self) -> None:
        self._in_flight = 0
        self._pauses = 0
        self._idle = asyncio.Event()  # no batch in flight
        self._idle.set()
        self._open = asyncio.Event()  # no pause wanted or held
        self._open.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def enter(self) -> None:
        """Before a batch starts: waits while a pause is wanted or held."""
        while not self._open.is_set():
            await self._open.wait()
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        """A batch finished (applied, failed or cancelled). Called by the batch's
        own task, so a pause never waits for the loop that starts batches."""
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No batch in flight, and none starting, for as long as this is held."""
        self._pauses += 1
        self._open.clear()
        try:
            while self._in_flight:
                await self._idle.wait()
            yield
        finally:
            self._pauses -= 1
            if self._pauses == 0:
                self._open.set()
