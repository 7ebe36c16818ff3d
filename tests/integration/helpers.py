"""Small tools the integration tests share: produce, read back, query, run the service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata
from pydantic import SecretStr

from consumer.adapters.codec import Codec
from consumer.adapters.kafka import client_options, ensure_topics
from consumer.config import Settings
from consumer.entrypoints.runner import Service

CODEC = Codec.load()
T = TypeVar("T")


def dsn(settings: Settings) -> str:
    return settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def query(settings: Settings, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(settings))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


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

INPUT_KINDS = ("booking_confirmed", "booking_cancelled", "message_emotion_scored", "user_activity")


def topic_of(settings: Settings, kind: str) -> str:
    """The topic a kind of input event is produced to, under these settings."""
    return {
        "booking_confirmed": settings.topic_booking_confirmed,
        "booking_cancelled": settings.topic_booking_cancelled,
        "message_emotion_scored": settings.topic_emotion_scored,
        "user_activity": settings.topic_user_activity,
    }[kind]


def input_topics(settings: Settings) -> list[str]:
    return [topic_of(settings, k) for k in INPUT_KINDS]


def ms(when: datetime) -> datetime:
    """`when` cut to whole milliseconds, the precision of the wire format."""
    return when.replace(microsecond=when.microsecond - when.microsecond % 1000)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Event:
    """One input event as a producer would write it: kind, record and wire format."""

    kind: str
    record: dict[str, Any]
    fmt: str = "json"  # "json" or "avro"

    @property
    def key(self) -> bytes:
        return str(self.record["user_id"]).encode()

    @property
    def value(self) -> bytes:
        if self.fmt == "avro":
            return CODEC.encode_avro(self.kind, self.record)
        return CODEC.encode_json(self.kind, self.record)

    @property
    def event_id(self) -> str:
        return str(self.record["event_id"])


def confirmed(
    user_id: str,
    booking_id: str,
    event_date: datetime,
    occurred_at: datetime,
    *,
    conversation_id: str | None = None,
    timezone: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    return Event(
        "booking_confirmed",
        {
            "event_id": event_id or new_id("evc"),
            "occurred_at": occurred_at,
            "user_id": user_id,
            "booking_id": booking_id,
            "event_date": event_date,
            "conversation_id": conversation_id,
            "timezone": timezone,
        },
        fmt,
    )


def cancelled(
    user_id: str,
    booking_id: str,
    occurred_at: datetime,
    *,
    reason: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    return Event(
        "booking_cancelled",
        {
            "event_id": event_id or new_id("evx"),
            "occurred_at": occurred_at,
            "user_id": user_id,
            "booking_id": booking_id,
            "reason": reason,
        },
        fmt,
    )


def scored(
    user_id: str,
    conversation_id: str,
    score: float,
    occurred_at: datetime,
    *,
    message_id: str | None = None,
    label: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    return Event(
        "message_emotion_scored",
        {
            "event_id": event_id or new_id("evs"),
            "occurred_at": occurred_at,
            "user_id": user_id,
            "conversation_id": conversation_id,
            "message_id": message_id or new_id("msg"),
            "score": score,
            "label": label,
        },
        fmt,
    )


def activity(
    user_id: str,
    occurred_at: datetime,
    *,
    activity_type: str = "login",
    conversation_id: str | None = None,
    event_id: str | None = None,
    fmt: str = "json",
) -> Event:
    return Event(
        "user_activity",
        {
            "event_id": event_id or new_id("eva"),
            "occurred_at": occurred_at,
            "user_id": user_id,
            "activity_type": activity_type,
            "conversation_id": conversation_id,
        },
        fmt,
    )


async def create_topics(settings: Settings) -> None:
    """Create the test's topics up front (as the service would), so that producing
    before the service starts never depends on the broker auto-creating them."""
    await ensure_topics(
        settings, [*input_topics(settings), settings.topic_followup_due, settings.topic_dlq]
    )


Raw = tuple[str, bytes | None, bytes | None]  # topic, key, value


async def produce_raw(
    settings: Settings,
    messages: Sequence[Raw],
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> list[RecordMetadata]:
    """Produce in the given order (idempotent producer: no reordering on retry);
    returns where each record landed."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=v, key=k, headers=list(headers or []))
            for topic, k, v in messages
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def produce_events(settings: Settings, events: Sequence[Event]) -> list[RecordMetadata]:
    """Each event to its topic, keyed by user_id, in the given order."""
    return await produce_raw(
        settings, [(topic_of(settings, e.kind), e.key, e.value) for e in events]
    )


