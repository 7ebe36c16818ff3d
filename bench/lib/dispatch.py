"""The dispatch benchmark: follow-ups seeded straight into a fresh database, the real
service publishing them, and what reached `followup.due` when."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer

from bench.lib.kafka import create_topics, delete_topics
from bench.lib.names import Names
from bench.lib.service import service_env
from consumer.adapters.postgres.store import create_engine, migrate
from harness.endpoints import Endpoints, create_database, drop_database, pg_dsn

COLUMNS = (
    "id",
    "user_id",
    "conversation_id",
    "trigger_type",
    "trigger_data",
    "scheduled_at",
    "due_at",
    "status",
)


async def seed(dsn: str, times: list[datetime]) -> None:
    """Custom follow-ups due at the given times, loaded with COPY."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = [
            (
                str(uuid.uuid4()),
                f"user-{i % 100_000}",
                f"conv-{i}",
                "custom",
                json.dumps({"custom_message": f"Benchmark message {i}"}),
                at,
                at,
                "pending",
            )
            for i, at in enumerate(times)
        ]
        await conn.copy_records_to_table("scheduled_followups", records=rows, columns=COLUMNS)
    finally:
        await conn.close()


async def count_executed(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM scheduled_followups WHERE status = 'executed'")
    )


async def published(bootstrap: str, topic: str, expected: int) -> list[tuple[int, str]]:
    """(publish time ms, follow-up id) of every record of the output topic."""
    from consumer.adapters.codec import Codec

    codec = Codec.load()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 120
        while len(out) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for r in records:
                    out.append((r.timestamp, codec.decode("followup_due", r.value)["event_id"]))
    finally:
        await consumer.stop()
    return out


def start_service(
    env: dict[str, str], log_path: str, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """`python -m consumer run`, from `cwd` (a checkout of other code) when given."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=str(cwd) if cwd is not None else None,
        )


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def prepare(ep: Endpoints) -> tuple[Names, str, dict[str, str]]:
    names = Names.fresh()
    await create_database(ep, names.database)
    await create_topics(ep.bootstrap, names.topics, 6)
    engine = create_engine(ep.database(names.database))
    await migrate(engine)
    await engine.dispose()
    env = service_env(
        ep,
        names,
        6,
        {"SCHEDULER_ENABLED": "true", "LOG_LEVEL": "WARNING", "DISPATCH_BATCH_SIZE": "2000"},
    )
    return names, pg_dsn(ep.database(names.database)), env


async def burst(ep: Endpoints, n: int, cwd: Path | None = None) -> dict[str, float]:
    names, dsn, env = await prepare(ep)
    due = datetime.now(UTC) - timedelta(seconds=1)
    await seed(dsn, [due] * n)
    conn = await asyncpg.connect(dsn)
    proc = start_service(env, f"/tmp/{names.prefix}-dispatch.log", cwd)
    started = time.perf_counter()
    try:
        for _ in range(3000):  # 10 minutes at most
            if (done := await count_executed(conn)) >= n:
                break
            await asyncio.sleep(0.2)
        total = time.perf_counter() - started
        first, last = await conn.fetchrow(
            "SELECT min(executed_at), max(executed_at) FROM scheduled_followups"
        )
    finally:
        stop_service(proc)
        await conn.close()
    out = await published(ep.bootstrap, names.outputs[0], n)
    await drop_database(ep, names.database)
    await delete_topics(ep.bootstrap, names.topics)
    stamps = sorted(ts for ts, _ in out)
    publishing = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else 0.0
    draining = (last - first).total_seconds() if first and last else 0.0
    return {
        "follow-ups": n,
        "executed": done,
        "published records": len(out),
        "distinct event ids": len({i for _, i in out}),
        "seconds from process start until all executed": total,
        "seconds from first to last executed_at": draining,
        "seconds from first to last publish": publishing,
        "publications per second": n / max(publishing, draining, 1e-9),
    }


@dataclass
class SteadyRun:
    follow_ups: int
    published: int
    latencies: list[float]  # seconds, sorted
    pg_bytes_per_row: float


async def steady_run(ep: Endpoints, rate: int, seconds: int, cwd: Path | None = None) -> SteadyRun:
    """`rate` follow-ups falling due per second for `seconds`; every firing latency."""
    names, dsn, env = await prepare(ep)
    proc = start_service(env, f"/tmp/{names.prefix}-steady.log", cwd)
    try:
        await asyncio.sleep(6)  # started and idle
        t0 = datetime.now(UTC) + timedelta(seconds=2)
        times = [t0 + timedelta(seconds=i / rate) for i in range(rate * seconds)]
        # Loaded in one go ahead of time: the dispatcher must fire each on time.
        await seed(dsn, times)
        await asyncio.sleep((times[-1] - datetime.now(UTC)).total_seconds() + 5)
    finally:
        stop_service(proc)
    out = await published(ep.bootstrap, names.outputs[0], len(times))
    conn = await asyncpg.connect(dsn)
    try:
        scheduled = {
            r["id"]: r["scheduled_at"]
            for r in await conn.fetch("SELECT id, scheduled_at FROM scheduled_followups")
        }
        table_bytes = await conn.fetchval("SELECT pg_total_relation_size('scheduled_followups')")
    finally:
        await conn.close()
    await drop_database(ep, names.database)
    await delete_topics(ep.bootstrap, names.topics)
    latencies = sorted(
        ts / 1000 - scheduled[fid].timestamp() for ts, fid in out if fid in scheduled
    )
    return SteadyRun(len(times), len(out), latencies, table_bytes / max(len(scheduled), 1))


async def steady(ep: Endpoints, rate: int, seconds: int) -> dict[str, float]:
    run = await steady_run(ep, rate, seconds)
    q = statistics.quantiles(run.latencies, n=100)
    return {
        "follow-ups": run.follow_ups,
        "published": run.published,
        "latency p50 (s)": q[49],
        "latency p99 (s)": q[98],
        "latency max (s)": run.latencies[-1],
    }


def show(title: str, figures: dict[str, float], targets: dict[str, str]) -> None:
    print(f"\n{title}")
    for key, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        print(f"  {key:<42} {shown:>14}   {targets.get(key, '')}")
