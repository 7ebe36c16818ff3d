"""Stopping the shared broker and PostgreSQL, and starting them again (scenario 2).

These stop the services every worker on the machine uses: never from the tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

from harness.paths import REPO

SERVICES = REPO / "scripts" / "services"


def _pg_bin() -> str:
    return sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1].as_posix()


def _pg_data() -> str:
    root = (REPO / ".services" / "postgres" / "root").read_text().strip()
    return f"{root}/data"


async def stop_kafka() -> None:
    pid = int((REPO / ".services" / "kafka" / "kafka.pid").read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    for _ in range(300):
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()  # noqa: ASYNC240
            state = stat.rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                break
        except (ProcessLookupError, FileNotFoundError):
            break
        await asyncio.sleep(0.1)


async def stop_postgres() -> None:
    cmd = [f"{_pg_bin()}/pg_ctl", "-D", _pg_data(), "stop", "-m", "fast", "-w"]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    await asyncio.to_thread(subprocess.run, cmd, check=True, capture_output=True)


async def services_up() -> None:
    await asyncio.to_thread(subprocess.run, [str(SERVICES), "up"], check=True, capture_output=True)
