"""`followup-consumer replay` as an operator runs it: the progress bar, the log lines
above it (never inside it), the summary on stdout, and no dead letter published twice."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

import pytest

from consumer.config import Settings
from tests.integration.conftest import REPO
from tests.integration.helpers import (
    confirmed,
    consumed_to_end,
    create_topics,
    new_id,
    produce_events,
    produce_raw,
    query,
    read_to_end,
    running,
    service_env,
)

pytestmark = pytest.mark.integration


async def replay_cli(settings: Settings) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "replay",
        cwd=REPO,
        env=service_env(settings, LOG_FORMAT="json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def produce_good_and_bad(settings: Settings, good: int, bad: int) -> None:
    now = datetime.now(UTC)
    await produce_events(
        settings,
        [
            confirmed(new_id("user"), new_id("bk"), now + timedelta(days=5), now)
            for _ in range(good)
        ],
    )
    topic = settings.topic_booking_confirmed
    await produce_raw(settings, [(topic, b"k", b"not an event %d" % i) for i in range(bad)])


def log_lines(err: str) -> list[str]:
    """The log lines of stderr, each as it stands on its terminal line: what follows
    the last carriage return (a line written into the bar would not start there)."""
    return [chunk.rsplit("\r", 1)[-1] for chunk in err.split("\n") if "bad record" in chunk]


async def test_replay_shows_a_bar_then_a_summary_and_publishes_no_dead_letter_twice(
    settings: Settings,
) -> None:
    await create_topics(settings)
    await produce_good_and_bad(settings, good=8, bad=2)
    async with running(settings) as service:
        await consumed_to_end(settings, service=service)
    assert len(await read_to_end(settings, settings.topic_dlq)) == 2  # by `run`
    # After the group's stored offsets: `run` has not seen these yet.
    await produce_good_and_bad(settings, good=3, bad=1)

    for _ in range(2):
        code, out, err = await replay_cli(settings)
        assert code == 0, err
        assert out.splitlines() == [
            "replay done",
            out.splitlines()[1],  # the rate varies
            "applied:       11",
            "dead-lettered: 3 (none published by replay: 2 already in the dead-letter "
            "topic, 1 left for `run`)",
            "expired:       0",
            out.splitlines()[5],
        ]
        assert out.splitlines()[1].startswith("events:        14 (")
        assert out.splitlines()[5].startswith("seconds:       ")
        # The bar was drawn and finished, on stderr.
        assert "14/14" in err
        assert "100%" in err
        # Each log line stands on a line of its own, above the bar.
        lines = log_lines(err)
        assert len(lines) == 3, err
        for line in lines:
            assert json.loads(line)["level"] == "warning", line
        assert "Traceback" not in err
        # Nothing new in the dead-letter topic: the two of `run`, no more.
        assert len(await read_to_end(settings, settings.topic_dlq)) == 2

    # `run` dead-letters the new bad record when it reaches it, once.
    async with running(settings) as service:
        await consumed_to_end(settings, service=service)
    letters = await read_to_end(settings, settings.topic_dlq)
    assert sorted(r.value for r in letters) == [
        b"not an event 0",
        b"not an event 0",
        b"not an event 1",
    ]
    rows = await query(settings, "SELECT count(*) AS n FROM booking_projection")
    assert rows[0]["n"] == 11
