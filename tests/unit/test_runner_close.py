"""Stopping while the broker is down: aiokafka's fetcher, closed while a fetch
waits out the outage, raises the cancellation of its own task from
`consumer.stop()`. The service still closes everything else, without a traceback;
a cancellation of the service's own task still goes through."""

from __future__ import annotations

import asyncio

import pytest

from consumer.adapters.memory import MemoryStore
from tests.unit.offline_service import offline_service


class _Closed(MemoryStore):
    closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_cancelled_fetch_inside_the_consumers_stop_does_not_stop_the_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = offline_service()
    real_stop = service.consumer.stop

    async def stop() -> None:
        await real_stop()
        raise asyncio.CancelledError  # what aiokafka's fetcher close lets out

    store = _Closed()
    monkeypatch.setattr(service.consumer, "stop", stop)
    monkeypatch.setattr(service.parts, "store", store)
    await service._close()
    assert store.closed


async def test_a_cancellation_of_the_service_itself_still_goes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = offline_service()
    real_stop = service.consumer.stop
    entered = asyncio.Event()

    async def stop() -> None:
        await real_stop()
        entered.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(service.consumer, "stop", stop)
    task = asyncio.create_task(service._close())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
