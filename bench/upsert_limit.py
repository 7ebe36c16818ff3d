"""How many rows per second PostgreSQL takes through the service's set-based writes.

The state store's ceiling on this machine: the batch upsert of follow-ups (new
rows, then the same rows moved), and the user projection's lock-and-write-back,
each in batches of the ingest size, one transaction per batch, through the
service's own store (`consumer.adapters.postgres`). Prints rows/s per phase.

    .venv/bin/python -m bench.upsert_limit [--rows 200000] [--batch 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg

from consumer.adapters.postgres.store import PostgresStore, create_engine, migrate, upsert_followups
from consumer.domain.model import Followup, TriggerType, UserState
from consumer.service.ports import BatchKeys


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def measure(database_url: str, rows: int, batch: int) -> dict[str, float]:
    base, _, _ = database_url.rpartition("/")
    name = f"upsert_limit_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_dsn(database_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    engine = create_engine(f"{base}/{name}")
    store = PostgresStore(engine, "bench")
    now = datetime.now(UTC)
    rates: dict[str, float] = {}
    try:
        await migrate(engine)
        followups = [
            Followup(
                id=str(uuid.uuid4()),
                user_id=f"user-{i % (rows // 2 or 1)}",
                conversation_id=f"conv-{i}",
                trigger_type=TriggerType.POST_EVENT,
                scheduled_at=now + timedelta(hours=i % 500),
                booking_ids=(f"bk-{i}",),
                active_booking_ids=(f"bk-{i}",),
                booking_dates=((f"bk-{i}", now),),
                event_date=now,
            )
            for i in range(rows)
        ]
        chunks = [followups[i : i + batch] for i in range(0, rows, batch)]

        async def upsert_all(items: list[list[Followup]]) -> float:
            started = time.perf_counter()
            for chunk in items:
                async with engine.begin() as conn:
                    await upsert_followups(conn, chunk)
            return time.perf_counter() - started

        rates["follow-ups inserted"] = rows / await upsert_all(chunks)
        moved = [
            [replace(f, scheduled_at=f.scheduled_at + timedelta(minutes=5)) for f in c]
            for c in chunks
        ]
        rates["follow-ups updated"] = rows / await upsert_all(moved)

        started = time.perf_counter()
        for start in range(0, rows, batch):
            ids = [f"u-{i}" for i in range(start, min(start + batch, rows))]
            async with store.transaction() as tx:
                ws = await tx.lock_and_load(BatchKeys(frozenset(ids)), now)
                ws.apply(UserState(u, last_activity_at=now) for u in ids)
                await tx.save(ws, {})
        rates["users locked, loaded and written"] = rows / (time.perf_counter() - started)
    finally:
        await engine.dispose()
        admin = await asyncpg.connect(_dsn(database_url))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit('DATABASE_URL is not set: eval "$(scripts/services env)" first')
    rates = asyncio.run(measure(url, args.rows, args.batch))
    for name, rate in rates.items():
        print(f"{name:<36} {rate:>12,.0f} rows/s  (batches of {args.batch:,})")


if __name__ == "__main__":
    main()