async def consumed(settings: Settings) -> int:
    """Records of the input topics whose effects are committed for this group:
    the sum of `next_offset` in `consumer_offsets` (0 before the schema exists)."""
    try:
        rows = await query(
            settings,
            "SELECT coalesce(sum(next_offset), 0) AS n FROM consumer_offsets "
            "WHERE group_id = $1 AND topic = ANY($2::text[])",
            settings.kafka_group_id,
            input_topics(settings),
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidCatalogNameError):
        return 0
    return int(rows[0]["n"])


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
        original = dispatcher.dispatch_due

        async def counted() -> int:
            self.started += 1
            number = self.started
            claimed = await original()
            self.completed.append(number)
            return claimed

        dispatcher.dispatch_due = counted  # type: ignore[method-assign]

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


_VOLATILE = frozenset({"created_at", "updated_at"})
_SNAPSHOT_TABLES = {
    "scheduled_followups": "id",
    "user_projection": "user_id",
    "booking_projection": "booking_id",
    "conversation_emotions": "conversation_id",
}
_JSON_COLUMNS = frozenset({"trigger_data", "history"})

Snapshot = dict[str, list[dict[str, Any]]]


async def snapshot(settings: Settings) -> Snapshot:
    """Every row of the follow-up and projection tables, without the bookkeeping
    timestamps (created_at, updated_at), ordered by primary key: equal snapshots
    mean equal state."""
    out: Snapshot = {}
    conn = await asyncpg.connect(dsn(settings))
    try:
        for table, key in _SNAPSHOT_TABLES.items():
            rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {key}")
            out[table] = [
                {
                    k: (json.loads(v) if k in _JSON_COLUMNS and v is not None else v)
                    for k, v in r.items()
                    if k not in _VOLATILE
                }
                for r in rows
            ]
    finally:
        await conn.close()
    return out


def snapshot_diff(a: Snapshot, b: Snapshot, limit: int = 10) -> list[str]:
    """Human-readable differences (at most `limit`), empty when equal."""
    diffs: list[str] = []
    for table, key in _SNAPSHOT_TABLES.items():
        left = {r[key]: r for r in a.get(table, [])}
        right = {r[key]: r for r in b.get(table, [])}
        for k in sorted(left.keys() | right.keys()):
            if left.get(k) != right.get(k):
                if k not in right:
                    diffs.append(f"{table}[{k}] only in first: {left[k]}")
                elif k not in left:
                    diffs.append(f"{table}[{k}] only in second: {right[k]}")
                else:
                    cols = {
                        c: (left[k].get(c), right[k].get(c))
                        for c in left[k].keys() | right[k].keys()
                        if left[k].get(c) != right[k].get(c)
                    }
                    diffs.append(f"{table}[{k}] differs: {cols}")
                if len(diffs) >= limit:
                    return diffs
    return diffs


def headers_of(record: Any) -> dict[str, bytes]:
    return {k: v for k, v in record.headers}


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


TIME_ZONES = (None, "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")


