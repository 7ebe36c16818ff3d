"""Quiet hours and the daily cap on the real broker and database, the service's
clock set by the test: a follow-up due at 03:00 local is published at the end of
the window; a user over the cap gets the extra one the next local day; two
instances racing send exactly the cap."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from consumer.config import Settings
from tests.integration.helpers import (
    CODEC,
    query,
    read_to_end,
    running,
    wait_until,
    write_custom_followups,
)

pytestmark = pytest.mark.integration

NY = ZoneInfo("America/New_York")


class Clock:
    """The service's time, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def states(settings: Settings) -> dict[str, tuple[str, str | None, datetime]]:
    rows = await query(
        settings, "SELECT id, status, held_reason, due_at FROM scheduled_followups ORDER BY id"
    )
    return {r["id"]: (r["status"], r["held_reason"], r["due_at"]) for r in rows}


async def published(settings: Settings) -> list[dict[str, object]]:
    out = await read_to_end(settings, settings.topic_followup_due)
    return [CODEC.decode("followup_due", r.value) for r in out]


def quiet(settings: Settings, **extra: object) -> Settings:
    return settings.model_copy(
        update={
            "scheduler_timezone": "America/New_York",
            "quiet_hours": "21:00-08:00",
            "dispatch_poll_seconds": 0.2,
            **extra,
        }
    )


async def test_due_at_3am_local_is_published_at_the_end_of_quiet_hours(
    settings: Settings,
) -> None:
    settings = quiet(settings)
    three = datetime(2026, 3, 2, 3, tzinfo=NY).astimezone(UTC)
    eight = datetime(2026, 3, 2, 8, tzinfo=NY).astimezone(UTC)
    clock = Clock(three)
    (id_,) = await write_custom_followups(settings, [("night-owl", three)])
    async with running(settings, clock):
        got = await wait_until(lambda: states(settings), lambda s: s[id_][1] is not None)
        assert got[id_] == ("pending", "quiet_hours", eight)
        assert await published(settings) == []
        clock.now = eight
        await wait_until(lambda: states(settings), lambda s: s[id_][0] == "executed")
    (record,) = await published(settings)
    assert record["followup_id"] == id_
    assert record["scheduled_at"] == three
    emitted = record["emitted_at"]
    assert isinstance(emitted, datetime)
    assert emitted >= eight


async def test_over_the_cap_the_extra_one_goes_out_the_next_local_day(
    settings: Settings,
) -> None:
    settings = quiet(settings, max_sends_per_user_per_day=2)
    noon = datetime(2026, 3, 2, 12, tzinfo=NY).astimezone(UTC)
    tomorrow = datetime(2026, 3, 3, 8, tzinfo=NY).astimezone(UTC)
    clock = Clock(noon)
    ids = await write_custom_followups(settings, [("busy", noon)] * 3)

    def settled(s: dict[str, tuple[str, str | None, datetime]]) -> bool:
        return sorted(v[0] for v in s.values()) == ["executed", "executed", "pending"]

    async with running(settings, clock):
        got = await wait_until(lambda: states(settings), settled)
        (held,) = [v for v in got.values() if v[0] == "pending"]
        assert held == ("pending", "daily_cap", tomorrow)
        assert len(await published(settings)) == 2
        clock.now = tomorrow
        await wait_until(
            lambda: states(settings), lambda s: all(v[0] == "executed" for v in s.values())
        )
    assert sorted(str(r["followup_id"]) for r in await published(settings)) == sorted(ids)


@pytest.mark.timeout(180)
async def test_two_instances_racing_send_exactly_the_cap(settings: Settings) -> None:
    settings = quiet(settings, max_sends_per_user_per_day=3, dispatch_batch_size=2)
    noon = datetime(2026, 3, 2, 12, tzinfo=NY).astimezone(UTC)
    clock = Clock(noon)
    users = [f"racer-{i}" for i in range(5)]
    for u in users:
        await write_custom_followups(settings, [(u, noon)] * 8)

    async def done() -> int:
        rows = await query(
            settings,
            "SELECT count(*) AS n FROM scheduled_followups "
            "WHERE status = 'executed' OR held_reason IS NOT NULL",
        )
        return int(rows[0]["n"])

    async with running(settings, clock), running(settings, clock):
        await wait_until(done, lambda n: n == 40, timeout=90)
    per_user = await query(
        settings,
        "SELECT user_id, count(*) FILTER (WHERE status = 'executed') AS sent, "
        "count(*) FILTER (WHERE held_reason = 'daily_cap') AS held "
        "FROM scheduled_followups GROUP BY user_id ORDER BY user_id",
    )
    assert [(r["user_id"], r["sent"], r["held"]) for r in per_user] == [(u, 3, 5) for u in users]
    assert len(await published(settings)) == 15
