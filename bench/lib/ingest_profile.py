"""Where the ingest time goes: a real `Ingestor` fed pre-fetched batches in this process,
its phases and every SQL statement timed, optionally under cProfile."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import pstats
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncConnection

import consumer.service.ingest as ingest_module
from bench.lib.kafka import FETCH_OPTIONS, create_topics, delete_topics, produce
from bench.lib.names import Names
from bench.lib.stream import generate
from consumer.adapters.codec import Codec
from consumer.adapters.postgres.store import (
    PostgresStore,
    PostgresUnitOfWork,
    create_engine,
    migrate,
)
from consumer.adapters.wire import WireDecoder
from consumer.bootstrap import policy_from_settings
from consumer.config import load_settings
from consumer.domain.working_set import WorkingSet
from consumer.entrypoints.runner import utc_now
from consumer.service.ingest import Ingestor
from consumer.service.ports import DeadLetter, InRecord
from harness.endpoints import Endpoints, create_database, drop_database, endpoints


class _NoDeadLetters:
    def __init__(self) -> None:
        self.count = 0

    async def send(self, dead: Sequence[DeadLetter]) -> None:
        self.count += len(dead)


@dataclass
class Timings:
    phases: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    sql_count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sql_wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    sql_cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    sql_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    gc_seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    gc_runs: list[int] = field(default_factory=lambda: [0, 0, 0])


def _statement_name(statement: Any) -> str:
    text = " ".join(str(statement).split())
    words = text.split()
    if words[:2] == ["INSERT", "INTO"]:
        kind = "upsert" if "DO UPDATE" in text else "insert"
        return f"{kind} {words[2]}"
    if words[:1] == ["UPDATE"]:
        return f"update {words[1]}"
    if words[:1] == ["SELECT"] and "FROM" in words:
        table = words[words.index("FROM") + 1]
        lock = " FOR UPDATE" if "FOR UPDATE" in text else ""
        return f"select {table}{lock}"
    return text[:60]


Patch = Callable[[Any, str, Any], None]  # replaces owner.name with a new value


def instrument(t: Timings) -> Callable[[], None]:
    """Wrap the phases of a batch and every statement with timers; returns an undo."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, new: Any) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    _time_decode(t, patch)
    _time_store(t, patch)
    _time_decide(t, patch)
    _time_transaction(t, patch)
    _time_statements(t, patch)
    on_gc = _gc_timer(t)
    gc.callbacks.append(on_gc)

    def undo() -> None:
        gc.callbacks.remove(on_gc)
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)

    return undo


def _time_decode(t: Timings, patch: Patch) -> None:
    decode = Ingestor.decode

    def timed_decode(self: Ingestor, records: Sequence[InRecord]) -> Any:
        t0 = time.perf_counter()
        try:
            return decode(self, records)
        finally:
            t.phases["decode (codec + pydantic)"] += time.perf_counter() - t0

    patch(Ingestor, "decode", timed_decode)


