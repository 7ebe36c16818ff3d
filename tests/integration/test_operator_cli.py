"""The operator commands print their result and nothing after it, at the default
log level: an empty list says so, `followups list` is newest first by creation,
a custom follow-up past the lateness limit is refused, and `health` knows whether
a consumer is running."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

import pytest

from consumer.adapters.postgres.store import create_engine, migrate
from consumer.config import Settings
from consumer.entrypoints.exit_codes import EXIT_TOO_LATE
from tests.integration.conftest import REPO
from tests.integration.helpers import create_topics, new_id, query, running, service_env, wait_until

pytestmark = pytest.mark.integration


async def cli(settings: Settings, *argv: str) -> tuple[int, str, str]:
    """`followup-consumer ...` at the default log level (INFO) and format (not a
    terminal: JSON), so that any log line would show."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        *argv,
        cwd=REPO,
        env=service_env(settings, LOG_LEVEL="INFO"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def migrated(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def at(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).replace(microsecond=0).isoformat()


async def schedule(settings: Settings, user: str, when: str) -> tuple[int, str, str]:
    return await cli(
        settings, "followups", "schedule", "--user", user, "--conversation", "c",
        "--message", "hello", "--at", when, "--json",
    )  # fmt: skip


async def test_list_says_when_there_is_nothing_and_is_newest_first(settings: Settings) -> None:
    await migrated(settings)
    assert await cli(settings, "followups", "list") == (0, "no follow-ups\n", "")
    assert await cli(settings, "followups", "list", "--json") == (0, "[]\n", "")

    # Created in this order, due in another: listed newest first by creation.
    made = []
    for hours in (50, 10, 30):
        code, out, err = await schedule(settings, new_id("user"), at(hours))
        assert (code, err) == (0, ""), err
        made.append(json.loads(out)["id"])
    code, out, err = await cli(settings, "followups", "list")
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split()[0] == "id"
    assert [row.split()[0] for row in rows] == made[::-1]
    code, out, err = await cli(settings, "followups", "list", "--json")
    assert [v["id"] for v in json.loads(out)] == made[::-1]


async def test_a_custom_follow_up_past_the_lateness_limit_is_refused(settings: Settings) -> None:
    await migrated(settings)
    code, out, err = await schedule(settings, new_id("user"), at(-49))
    assert code == EXIT_TOO_LATE
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("followup-consumer: not scheduled: ")
    assert line.endswith(
        "is more than 48 h ago (MAX_LATENESS_HOURS): a follow-up that late is never sent"
    )
    assert await query(settings, "SELECT id FROM scheduled_followups") == []
    # Late by less than the limit: taken, and sent at once by a running consumer.
    code, out, err = await schedule(settings, new_id("user"), at(-47))
    assert code == 0, err
    assert json.loads(out)["status"] == "pending"


async def test_health_knows_whether_a_consumer_is_running(settings: Settings) -> None:
    await migrated(settings)
    await create_topics(settings)
    code, out, err = await cli(settings, "health", "--json")
    assert (code, err) == (1, "")
    report = json.loads(out)
    assert report["status"] == "unhealthy"
    assert report["database"]["reachable"]
    assert report["kafka"]["reachable"]
    assert report["consumer"]["members"] == 0

    async with running(settings) as service:
        everything = 4 * settings.topic_partitions

        async def assigned() -> int:
            return len(service.consumer.assignment())

        await wait_until(assigned, lambda n: n == everything, timeout=60)
        code, out, err = await cli(settings, "health")
        assert (code, err) == (0, ""), out
        assert out.startswith("status:         healthy\n")
        assert f"consumers:      1 in group {settings.kafka_group_id} (Stable)\n" in out, out
