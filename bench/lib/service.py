"""The real service (`python -m consumer run`) in subprocesses, timed until it has applied
every record, with its peak RSS, the CPU split between processes and its own log figures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from bench.lib.consume import Phase
from bench.lib.diagnostics import enable_auto_explain, slow_statements, start_py_spy
from bench.lib.names import INPUTS, OUTPUTS, Names
from harness.endpoints import Endpoints, pg_dsn
from harness.replay_series import Sample


def _proc_status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(consumer_pids: set[int], database: str) -> dict[int, tuple[str, float]]:
    """CPU time (user + system) of every process, labelled by what it is.

    PostgreSQL backends serving the benchmark's database are told apart from the
    rest (background writers, other databases: tests running beside us).
    """
    tick = float(os.sysconf("SC_CLK_TCK"))
    me = os.getpid()
    out: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        pid = int(entry.name)
        if pid in consumer_pids:
            label = "consumer (python)"
        elif pid == me:
            label = "benchmark"
        elif comm == "java":
            label = "kafka (java)"
        elif comm.startswith("postgres"):
            bench_db = f" {database} " in cmdline
            label = "postgresql (bench db)" if bench_db else "postgresql (other)"
        elif comm == "py-spy":
            label = "py-spy"
        elif comm.startswith("python"):
            label = "other python"
        else:
            label = "other"
        out[pid] = (label, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_split(
    before: Mapping[int, tuple[str, float]], after: Mapping[int, tuple[str, float]]
) -> dict[str, float]:
    split: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        split[label] = split.get(label, 0.0) + seconds - before.get(pid, (label, 0.0))[1]
    return split


@dataclass
class ServiceRun:
    phase: Phase
    peak_rss_mib: float  # the largest instance
    peak_rss_total_mib: float  # all instances (each at its own peak)
    instances: int
    cpu: dict[str, float]
    log_path: Path
    profile: Path | None
    batches: int = 0
    batch_events: int = 0
    batch_seconds: float = 0.0
    dead_lettered: int = 0
    complete: bool = True
    slow_statements: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    explain_path: Path | None = None


def service_env(
    endpoints: Endpoints, names: Names, partitions: int, extra: Mapping[str, str]
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=endpoints.bootstrap,
        DATABASE_URL=endpoints.database(names.database),
        KAFKA_GROUP_ID=names.service_group,
        SCHEDULER_ENABLED="false",
        HTTP_PORT="0",  # several instances on one host
        TOPIC_PARTITIONS=str(partitions),
        LOG_LEVEL=env.get("LOG_LEVEL", "INFO"),
        PYTHONUNBUFFERED="1",
    )
    for (_, _, var), topic in zip(INPUTS, names.inputs, strict=True):
        env[var] = topic
    for (_, var), topic in zip(OUTPUTS, names.outputs, strict=True):
        env[var] = topic
    env.update(extra)
    return env


async def applied_count(conn: Any, group: str) -> int:
    try:
        value = await conn.fetchval(
            "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1",
            group,
        )
    except asyncpg.UndefinedTableError:
        return 0  # not migrated yet
    return int(value)


async def run_service(
    endpoints: Endpoints,
    names: Names,
    n: int,
    *,
    partitions: int,
    limit_s: float,
    extra_env: Mapping[str, str],
    cwd: Path,
    profile: Path | None,
    py_spy: str | None,
    explain_ms: int | None,
    pg_log: Path,
    instances: int = 1,
    series: list[Sample] | None = None,
    sample_every: float = 2.0,
    report_every: float = 5.0,
) -> ServiceRun:
    """Until the service has applied n events (or limit_s). `series`, if given, gets a
    Sample every `sample_every` seconds and one at the end; progress is printed every
    `report_every` seconds."""
    log_path = Path(f"/tmp/{names.prefix}-service.log")
    env = service_env(endpoints, names, partitions, extra_env)
    pg_log_start = 0
    if explain_ms is not None:
        await enable_auto_explain(endpoints, names.database, explain_ms)
        pg_log_start = _file_size(pg_log)
    conn = await asyncpg.connect(pg_dsn(endpoints.database(names.database)))
    backends: set[int] = set()
    spy: asyncio.subprocess.Process | None = None
    with _open_log(log_path) as log:
        cpu_before = cpu_seconds(set(), names.database)
        started = time.perf_counter()
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "consumer",
                "run",
                cwd=str(cwd),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            for _ in range(instances)
        ]
        pids = {p.pid for p in procs}
        # A reused pid starts at zero.
        cpu_before = {pid: v for pid, v in cpu_before.items() if pid not in pids}
        try:
            if profile is not None:
                spy = await start_py_spy(py_spy, procs[0].pid, profile, log)
            phase, complete, peaks_kib, cpu_after = await _watch(
                procs,
                conn,
                names,
                n,
                started,
                limit_s,
                backends,
                _Sampler(series, sample_every, started),
                report_every,
            )
        finally:
            await conn.close()
            for proc in procs:
                await _stop(proc)
            if spy is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(spy.wait(), timeout=120)
    run = ServiceRun(
        phase=phase,
        peak_rss_mib=max(peaks_kib) / 1024,
        peak_rss_total_mib=sum(peaks_kib) / 1024,
        instances=instances,
        cpu=cpu_split(cpu_before, cpu_after),
        log_path=log_path,
        profile=profile,
        complete=complete,
    )
    _read_log(run)
    if explain_ms is not None:
        run.explain_path = Path(f"/tmp/{names.prefix}-explain.log")
        run.slow_statements = slow_statements(pg_log, pg_log_start, backends, run.explain_path)
    return run


def _file_size(path: Path) -> int:
    return path.stat().st_size


def _open_log(path: Path) -> TextIO:
    return path.open("w")


class _Sampler:
    """Appends (seconds, applied, RSS) to a series every `every` seconds on average."""

    def __init__(self, series: list[Sample] | None, every: float, started: float) -> None:
        self.series = series
        self.every = every
        self.started = started
        self.due = started + every

    def __call__(self, now: float, done: int, rss_kib: int, *, last: bool = False) -> None:
        if self.series is None or not (last or now >= self.due):
            return
        self.series.append(Sample(now - self.started, done, rss_kib / 1024))
        while self.due <= now:
            self.due += self.every


async def _watch(
    procs: Sequence[asyncio.subprocess.Process],
    conn: Any,
    names: Names,
    n: int,
    started: float,
    limit_s: float,
    backends: set[int],
    sample: _Sampler,
    report_every: float,
) -> tuple[Phase, bool, list[int], dict[int, tuple[str, float]]]:
    """Until the group's saved offsets add up to n; returns peak RSS (KiB) per process."""
    pids = {p.pid for p in procs}
    peaks = [0] * len(procs)
    first: float | None = None
    done = 0
    last_report = started
    last_done = 0
    while True:
        await asyncio.sleep(0.5)
        now = time.perf_counter()
        for i, proc in enumerate(procs):
            hwm = _proc_status_kib(proc.pid, "VmHWM") or 0
            peaks[i] = max(peaks[i], hwm, _proc_status_kib(proc.pid, "VmRSS") or 0)
        done = await applied_count(conn, names.service_group)
        backends.update(
            r["pid"]
            for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        if done and first is None:
            first = now - started
        rss_kib = sum(_proc_status_kib(p.pid, "VmRSS") or 0 for p in procs)
        sample(now, done, rss_kib, last=done >= n or now - started > limit_s)
        if done >= n:
            cpu_after = cpu_seconds(pids, names.database)
            return Phase(done, now - started, first), True, peaks, cpu_after
        for proc in procs:
            if proc.returncode is not None:
                raise RuntimeError(
                    f"the service exited with {proc.returncode} after {done:,} events"
                )
        if now - last_report >= report_every:
            print(
                f"  service: {done:>10,} / {n:,} events applied, "
                f"{done / (now - started):>8,.0f}/s overall, "
                f"{(done - last_done) / (now - last_report):>8,.0f}/s "
                f"last {now - last_report:.0f} s, "
                f"rss {rss_kib / 1024:.0f} MiB",
                flush=True,
            )
            last_report, last_done = now, done
        if now - started > limit_s:
            print(f"  service: timed out after {limit_s:.0f} s", flush=True)
            return (
                Phase(done, now - started, first),
                False,
                peaks,
                cpu_seconds(pids, names.database),
            )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _read_log(run: ServiceRun) -> None:
    """Per-batch figures from the service's own "batch applied" log lines."""
    with run.log_path.open() as f:
        for line in f:
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == "batch applied":
                run.batches += 1
                run.batch_events += int(entry.get("events", 0))
                run.batch_seconds += float(entry.get("seconds", 0.0))
            elif entry.get("msg") == "dead-lettered":
                run.dead_lettered += 1
