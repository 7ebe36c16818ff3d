"""Small tools the integration tests share: produce, read back, query, run the service.

The event builders, topics, producing of raw records and database snapshots live in
`harness/` (bench/ uses them too); they are re-exported here for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata

from consumer.adapters.kafka import client_options
from consumer.adapters.postgres.store import create_engine, migrate, upsert_followups
from consumer.config import Settings
from consumer.domain.model import Followup, TriggerType
from consumer.entrypoints.runner import Service
from consumer.service.dispatch import Round
from harness.events import CODEC as CODEC
from harness.events import Event as Event
from harness.events import activity as activity
from harness.events import cancelled as cancelled
from harness.events import confirmed as confirmed
from harness.events import mixed_stream as mixed_stream
from harness.events import ms as ms
from harness.events import new_id as new_id
from harness.events import scored as scored
from harness.settings_env import settings_env
from harness.state import consumed as consumed
from harness.state import dsn as dsn
from harness.state import query as query
from harness.state import snapshot as snapshot
from harness.state import snapshot_diff as snapshot_diff
from harness.topics import Raw as Raw
from harness.topics import create_topics as create_topics
from harness.topics import headers_of as headers_of
from harness.topics import input_topics as input_topics
from harness.topics import produce_raw as produce_raw
from harness.topics import topic_of as topic_of

T = TypeVar("T")


async def produce(
    settings: Settings, topic: str, messages: Sequence[tuple[bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_until(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 30.0
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[Service]:
    """The real service, in this process, until the block ends (on `clock`, if given).

    The block starts once the service has started (its database migrated, its
    loops running): a query in it never races the start for the tables."""
    service = Service(settings, clock) if clock is not None else Service(settings)
    task = asyncio.create_task(service.run())

    async def started() -> bool:
        return "ingest" in service.tasks or task.done()

    try:
        await wait_until(started, bool, timeout=60)
        if task.done():
            task.result()  # why it could not start
        yield service
    finally:
        service.stop.set()
        await asyncio.wait_for(task, timeout=30)


# --- Added for the rule, duplicate, dead-letter and crash-recovery tests -----------------
# (add-only: everything above keeps its signature)


async def produce_events(settings: Settings, events: Sequence[Event]) -> list[RecordMetadata]:
    """Each event to its topic, keyed by user_id, in the given order."""
    return await produce_raw(
        settings, [(topic_of(settings, e.kind), e.key, e.value) for e in events]
    )


async def wait_consumed(
    settings: Settings, n: int, timeout: float = 60.0, service: Service | None = None
) -> None:
    """Until the service has committed exactly `n` input records (never more).

    With `service` (from `running`), fails at once if that service has stopped."""

    def done(c: int) -> bool:
        if service is not None and service.stop.is_set():
            raise AssertionError(f"the service stopped after committing {c} of {n} records")
        return c >= n

    got = await wait_until(lambda: consumed(settings), done, timeout)
    assert got == n, f"consumer committed {got} records, but only {n} were produced"


# --- Waiting for "nothing more happens" without sleeping ----------------------------------
# A check that nothing (more) happened is only worth something once the service has
# provably gone past the input: its offsets stored in PostgreSQL have reached the end
# of the input topics, and no follow-up is left due. Then reading an output topic up
# to its end offsets is exact; a fixed sleep would pass untested on a slow machine.


async def partitions_of(settings: Settings, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of `topics`, which must exist."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    missing = [t["topic"] for t in described if t["error_code"] != 0]
    assert not missing, f"no such topics: {missing}"
    return sorted(
        TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
    )


async def end_offsets(settings: Settings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The end offset (offset of the next record to be written) of every partition."""
    partitions = await partitions_of(settings, topics)
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def stored_offsets(settings: Settings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """`next_offset` per partition as stored in PostgreSQL for this group (with the
    effects of the records before it); empty before the schema exists."""
    try:
        rows = await query(
            settings,
            "SELECT topic, partition, next_offset FROM consumer_offsets "
            "WHERE group_id = $1 AND topic = ANY($2::text[])",
            settings.kafka_group_id,
            list(topics),
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidCatalogNameError):
        return {}
    return {TopicPartition(r["topic"], r["partition"]): int(r["next_offset"]) for r in rows}


async def consumed_to_end(
    settings: Settings,
    topics: Sequence[str] | None = None,
    *,
    timeout: float = 60.0,
    service: Service | None = None,
) -> None:
    """Until the service has applied every record of `topics` (default: the input
    topics) written before this call: the offsets it stored in PostgreSQL reach the
    end offsets seen now, on every partition.

    With `service` (from `running`), fails at once if that service has stopped."""
    topics = list(topics) if topics is not None else input_topics(settings)
    ends = await end_offsets(settings, topics)

    def done(stored: dict[TopicPartition, int]) -> bool:
        if service is not None and service.stop.is_set():
            raise AssertionError(f"the service stopped at {stored}, short of {ends}")
        return all(stored.get(tp, 0) >= end for tp, end in ends.items())

    stored = await wait_until(lambda: stored_offsets(settings, topics), done, timeout)
    beyond = {tp: (stored[tp], end) for tp, end in ends.items() if stored.get(tp, 0) > end}
    assert not beyond, f"offsets stored past the end of the log (stored, end): {beyond}"


async def due_pending(settings: Settings) -> int:
    """Follow-ups due now and still pending (claimed or not): work dispatch has left."""
    rows = await query(
        settings,
        "SELECT count(*) AS n FROM scheduled_followups "
        "WHERE status = 'pending' AND due_at <= now()",
    )
    return int(rows[0]["n"])


async def nothing_due(settings: Settings, timeout: float = 30.0) -> None:
    """Until no follow-up is due and pending: each one due so far was published and
    marked executed (or expired, or failed, or moved to a later retry). A record is
    published before its follow-up is marked, so `followup.due` holds them all."""
    await wait_until(lambda: due_pending(settings), lambda n: n == 0, timeout)


async def read_to_end(settings: Settings, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every record of `topic`, from the beginning up to the end offsets seen at this
    call: exact (neither fewer nor more), with no waiting for records to come."""
    partitions = await partitions_of(settings, [topic])
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        remaining = {tp for tp in partitions if starts[tp] < ends[tp]}
        deadline = time.monotonic() + timeout
        while remaining:
            assert time.monotonic() < deadline, f"{topic}: not read to its end in {timeout}s"
            batch = await consumer.getmany(*remaining, timeout_ms=200)
            for tp, rs in batch.items():
                records.extend(r for r in rs if r.offset < ends[tp])
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return records


class DispatchRounds:
    """Counts the dispatch rounds of a service running in this process, so that a test
    can wait for rounds that began after some point instead of sleeping."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.started = 0
        self.completed: list[int] = []  # the numbers of the rounds that completed
        dispatcher = service.parts.dispatcher
        claim, finish = dispatcher.claim_round, dispatcher.finish_round
        numbers: dict[int, int] = {}  # id of a claimed round -> its number

        # A round begins with its claim and is complete once finished (published and
        # recorded); under a steady load the next one's claim overlaps it.
        async def claimed() -> Round:
            self.started += 1
            number = self.started
            ready = await claim()
            numbers[id(ready)] = number
            return ready

        async def finished(ready: Round) -> None:
            await finish(ready)
            self.completed.append(numbers.pop(id(ready)))

        dispatcher.claim_round = claimed  # type: ignore[method-assign]
        dispatcher.finish_round = finished  # type: ignore[method-assign]

    async def after_now(self, n: int = 1, timeout: float = 30.0) -> None:
        """Until `n` rounds that began after this call have completed."""
        mark = self.started

        def done(count: int) -> bool:
            if self.service.stop.is_set():
                raise AssertionError("the service stopped")
            return count >= n

        async def count() -> int:
            return sum(1 for number in self.completed if number > mark)

        await wait_until(count, done, timeout)


@contextlib.asynccontextmanager
async def extra_database(settings: Settings) -> AsyncIterator[str]:
    """Another fresh database on the same server as `settings.database_url`, dropped
    afterwards; yields its `postgresql+asyncpg://` URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    base, _, _ = settings.database_url.rpartition("/")
    admin_dsn = dsn(settings)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes `python -m consumer ...` use exactly these settings
    (plus `extra`); nothing inherited that names a setting leaks in."""
    repo = str(Path(__file__).resolve().parents[2])
    return settings_env(settings, **{"LOG_LEVEL": "WARNING", "PYTHONPATH": repo, **extra})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def write_custom_followups(
    settings: Settings, due: Sequence[tuple[str, datetime]]
) -> list[str]:
    """Custom follow-ups, one per (user, due time), written as ingest writes them
    (the database migrated first); their ids."""
    followups = [
        Followup(
            id=str(uuid.uuid4()),
            user_id=user,
            conversation_id=f"conv-{user}",
            trigger_type=TriggerType.CUSTOM,
            scheduled_at=at,
            custom_message=f"message {i}",
        )
        for i, (user, at) in enumerate(due)
    ]
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await upsert_followups(conn, followups)
    finally:
        await engine.dispose()
    return [f.id for f in followups]
