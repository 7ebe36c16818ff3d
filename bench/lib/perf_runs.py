"""The runs behind the performance report: the ingest replay sampled every 0.5 s (1 and
2 instances), and the steady dispatch latencies kept raw."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from bench.lib.dispatch import SteadyRun
from bench.lib.kafka import create_topics, delete_topics, produce
from bench.lib.names import Names
from bench.lib.service import applied_count, run_service
from bench.lib.stream import generate
from consumer.adapters.codec import Codec
from harness.endpoints import Endpoints, create_database, drop_database, pg_dsn
from harness.paths import REPO

PARTITIONS = 6


@dataclass
class IngestRun:
    instances: int
    events: int
    seconds: float
    first_seconds: float
    peak_rss_mib: float
    peak_rss_total_mib: float
    complete: bool
    series: list[tuple[float, int]] = field(default_factory=list)  # (s since start, applied)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def steady_rate(self) -> float:
        busy = self.seconds - self.first_seconds
        return self.events / busy if busy > 0 else 0.0


async def _sample(dsn: str, group: str, stop: asyncio.Event, out: list[tuple[float, int]]) -> None:
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        while not stop.is_set():
            out.append((time.perf_counter() - started, await applied_count(conn, group)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
    finally:
        await conn.close()


async def replay(ep: Endpoints, names: Names, n: int, instances: int) -> IngestRun:
    """The service replaying the topics into a fresh database, sampled every 0.5 s."""
    token = secrets.token_hex(4)
    names = dataclasses.replace(
        names, database=f"bench_{token}", service_group=f"{names.prefix}-service-{token}"
    )
    await create_database(ep, names.database)
    series: list[tuple[float, int]] = []
    stop = asyncio.Event()
    try:
        sampler = asyncio.create_task(
            _sample(pg_dsn(ep.database(names.database)), names.service_group, stop, series)
        )
        try:
            run = await run_service(
                ep,
                names,
                n,
                partitions=PARTITIONS,
                limit_s=max(120.0, n / 1000.0),
                extra_env={"LOG_LEVEL": "WARNING"},
                cwd=REPO,
                profile=None,
                py_spy=None,
                explain_ms=None,
                pg_log=REPO / ".services" / "postgres" / "log" / "postgres.log",
                instances=instances,
            )
        finally:
            stop.set()
            await sampler
    finally:
        await drop_database(ep, names.database)
    return IngestRun(
        instances=instances,
        events=run.phase.events,
        seconds=run.phase.seconds,
        first_seconds=run.phase.first_seconds or 0.0,
        peak_rss_mib=run.peak_rss_mib,
        peak_rss_total_mib=run.peak_rss_total_mib,
        complete=run.complete,
        series=series,
    )


async def ingest(ep: Endpoints, n: int, users: int, instances: list[int]) -> list[IngestRun]:
    names = Names.fresh()
    await create_topics(ep.bootstrap, names.topics, PARTITIONS)
    try:
        stream = generate(n, users, "avro", 42, Codec.load(), datetime.now(UTC))
        seconds = await produce(ep.bootstrap, names.inputs, stream, 20_000)
        del stream.records[:]
        print(f"produced {n:,} events in {seconds:.1f} s", flush=True)
        runs = []
        for k in instances:
            print(f"replaying with {k} instance(s) ...", flush=True)
            run = await replay(ep, names, n, k)
            print(f"  {run.events:,} in {run.seconds:.1f} s: {run.rate:,.0f} events/s", flush=True)
            runs.append(run)
        return runs
    finally:
        await delete_topics(ep.bootstrap, names.topics)


@dataclass
class Steady:
    follow_ups: int
    published: int
    latencies: list[float]  # seconds, sorted
    pg_bytes_per_row: float

    @classmethod
    def of(cls, run: SteadyRun) -> Steady:
        return cls(run.follow_ups, run.published, run.latencies, run.pg_bytes_per_row)

    def pct(self, p: float) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=1000)[round(p * 10) - 1]
