""" "Try it in two minutes" (README), as a new user does it: the service running,
`produce-sample` and `tail` run as commands (`python -m consumer ...` subprocesses)
against the real Kafka and PostgreSQL of the test."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from datetime import datetime

import pytest

from consumer.config import Settings
from tests.integration.conftest import REPO
from tests.integration.helpers import (
    new_id,
    produce_raw,
    query,
    running,
    service_env,
    wait_until,
)
from tests.integration.test_cli import Ran, cli

pytestmark = pytest.mark.integration

COMMAND_SECONDS = 60


class Tail:
    """`followup-consumer tail ...` running in the background."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.err_lines: list[str] = []

    @classmethod
    async def start(cls, settings: Settings, *argv: str) -> Tail:
        """Started, and positioned: it has said on stderr where it reads from, so a
        record written from now on is one it will see."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumer", "tail", *argv,
            cwd=REPO,
            env=service_env(settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        tail = cls(proc)
        assert proc.stderr is not None
        async with asyncio.timeout(COMMAND_SECONDS):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, f"tail ended before it was ready: {tail.err_lines}"
                tail.err_lines.append(line.rstrip("\n"))
                if "(Ctrl-C to stop)" in line:
                    return tail

    async def finished(self) -> Ran:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout=COMMAND_SECONDS)
        assert self.proc.returncode is not None
        return Ran(self.proc.returncode, out.decode(), "\n".join([*self.err_lines, err.decode()]))


async def followup_of(settings: Settings, user: str) -> dict[str, object]:
    rows = await query(
        settings,
        "SELECT status, scheduled_at, executed_at, template_id FROM scheduled_followups "
        "WHERE user_id = $1 AND trigger_type = 'post_event'",
        user,
    )
    assert len(rows) <= 1
    return dict(rows[0]) if rows else {}


def due_time(sample_out: str) -> str:
    match = re.search(r"falls due at (\d\d:\d\d:\d\d) \S+ on .*, (in \d+ s|now)\n", sample_out)
    assert match is not None, sample_out
    return match[1]


@pytest.mark.timeout(180)
async def test_produce_sample_and_see_the_follow_up_fire_in_tail(settings: Settings) -> None:
    early, user = new_id("early"), new_id("user")
    async with running(settings) as service:
        # An earlier story that has already fired: `tail` (from the end) must not show it.
        first = await cli(settings, "produce-sample", "--user", early, "--due-in", "0s")
        assert first.code == 0, first.err
        await wait_until(
            lambda: followup_of(settings, early), lambda f: f.get("status") == "executed"
        )

        tail = await Tail.start(settings, "--max", "1", "--timeout", str(COMMAND_SECONDS))
        assert tail.err_lines == [
            f"tail: {settings.topic_followup_due} at {settings.kafka_bootstrap_servers}, "
            "new records only (Ctrl-C to stop)"
        ]
        sample = await cli(
            settings, "produce-sample", "--user", user, "--due-in", "3s", "--format", "avro"
        )
        assert sample.code == 0, sample.err
        assert sample.err == ""
        assert f"Sent 6 events (AVRO) for user {user} to Kafka at " in sample.out
        for topic in (
            settings.topic_booking_confirmed,
            settings.topic_emotion_scored,
            settings.topic_user_activity,
        ):
            assert f"{topic} [partition " in sample.out
        at = due_time(sample.out)

        seen = await tail.finished()
        assert seen.code == 0, seen.err
        assert not service.stop.is_set()

    lines = seen.out.splitlines()
    assert len([line for line in lines if not line.startswith(" ")]) == 2  # one record, a gap
    assert f"{settings.topic_followup_due} [partition " in lines[0]
    assert lines[0].endswith(f"post_event for {user} (post_event_high_emotion en v1, attempt 1)")
    assert "    | Hi! 🎉 We hope your event on " in seen.out
    published = rf"\n    due \d{{4}}-\d\d-\d\d {at} \S+, published \d+\.\d s later\n"
    assert re.search(published, seen.out)
    assert early not in seen.out
    assert "Traceback" not in seen.err

    fired = await followup_of(settings, user)
    assert fired["status"] == "executed"
    assert fired["template_id"] == "post_event_high_emotion"
    scheduled, executed = fired["scheduled_at"], fired["executed_at"]
    assert isinstance(scheduled, datetime)
    assert isinstance(executed, datetime)
    assert executed >= scheduled  # not a moment before it was due
    assert f"{scheduled.astimezone():%H:%M:%S}" == at


@pytest.mark.timeout(120)
async def test_tail_shows_dead_letters_with_their_origin(settings: Settings) -> None:
    bad = (
        b'{"event_id":"e1","occurred_at":"2026-05-01T10:00:00Z","user_id":"u1",'
        b'"conversation_id":"c1","message_id":"m1","score":7.5}'
    )
    async with running(settings):
        [meta] = await produce_raw(settings, [(settings.topic_emotion_scored, b"u1\x1b[2J", bad)])
        dead = await Tail.start(
            settings, "followup.dlq", "--from-beginning", "--json", "--max", "1",
            "--timeout", str(COMMAND_SECONDS),
        )  # fmt: skip
        shown = await dead.finished()
    assert shown.code == 0, shown.err
    assert "from the beginning" in dead.err_lines[0]
    [line] = shown.out.splitlines()
    record = json.loads(line)
    assert record["topic"] == settings.topic_dlq
    assert record["origin"] == {
        "topic": settings.topic_emotion_scored,
        "partition": meta.partition,
        "offset": meta.offset,
    }
    assert record["error"]["type"] == "rule_violation"
    assert "score" in record["error"]["message"]
    assert record["key"] == "u1\x1b[2J"
    assert record["value"] == bad.decode()

    as_text = await cli(settings, "tail", "followup.dlq", "--from-beginning", "--max", "1")
    assert as_text.code == 0, as_text.err
    assert (
        f"    from {settings.topic_emotion_scored} "
        f"[partition {meta.partition}, offset {meta.offset}]\n"
    ) in as_text.out
    assert "    key (6 bytes) 'u1\\x1b[2J'\n" in as_text.out  # escaped, not acted on


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.timeout(90)
async def test_tail_stops_quietly_on_ctrl_c(settings: Settings, sig: signal.Signals) -> None:
    tail = await Tail.start(settings)
    tail.proc.send_signal(sig)
    stopped = await tail.finished()
    assert stopped.code == 0
    assert stopped.out == ""
    assert stopped.err.strip() == tail.err_lines[0]  # the banner, and nothing after it


@pytest.mark.timeout(90)
async def test_tail_timeout_without_enough_records(settings: Settings) -> None:
    short = await cli(settings, "tail", "--max", "1", "--timeout", "1")
    assert short.code == 1
    assert short.out == ""
    assert short.err.splitlines()[-1] == "tail: 0 of 1 records within 1 s"


@pytest.mark.timeout(180)
async def test_a_french_sample_customer_gets_the_french_text(settings: Settings) -> None:
    user = new_id("amelie")
    async with running(settings):
        tail = await Tail.start(settings, "--max", "1", "--timeout", str(COMMAND_SECONDS))
        sample = await cli(
            settings, "produce-sample", "--user", user, "--due-in", "1s", "--locale", "fr"
        )
        assert sample.code == 0, sample.err
        assert '"locale":"fr"' in sample.out
        seen = await tail.finished()
    assert seen.code == 0, seen.err
    assert seen.out.splitlines()[0].endswith(
        f"post_event for {user} (post_event_high_emotion fr v1, attempt 1)"
    )
    assert "    | Bonjour\u00a0! 🎉 Nous espérons que votre événement du " in seen.out