def mixed_stream(seed: int, users: int, base: datetime) -> tuple[list[Event], list[Event]]:
    """A deterministic, realistic stream of the four input topics, in two phases.

    Per user: bookings (some within a day of each other, so they share a follow-up;
    some re-confirmed with another date; now and then one a year and more in the
    past, created `expired`), conversations with emotion scores (some dropping below
    0.4, some recovering), activity (some of it delivered late, out of order).

    Phase two holds the cancellations of phase-one bookings and the confirmations of
    bookings whose cancellation came first, in phase one. Producing phase two only
    after phase one is consumed makes the final state independent of how the
    consumer happens to interleave the topics; every event of one user on one topic
    is produced in `occurred_at` order. Every follow-up lies in the future of `base`
    (or a year and more before it), so the outcome does not depend on the clock.
    """
    rng = random.Random(seed)
    serial = iter(range(10**9))
    phase1: list[Event] = []
    phase2: list[Event] = []
    late: list[Event] = []

    def eid(kind: str) -> str:
        return f"s{seed}-{kind}-{next(serial)}"

    def fmt() -> str:
        return rng.choice(("json", "avro"))

    for u in range(users):
        user = f"s{seed}-user-{u}"
        tz = rng.choice(TIME_ZONES)
        clock = base + timedelta(minutes=rng.randint(0, 3 * 24 * 60))

        def tick(max_minutes: int = 180) -> datetime:
            nonlocal clock
            clock += timedelta(minutes=rng.randint(1, max_minutes), seconds=rng.randint(0, 59))
            return clock

        bookings: list[str] = []
        for b in range(rng.randint(1, 4)):
            booking = f"{user}-bk{b}"
            if rng.random() < 0.1:
                when = base - timedelta(days=rng.randint(400, 700), hours=rng.randint(0, 23))
                phase1.append(
                    confirmed(
                        user, booking, when, when - timedelta(days=20), event_id=eid("c"), fmt=fmt()
                    )
                )
                continue
            # Dates on a 10-hour grid: neighbours often fall within the ±1 day window.
            date = base + timedelta(
                days=20, hours=10 * rng.randint(0, 12), minutes=rng.randint(0, 59)
            )
            conv = rng.choice((None, f"{user}-conv0", f"{user}-conv-bk{b}"))
            phase1.append(
                confirmed(
                    user,
                    booking,
                    date,
                    tick(),
                    conversation_id=conv,
                    timezone=tz,
                    event_id=eid("c"),
                    fmt=fmt(),
                )
            )
            bookings.append(booking)
            if rng.random() < 0.3:
                moved = date + timedelta(hours=rng.choice((-30, -12, 8, 20, 50, 100)))
                phase1.append(
                    confirmed(
                        user,
                        booking,
                        moved,
                        tick(),
                        conversation_id=conv,
                        timezone=tz,
                        event_id=eid("c"),
                        fmt=fmt(),
                    )
                )
        conversations = [f"{user}-conv{c}" for c in range(rng.randint(1, 2))]
        moods = {c: rng.choice(((0.0, 0.45), (0.3, 0.8), (0.6, 1.0))) for c in conversations}

        def scores(
            target: list[Event], user: str, conv: str, mood: tuple[float, float], count: int
        ) -> None:
            for _ in range(count):
                target.append(
                    scored(
                        user,
                        conv,
                        round(rng.uniform(*mood), 2),
                        tick(90),
                        message_id=eid("m"),
                        label=rng.choice((None, "joy", "anger")),
                        event_id=eid("s"),
                        fmt=fmt(),
                    )
                )

        for conv in conversations:
            scores(phase1, user, conv, moods[conv], rng.randint(2, 8))
        for _ in range(rng.randint(0, 4)):
            phase1.append(
                activity(
                    user,
                    tick(),
                    activity_type=rng.choice(("login", "search", "view")),
                    event_id=eid("a"),
                    fmt=fmt(),
                )
            )
        early: str | None = None
        if rng.random() < 0.15:
            early = f"{user}-bk-early"
            phase1.append(
                cancelled(user, early, tick(), reason="changed plans", event_id=eid("x"), fmt=fmt())
            )

        # Phase two: strictly later than everything of this user in phase one.
        clock += timedelta(hours=1)
        for booking in bookings:
            if rng.random() < 0.35:
                phase2.append(
                    cancelled(
                        user,
                        booking,
                        tick(),
                        reason=rng.choice((None, "weather")),
                        event_id=eid("x"),
                        fmt=fmt(),
                    )
                )
        if early is not None:
            date = base + timedelta(days=25, hours=rng.randint(0, 100))
            phase2.append(
                confirmed(user, early, date, tick(), timezone=tz, event_id=eid("c"), fmt=fmt())
            )
        for conv in conversations:
            moods[conv] = rng.choice(((0.0, 0.45), (0.5, 1.0)))
            scores(phase2, user, conv, moods[conv], rng.randint(0, 5))
        if rng.random() < 0.5:
            phase2.append(activity(user, tick(), event_id=eid("a"), fmt=fmt()))
        if rng.random() < 0.3:
            # Delivered last, happened early: must never move anything backwards.
            late.append(
                activity(
                    user, base - timedelta(hours=rng.randint(1, 50)), event_id=eid("a"), fmt=fmt()
                )
            )

    def by_time(events: list[Event]) -> list[Event]:
        return sorted(events, key=lambda e: e.record["occurred_at"])

    return by_time(phase1), by_time(phase2) + late


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
