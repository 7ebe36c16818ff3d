"""Small tools the integration tests share: produce, read back, query, run the service.

The event builders, topics, producing of raw records and database snapshots live in
`harness/` (bench/ uses them too); they are re-exported here for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from pydantic import SecretStr

from consumer.config import Settings
from consumer.entrypoints.runner import Service
from harness.events import CODEC as CODEC
from harness.events import Event as Event
from harness.events import activity as activity
from harness.events import cancelled as cancelled
from harness.events import confirmed as confirmed
from harness.events import mixed_stream as mixed_stream
from harness.events import ms as ms
from harness.events import new_id as new_id
from harness.events import scored as scored
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


async def read_topic(
    settings: Settings, topic: str, expected: int, timeout: float = 30.0
) -> list[Any]:
    """Every record of a topic from the beginning, once at least `expected` arrived."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for rs in batch.values():
                records.extend(rs)
        # A little longer, so that extra (duplicate) records would be seen too.
        batch = await consumer.getmany(timeout_ms=500)
        for rs in batch.values():
            records.extend(rs)
    finally:
        await consumer.stop()
    return records


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
async def running(settings: Settings) -> AsyncIterator[Service]:
    """The real service, in this process, until the block ends."""
    service = Service(settings)
    task = asyncio.create_task(service.run())
    try:
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
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    env["LOG_LEVEL"] = "WARNING"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.update(extra)
    return env