def _time_store(t: Timings, patch: Patch) -> None:
    """The unit of work's loading and saving (SQL and the conversions around it)."""
    lock_and_load = PostgresUnitOfWork.lock_and_load

    async def timed_lock_and_load(self: PostgresUnitOfWork, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await lock_and_load(self, *args, **kw)
        finally:
            t.phases["lock_and_load (SQL + rows to objects)"] += time.perf_counter() - t0

    patch(PostgresUnitOfWork, "lock_and_load", timed_lock_and_load)

    save = PostgresUnitOfWork.save

    async def timed_save(self: PostgresUnitOfWork, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await save(self, *args, **kw)
        finally:
            t.phases["save (objects to arrays + SQL)"] += time.perf_counter() - t0

    patch(PostgresUnitOfWork, "save", timed_save)


def _time_decide(t: Timings, patch: Patch) -> None:
    """The rules (`decide`, as the ingest module calls it) and applying their changes."""
    decide = getattr(ingest_module, "decide")  # noqa: B009 (not re-exported)

    def timed_decide(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return decide(*args, **kw)
        finally:
            t.phases["decide (rules.decide per event)"] += time.perf_counter() - t0

    patch(ingest_module, "decide", timed_decide)

    apply = WorkingSet.apply

    def timed_apply(self: WorkingSet, changes: Any) -> None:
        t0 = time.perf_counter()
        try:
            apply(self, changes)
        finally:
            t.phases["decide (WorkingSet.apply)"] += time.perf_counter() - t0

    patch(WorkingSet, "apply", timed_apply)


def _time_transaction(t: Timings, patch: Patch) -> None:
    """The start of a transaction and its commit (not a rollback)."""
    transaction = PostgresStore.transaction

    @contextlib.asynccontextmanager
    async def timed_transaction(self: PostgresStore) -> AsyncIterator[PostgresUnitOfWork]:
        t0 = time.perf_counter()
        cm = transaction(self)
        tx = await cm.__aenter__()
        t.phases["begin (checkout, ping, BEGIN)"] += time.perf_counter() - t0
        try:
            yield tx
        except BaseException as exc:
            if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            t1 = time.perf_counter()
            await cm.__aexit__(None, None, None)
            t.phases["commit"] += time.perf_counter() - t1

    patch(PostgresStore, "transaction", timed_transaction)


# An element of an array literal (consumer.adapters.postgres.arrays): quoted, or bare.
_ELEMENT = re.compile(r'"(?:[^"\\]|\\.)*"|[^,{}"]+')


def _elements(value: Any) -> int:
    """How many elements an array parameter has: a list, or an array literal."""
    if isinstance(value, list):
        return len(value)
    if isinstance(value, str) and value.startswith("{"):
        return len(_ELEMENT.findall(value))
    return 0


def _time_statements(t: Timings, patch: Patch) -> None:
    """Every SQL statement: count, wall and client CPU time, rows (the longest array
    parameter) by `_statement_name`."""
    execute = AsyncConnection.execute

    async def timed_execute(self: AsyncConnection, statement: Any, *args: Any, **kw: Any) -> Any:
        name = _statement_name(statement)
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return await execute(self, statement, *args, **kw)
        finally:
            t.sql_count[name] += 1
            t.sql_wall[name] += time.perf_counter() - w0
            t.sql_cpu[name] += time.process_time() - c0
            params = args[0] if args and isinstance(args[0], dict) else {}
            t.sql_rows[name] += max((_elements(v) for v in params.values()), default=0)

    patch(AsyncConnection, "execute", timed_execute)


def _gc_timer(t: Timings) -> Callable[[str, dict[str, int]], None]:
    """A `gc.callbacks` entry adding up the time and runs of every generation."""
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            t.gc_seconds[info["generation"]] += time.perf_counter() - gc_started[0]
            t.gc_runs[info["generation"]] += 1

    return on_gc


async def fetch_batches(
    bootstrap: str, topics: Sequence[str], n: int, max_records: int
) -> list[list[InRecord]]:
    """The batches `getmany` hands out, as the service's ingest loop would get them."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FETCH_OPTIONS,
    )
    await consumer.start()
    batches: list[list[InRecord]] = []
    seen = 0
    try:
        while seen < n:
            got = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            records: list[InRecord] = [r for rs in got.values() for r in rs]
            if records:
                batches.append(records)
                seen += len(records)
    finally:
        await consumer.stop()
    return batches


async def replay(
    database_url: str, group: str, names: Names, batches: Sequence[Sequence[InRecord]]
) -> tuple[float, float, int]:
    """Every batch through a real Ingestor; returns (wall s, CPU s, dead letters)."""
    settings = load_settings(
        database_url=database_url,
        kafka_group_id=group,
        topic_booking_confirmed=names.inputs[2],
        topic_booking_cancelled=names.inputs[3],
        topic_emotion_scored=names.inputs[1],
        topic_user_activity=names.inputs[0],
    )
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        dead = _NoDeadLetters()
        ingestor = Ingestor(
            PostgresStore(engine, group),
            WireDecoder(Codec.load()),
            policy_from_settings(settings),
            settings.input_topics,
            dead,
            utc_now,
        )
        w0, c0 = time.perf_counter(), time.process_time()
        for batch in batches:
            await ingestor.process(batch)
        return time.perf_counter() - w0, time.process_time() - c0, dead.count
    finally:
        await engine.dispose()


def report(t: Timings, wall: float, cpu: float, events: int, batches: int) -> str:
    lines = [
        f"{events:,} events in {batches} batches: {wall:.1f} s wall, {events / wall:,.0f} "
        f"events/s; this process's CPU {cpu:.1f} s ({cpu / wall:.0%} of the wall time), "
        f"so {wall - cpu:.1f} s ({(wall - cpu) / wall:.0%}) waiting (PostgreSQL)",
        "",
        f"{'phase of Ingestor.process':<42}{'s':>8}{'% wall':>8}{'ms/batch':>10}",
    ]
    accounted = 0.0
    for name, seconds in sorted(t.phases.items(), key=lambda kv: -kv[1]):
        accounted += seconds
        lines.append(
            f"{name:<42}{seconds:>8.2f}{seconds / wall:>8.1%}{seconds / batches * 1000:>10.1f}"
        )
    rest = wall - accounted
    gc_total = sum(t.gc_seconds)
    lines.append(
        f"{'rest (sort, offsets, outcome, loop)':<42}{rest:>8.2f}{rest / wall:>8.1%}"
        f"{rest / batches * 1000:>10.1f}"
    )
    lines.append(
        f"(garbage collection, inside the phases above: {gc_total:.2f} s, {gc_total / wall:.1%}; "
        + ", ".join(
            f"gen{g} {n} runs {s:.2f} s"
            for g, (n, s) in enumerate(zip(t.gc_runs, t.gc_seconds, strict=True))
        )
        + ")"
    )
    lines += [
        "",
        f"{'SQL statement':<42}{'count':>6}{'rows':>9}{'wall s':>8}{'% wall':>8}"
        f"{'client CPU s':>13}{'waiting s':>10}",
    ]
    for name in sorted(t.sql_wall, key=lambda k: -t.sql_wall[k]):
        w, c = t.sql_wall[name], t.sql_cpu[name]
        lines.append(
            f"{name:<42}{t.sql_count[name]:>6}{t.sql_rows[name]:>9,}{w:>8.2f}{w / wall:>8.1%}"
            f"{c:>13.2f}{w - c:>10.2f}"
        )
    total_w = sum(t.sql_wall.values())
    total_c = sum(t.sql_cpu.values())
    lines.append(
        f"{'all statements':<42}{sum(t.sql_count.values()):>6}{'':>9}{total_w:>8.2f}"
        f"{total_w / wall:>8.1%}{total_c:>13.2f}{total_w - total_c:>10.2f}"
    )
    return "\n".join(lines)


async def run_profile(args: argparse.Namespace) -> None:
    ep: Endpoints = endpoints()
    names = Names.fresh()
    n = args.events
    print(f"profile {names.prefix}: {n:,} events, {args.users:,} users, {args.format}")
    databases = [names.database, f"{names.database}_cprofile"]
    for db in databases:
        await create_database(ep, db)
    try:
        await create_topics(ep.bootstrap, names.topics, args.partitions)
        try:
            stream = generate(
                n, args.users, args.format, args.seed, Codec.load(), datetime.now(UTC)
            )
            await produce(ep.bootstrap, names.inputs, stream, 20_000)
            del stream
            batches = await fetch_batches(ep.bootstrap, names.inputs, n, args.batch)
        finally:
            await delete_topics(ep.bootstrap, names.topics)
        if not args.no_freeze:
            # The service holds one batch at a time; keep the full garbage
            # collections from walking every fetched record as they would here.
            gc.collect()
            gc.freeze()
        print(f"fetched {len(batches)} batches; replaying them through Ingestor.process")

        timings = Timings()
        undo = instrument(timings)
        try:
            wall, cpu, dead = await replay(
                ep.database(databases[0]), names.service_group, names, batches
            )
        finally:
            undo()
        print(report(timings, wall, cpu, n, len(batches)))
        if dead:
            print(f"dead letters: {dead}")

        if args.cprofile is not None:
            profiler = cProfile.Profile()
            profiler.enable()
            wall, _, _ = await replay(
                ep.database(databases[1]), names.service_group, names, batches
            )
            profiler.disable()
            profiler.dump_stats(str(args.cprofile))
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
            print(f"\ncProfile ({wall:.1f} s wall under the profiler), saved to {args.cprofile}")
            print(out.getvalue())
    finally:
        for db in databases:
            await drop_database(ep, db)


def consumer_package() -> Path:
    """The directory of the `consumer` package in use (a scratch copy comes first)."""
    return Path(ingest_module.__file__).parent
