"""Looking inside a service run: auto_explain's slow plans and a py-spy recording."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import TextIO

import asyncpg

from harness.endpoints import Endpoints


async def enable_auto_explain(endpoints: Endpoints, database: str, min_ms: int) -> None:
    """Plans of slow statements into the server log, for this database only."""
    admin = await asyncpg.connect(endpoints.admin_dsn)
    try:
        await admin.execute(
            f"ALTER DATABASE \"{database}\" SET session_preload_libraries = 'auto_explain'"
        )
        await admin.execute(
            f'ALTER DATABASE "{database}" SET auto_explain.log_min_duration = {int(min_ms)}'
        )
    finally:
        await admin.close()


_LOG_ENTRY = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] ")
_DURATION = re.compile(r"duration: ([\d.]+) ms")


def slow_statements(
    pg_log: Path, start: int, backends: set[int], out: Path
) -> dict[str, tuple[int, float, float]]:
    """auto_explain entries of the service's backends: query -> (count, total ms, max ms)."""
    with pg_log.open("rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    entries: list[list[str]] = []
    keep = False
    for line in text.splitlines():
        m = _LOG_ENTRY.match(line)
        if m:
            keep = int(m.group(1)) in backends and "duration:" in line and "plan:" in line
            if keep:
                entries.append([line])
        elif keep and entries:
            entries[-1].append(line)
    stats: dict[str, tuple[int, float, float]] = {}
    with out.open("w") as f:
        for entry in entries:
            f.write("\n".join(entry) + "\n")
            d = _DURATION.search(entry[0])
            ms = float(d.group(1)) if d else 0.0
            query = next(
                (ln.split("Query Text:", 1)[1].strip() for ln in entry if "Query Text:" in ln),
                "?",
            )
            key = " ".join(query.split())[:90]
            count, total, most = stats.get(key, (0, 0.0, 0.0))
            stats[key] = (count + 1, total + ms, max(most, ms))
    return stats


async def start_py_spy(
    py_spy: str | None, pid: int, out: Path, log: TextIO
) -> asyncio.subprocess.Process:
    binary = py_spy or _find_py_spy()
    fmt = {".svg": "flamegraph", ".txt": "raw"}.get(out.suffix, "speedscope")
    await asyncio.sleep(1.0)  # let the interpreter come up before attaching
    return await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--output",
        str(out),
        "--format",
        fmt,
        "--rate",
        "100",
        "--idle",
        "--nonblocking",
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )


def _find_py_spy() -> str:
    for candidate in (Path(sys.executable).parent / "py-spy", Path("/tmp/pyspy/bin/py-spy")):
        if candidate.exists():
            return str(candidate)
    return "py-spy"
