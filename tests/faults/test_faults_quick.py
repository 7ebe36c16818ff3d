"""Short versions of the fault scenarios of `python -m bench.faults`, through the same
code (`harness/faults/`).

SIGKILL five times during a ~10k-event stream with dispatch active, 100 bad values
among valid traffic, and a replay into the existing database. The broker and
PostgreSQL outages (scenario 2) stop the shared services, so they run only from
`python -m bench.faults`, never here.
"""

from __future__ import annotations

import pytest

from harness.endpoints import Endpoints
from harness.faults.scenarios import scenario_bad, scenario_kills, scenario_replay
from tests.integration.conftest import Services

pytestmark = pytest.mark.integration


def _ep(services: Services) -> Endpoints:
    return Endpoints(services.bootstrap, services.database_url)


# An AF_UNIX socket left unclosed by a subprocess/thread helper surfaces as an
# unraisable ResourceWarning at collection of garbage; it says nothing about faults.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.timeout(600)  # ~100 s alone: two runs of 10k events, five kills, a replay
async def test_sigkill_loses_nothing_and_replay_changes_nothing(services: Services) -> None:
    row, ref_run, _ = await scenario_kills(_ep(services), 10_000, kills=5, keep_reference=True)
    assert ref_run is not None
    try:
        assert row.lost == 0, "\n".join(row.notes)
        # Duplicates are allowed only inside crash windows, and only as copies.
        assert row.ok, "\n".join(row.notes)
        replay = await scenario_replay(ref_run, row.events)
    finally:
        await ref_run.drop()
    assert replay.lost == 0, "\n".join(replay.notes)
    assert replay.duplicated == 0, "\n".join(replay.notes)
    assert replay.ok, "\n".join(replay.notes)


@pytest.mark.timeout(300)  # ~35 s alone
async def test_bad_values_are_dead_lettered_and_nothing_valid_is_lost(
    services: Services,
) -> None:
    row = await scenario_bad(_ep(services), 5_000, bad=100)
    assert row.dead_lettered == "100/100", "\n".join(row.notes)
    assert row.lost == 0, "\n".join(row.notes)
    assert row.duplicated == 0, "\n".join(row.notes)
    assert row.ok, "\n".join(row.notes)
