"""A baseline of the old design: one transaction per event, one in-memory timer per
follow-up (see `python -m bench.baseline`)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.lib.names import INPUTS, Names
from bench.lib.stream import generate
from consumer.adapters.codec import Codec
from consumer.adapters.postgres.store import (
    PostgresStore,
    create_engine,
    migrate,
    upsert_followups,
)
from consumer.adapters.wire import BadInput, parse_event
from consumer.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    EmotionScored,
    EventKind,
    InputEvent,
)
from consumer.domain.policy import Policy
from consumer.domain.rules import decide
from consumer.domain.working_set import WorkingSet
from consumer.service.ports import BatchKeys
from harness.endpoints import Endpoints, create_database, drop_database, endpoints


@dataclass
class IngestBaseline:
    events: int
    seconds: float
    transactions: int
    statements_written: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def decode_stream(n: int, users: int, seed: int) -> list[InputEvent]:
    """The same kind of stream as the ingest benchmark, decoded, in event-time order."""
    codec = Codec.load()
    stream = generate(n, users, "avro", seed, codec, datetime.now(UTC))
    kinds = [EventKind(name) for name, _, _ in INPUTS]
    out: list[InputEvent] = []
    for kind, _, value in stream.records:
        try:
            out.append(parse_event(kinds[kind], value, codec))
        except BadInput:
            continue
    return out


def _keys(event: InputEvent) -> BatchKeys:
    users: set[str] = set()
    bookings: set[str] = set()
    conversations: set[str] = set()
    if isinstance(event, BookingCancelled | BookingConfirmed):
        bookings.add(event.booking_id)
    if not isinstance(event, BookingCancelled):  # a cancellation needs no user row
        users.add(event.user_id)
    if isinstance(event, EmotionScored):
        conversations.add(event.conversation_id)
    return BatchKeys(frozenset(users), frozenset(bookings), frozenset(conversations))


async def _write_row_by_row(tx: Any, ws: WorkingSet) -> int:
    """Every changed row with its own statement: one round trip per row."""
    users, bookings, convs, followups = ws.changed()
    written = 0
    for u in users:
        await tx.save(WorkingSet(users={u.user_id: u}, dirty_users={u.user_id}), {})
        written += 1
    for c in convs:
        one = WorkingSet(
            conversations={c.conversation_id: c}, dirty_conversations={c.conversation_id}
        )
        await tx.save(one, {})
        written += 1
    for b in bookings:
        await tx.save(WorkingSet(bookings={b.booking_id: b}, dirty_bookings={b.booking_id}), {})
        written += 1
    for f in followups:
        await upsert_followups(tx.conn, [f])
        written += 1
    return written


async def ingest_baseline(
    ep: Endpoints, events: list[InputEvent], policy: Policy | None = None
) -> IngestBaseline:
    """Apply the events one transaction each into a fresh database; returns the timing."""
    policy = policy or Policy()
    names = Names.fresh()
    await create_database(ep, names.database)
    engine = create_engine(ep.database(names.database), pool_size=1)
    try:
        await migrate(engine)
        store = PostgresStore(engine, names.service_group)
        written = 0
        started = time.perf_counter()
        for event in events:
            now = datetime.now(UTC)
            async with store.transaction() as tx:
                ws = await tx.lock_and_load(_keys(event), now)
                ws.apply(decide(ws, event, policy, now))
                written += await _write_row_by_row(tx, ws)
        seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
        await drop_database(ep, names.database)
    return IngestBaseline(len(events), seconds, len(events), written)


@dataclass
class TimerMemory:
    timers: int
    call_at_bytes: float  # per loop.call_at timer holding its follow-up id
    apscheduler_bytes: float | None  # per APScheduler DateTrigger job (memory job store)
    apscheduler_error: str | None = None


def _fire(followup_id: str) -> None:  # pragma: no cover - never fires
    raise AssertionError(followup_id)


async def _call_at_bytes(n: int) -> float:
    loop = asyncio.get_running_loop()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    later = loop.time() + 86_400
    ids = [f"followup-{i:08d}" for i in range(n)]
    handles = [loop.call_at(later + i * 0.001, _fire, ids[i]) for i in range(n)]
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    for h in handles:
        h.cancel()
    return used / n


async def _apscheduler_bytes(n: int) -> float:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.date import DateTrigger

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.start(paused=True)
    try:
        start = datetime.now(UTC) + timedelta(days=1)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            scheduler.add_job(
                _fire,
                DateTrigger(run_date=start + timedelta(milliseconds=i)),
                args=[f"followup-{i:08d}"],
                id=f"followup-{i:08d}",
            )
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    finally:
        scheduler.shutdown(wait=False)
    return used / n


async def timer_memory(n: int, apscheduler_jobs: int | None = None) -> TimerMemory:
    out = TimerMemory(n, await _call_at_bytes(n), None)
    try:
        out.apscheduler_bytes = await _apscheduler_bytes(apscheduler_jobs or n)
    except Exception as exc:  # optional: report, do not fail the run
        out.apscheduler_error = f"{type(exc).__name__}: {exc}"
    return out


async def run_baseline(args: argparse.Namespace) -> None:
    ep = endpoints()
    events = decode_stream(args.events, args.users, args.seed)
    result = await ingest_baseline(ep, events)
    print(
        f"baseline ingest: {result.events:,} events, one transaction each, in "
        f"{result.seconds:.1f} s: {result.rate:,.0f} events/s "
        f"({result.statements_written:,} single-row writes)"
    )
    mem = await timer_memory(args.timers)
    print(f"loop.call_at timers: {mem.call_at_bytes:,.0f} bytes each ({args.timers:,})")
    if mem.apscheduler_bytes is not None:
        print(f"APScheduler DateTrigger jobs: {mem.apscheduler_bytes:,.0f} bytes each")
    else:
        print(f"APScheduler jobs not measured: {mem.apscheduler_error}")
