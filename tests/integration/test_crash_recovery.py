"""SIGKILL mid-stream: the state converges to that of an uninterrupted run.

A deterministic stream of a few thousand mixed events (seeded) is consumed twice,
each time into its own database from its own copy of the topics:

* reference: the service in this process, never interrupted;
* crash run: `python -m consumer run` as a subprocess with small batches (many
  transactions), killed with SIGKILL after it committed some but not all of the
  records, restarted, killed again in the second phase, restarted, finished.

Both databases must be identical, follow-up ids included (they derive from the
events that caused them). The stream comes in two phases (see `mixed_stream`),
each produced once the previous one is consumed, so the final state does not
depend on how a run happens to interleave the topics.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from consumer.config import Settings
from tests.integration.helpers import (
    Event,
    Raw,
    consumed,
    create_topics,
    dsn,
    extra_database,
    headers_of,
    input_topics,
    mixed_stream,
    produce_events,
    produce_raw,
    read_to_end,
    running,
    service_env,
    snapshot,
    snapshot_diff,
    topic_of,
    wait_consumed,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GARBAGE: Sequence[tuple[str, bytes]] = (
    ("booking_confirmed", b"\xff garbage"),
    ("message_emotion_scored", b'{"score": 2}'),
    ("user_activity", b"[]"),
    ("booking_cancelled", b"\xc3\x01\x00\x00\x00\x00\x00\x00\x00\x00"),
)


class ServiceProcess:
    """The real service in a subprocess, its log in a file."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consumer", "run"],
                cwd=REPO,
                env=service_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)

    async def stop(self) -> int:
        """SIGTERM, the way an orchestrator stops it; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            await self.kill()
            raise

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


async def kill_midway(settings: Settings, service: ServiceProcess, low: int, high: int) -> int:
    """SIGKILL as soon as more than `low` records are committed; returns the count at
    the kill, which must be short of `high` (the run really was interrupted)."""
    conn = await asyncpg.connect(dsn(settings))
    try:
        deadline = time.monotonic() + 90
        while True:
            assert service.alive(), f"service exited early:\n{service.tail()}"
            try:
                n = await conn.fetchval(
                    "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets "
                    "WHERE group_id = $1 AND topic = ANY($2::text[])",
                    settings.kafka_group_id,
                    input_topics(settings),
                )
            except asyncpg.UndefinedTableError:
                n = 0
            if n > low:
                await service.kill()
                break
            assert time.monotonic() < deadline, f"no progress past {low}:\n{service.tail()}"
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    at_kill = await consumed(settings)
    assert low < at_kill < high, f"killed at {at_kill}, wanted it in ({low}, {high})"
    return at_kill


def with_garbage(settings: Settings, events: Sequence[Event]) -> tuple[list[Raw], list[bool]]:
    """The events as raw records, with a few undecodable values spread among them."""
    raw: list[Raw] = [(topic_of(settings, e.kind), e.key, e.value) for e in events]
    bad = [False] * len(raw)
    step = len(raw) // (len(GARBAGE) + 1)
    for i, (kind, value) in enumerate(GARBAGE):
        at = step * (i + 1) + i
        raw.insert(at, (topic_of(settings, kind), b"garbage-key", value))
        bad.insert(at, True)
    return raw, bad


@pytest.mark.timeout(360)  # ~25 s alone; its own waits add up to minutes under load
async def test_sigkilled_service_converges_to_the_uninterrupted_state(
    settings: Settings, tmp_path: Path
) -> None:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    phase1, phase2 = mixed_stream(seed=2024, users=150, base=base)
    assert len(phase1) + len(phase2) >= 2500

    reference = settings.model_copy(update={"scheduler_enabled": False})
    raw1_ref, _ = with_garbage(reference, phase1)
    n1, n2 = len(raw1_ref), len(phase2)
    await create_topics(reference)
    async with running(reference) as service:
        await produce_raw(reference, raw1_ref)
        await wait_consumed(reference, n1, service=service)
        await produce_events(reference, phase2)
        await wait_consumed(reference, n1 + n2, service=service)
    expected = await snapshot(reference)
    assert len(expected["scheduled_followups"]) > 300

    prefix = f"t{uuid.uuid4().hex[:10]}"
    async with extra_database(settings) as database_url:
        crash = reference.model_copy(
            update={
                "database_url": database_url,
                "kafka_group_id": f"{prefix}-group",
                "topic_booking_confirmed": f"{prefix}.booking.confirmed",
                "topic_booking_cancelled": f"{prefix}.booking.cancelled",
                "topic_emotion_scored": f"{prefix}.message.emotion_scored",
                "topic_user_activity": f"{prefix}.user.activity",
                "topic_followup_due": f"{prefix}.followup.due",
                "topic_dlq": f"{prefix}.followup.dlq",
                "ingest_batch_max_records": 50,
            }
        )
        raw1, bad1 = with_garbage(crash, phase1)
        await create_topics(crash)
        placed1 = await produce_raw(crash, raw1)
        log = tmp_path / "service.log"
        proc = ServiceProcess(crash, log)
        try:
            await kill_midway(crash, proc, low=n1 // 4, high=n1)
            # Restarted: it may first wait for the killed member's session to time out.
            proc = ServiceProcess(crash, log)
            await wait_consumed(crash, n1, timeout=90)
            await produce_events(crash, phase2)
            await kill_midway(crash, proc, low=n1 + n2 // 4, high=n1 + n2)
            proc = ServiceProcess(crash, log)
            await wait_consumed(crash, n1 + n2, timeout=90)
            assert await proc.stop() == 0, proc.tail()
        finally:
            if proc.alive():
                await proc.kill()
        actual = await snapshot(crash)
        # The service has stopped after consuming everything: the topic is complete.
        dead = await read_to_end(crash, crash.topic_dlq)

    diff = snapshot_diff(expected, actual)
    assert diff == [], "\n".join(diff)
    # Every undecodable record was dead-lettered (a crash may publish one twice).
    garbage_at = {(m.topic, m.offset, m.partition) for m, b in zip(placed1, bad1, strict=True) if b}
    assert {
        (
            headers_of(r)["dlq.original.topic"].decode(),
            int(headers_of(r)["dlq.original.offset"]),
            int(headers_of(r)["dlq.original.partition"]),
        )
        for r in dead
    } == garbage_at
