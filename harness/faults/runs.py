"""One run's topics, group and database; the service in subprocesses; waiting for it."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from consumer.config import Settings, load_settings
from harness.endpoints import Endpoints, create_database, drop_database
from harness.paths import REPO
from harness.settings_env import settings_env
from harness.state import consumed, dsn
from harness.topics import Raw, create_topics, produce_raw


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """One run's topics, group and database."""

    ep: Endpoints
    settings: Settings
    database: str
    log_path: Path

    @classmethod
    async def fresh(cls, ep: Endpoints, label: str, **overrides: Any) -> Run:
        token = secrets.token_hex(4)
        prefix = f"faults{token}"
        database = f"faults_{token}"
        await create_database(ep, database)
        settings = load_settings(
            kafka_bootstrap_servers=ep.bootstrap,
            database_url=ep.database(database),
            kafka_group_id=f"{prefix}-group",
            topic_booking_confirmed=f"{prefix}.booking.confirmed",
            topic_booking_cancelled=f"{prefix}.booking.cancelled",
            topic_emotion_scored=f"{prefix}.message.emotion_scored",
            topic_user_activity=f"{prefix}.user.activity",
            topic_followup_due=f"{prefix}.followup.due",
            topic_dlq=f"{prefix}.followup.dlq",
            topic_partitions=6,
            dispatch_poll_seconds=0.5,
            http_port=0,
            scheduler_enabled=True,
            **overrides,
        )
        await create_topics(settings)
        run = cls(ep, settings, database, Path(f"/tmp/{prefix}-{label}.log"))
        log(f"{label}: database {database}, topics {prefix}.*, log {run.log_path}")
        return run

    async def drop(self) -> None:
        await drop_database(self.ep, self.database)


def service_env(settings: Settings) -> dict[str, str]:
    return settings_env(settings, LOG_LEVEL="WARNING", HTTP_PORT="0", PYTHONUNBUFFERED="1")


class Proc:
    """`python -m consumer <args>` in a subprocess, its output appended to a log."""

    def __init__(self, settings: Settings, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self.started = time.monotonic()
        with log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consumer", *(args or ("run",))],
                cwd=REPO,
                env=service_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)

    async def stop(self) -> int:
        # A SIGTERM before the service installed its handlers (start-up) kills it.
        await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - self.started)))
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            await self.kill()
            return -9

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


async def safe_consumed(s: Settings) -> int | None:
    try:
        return await asyncio.wait_for(consumed(s), 5)
    except Exception:
        return None  # the database is down


async def wait_for(
    probe: Callable[[], Awaitable[bool]], limit: float, what: str, procs: Sequence[Proc] = ()
) -> None:
    deadline = time.monotonic() + limit
    while not await probe():
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"service exited while waiting for {what}:\n{p.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {limit:.0f} s")
        await asyncio.sleep(0.1)


async def wait_consumed(s: Settings, n: int, limit: float, procs: Sequence[Proc] = ()) -> None:
    async def done() -> bool:
        c = await safe_consumed(s)
        if c is not None and c > n:
            raise AssertionError(f"committed {c} records, only {n} were produced")
        return c == n

    await wait_for(done, limit, f"{n} records committed", procs)


async def settle(s: Settings, horizon: datetime, limit: float, procs: Sequence[Proc]) -> None:
    """Until the window has passed and nothing due is left pending or claimed."""

    async def done() -> bool:
        if datetime.now(UTC) < horizon + timedelta(seconds=1):
            return False
        try:
            conn = await asyncpg.connect(dsn(s))
            try:
                left = await conn.fetchval(
                    "SELECT count(*) FROM scheduled_followups WHERE status = 'pending' "
                    "AND scheduled_at <= now()"
                )
            finally:
                await conn.close()
        except Exception:
            return False
        return int(left) == 0

    left = (horizon - datetime.now(UTC)).total_seconds()
    await wait_for(done, max(0.0, left) + limit, "every due follow-up published", procs)


async def produce_phase(s: Settings, records: Sequence[Raw]) -> None:
    for lo in range(0, len(records), 20_000):
        await produce_raw(s, records[lo : lo + 20_000])
