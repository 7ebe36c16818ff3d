"""`followup-consumer run` leaves startup's objects to the permanent generation and
collects less often (`runner.settle_garbage_collector`, called once started by a
Service that owns its process)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumer.entrypoints import runner


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_settling_freezes_startup_and_raises_the_thresholds() -> None:
    made_at_startup = [[i] for i in range(1000)]  # containers the collector tracks
    assert gc.get_freeze_count() == 0
    runner.settle_garbage_collector()
    assert gc.get_threshold() == runner.GC_THRESHOLDS
    assert gc.get_freeze_count() >= len(made_at_startup)
    assert all(not gc.is_finalized(x) for x in made_at_startup)
    # Cycles made afterwards are still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
