"""One performance report: ingest replay, dispatch, and the old design's baseline.

    .venv/bin/python -m bench.report [--events 200000] [--burst 50000]
                                     [--rate 1000] [--seconds 30] [--baseline-events 20000]

Runs, against the local services (`eval "$(scripts/services env)"`):

1. the ingest replay of the real service (`python -m consumer run`, ingest only)
   over N generated events, sampling `sum(next_offset)` of its group in
   `consumer_offsets` every 0.5 s, with 1 instance and then 2 in one group;
2. the dispatch burst (publications/s) and a steady stream of follow-ups falling
   due, keeping every firing latency;
3. the baseline of the old design (`bench.baseline`): one transaction per event,
   one in-memory timer per follow-up.

Writes `docs/performance.md` and PNG charts beside it (matplotlib, Agg backend;
`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import math
import os
import secrets
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import baseline
from bench.dispatch_throughput import SteadyRun, burst, steady_run
from bench.lib.git import git_state
from bench.lib.kafka import create_topics, delete_topics, produce
from bench.lib.names import Names
from bench.lib.service import applied_count, run_service
from bench.lib.stream import generate
from consumer.adapters.codec import Codec
from harness.endpoints import Endpoints, create_database, drop_database, endpoints, pg_dsn
from harness.paths import REPO

DOCS = REPO / "docs"
PARTITIONS = 6


# --- ingest with a throughput series ------------------------------------------------


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


# --- dispatch: steady latencies, raw -------------------------------------------------


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


# --- charts --------------------------------------------------------------------------


def _rates(series: list[tuple[float, int]]) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for (t0, a0), (t1, a1) in itertools.pairwise(series):
        if t1 > t0:
            xs.append(t1)
            ys.append((a1 - a0) / (t1 - t0))
    return xs, ys


def _window_rates(
    series: list[tuple[float, int]], window: float
) -> tuple[list[float], list[float]]:
    """Rate over the trailing `window` seconds: smooths the per-batch offset commits."""
    xs: list[float] = []
    ys: list[float] = []
    j = 0
    for t, applied in series:
        while series[j][0] < t - window:
            j += 1
        t0, a0 = series[j]
        if t - t0 >= window * 0.75:
            xs.append(t)
            ys.append((applied - a0) / (t - t0))
    return xs, ys


def charts(runs: list[IngestRun], steady: Steady, figures: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for run in runs:
        xs, ys = _rates(run.series)
        label = f"{run.instances} instance{'s' if run.instances > 1 else ''}"
        (line,) = ax.plot(xs, ys, drawstyle="steps-pre", alpha=0.3, linewidth=1)
        wx, wy = _window_rates(run.series, 2.0)
        ax.plot(
            wx,
            wy,
            color=line.get_color(),
            linewidth=2,
            label=f"{label}, 2 s window ({run.rate:,.0f}/s overall)",
        )
        ax2.plot([t for t, _ in run.series], [a for _, a in run.series], label=label)
    ax.axhline(20_000, color="grey", linestyle="--", linewidth=1, label="target 20,000/s")
    ax.set_ylabel("events/s (faint: 0.5 s intervals)")
    ax.set_title(f"Ingest replay of {runs[0].events:,} events into an empty database")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax2.set_ylabel("events applied (sum of next_offset)")
    ax2.set_xlabel("seconds since the service started")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(DOCS / "perf_ingest_throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ms = [x * 1000 for x in steady.latencies]
    # Kafka timestamps are whole milliseconds: one bin per millisecond avoids aliasing.
    edges = [x - 0.5 for x in range(math.floor(min(ms)), math.ceil(max(ms)) + 2)]
    ax.hist(ms, bins=edges if len(edges) <= 2000 else 200, color="tab:blue", alpha=0.8)
    for p, color in ((50, "tab:green"), (99, "tab:orange"), (100, "tab:red")):
        value = ms[-1] if p == 100 else steady.pct(p) * 1000
        name = "max" if p == 100 else f"p{p}"
        ax.axvline(value, color=color, linestyle="--", label=f"{name} {value:,.0f} ms")
    ax.set_xlabel("firing latency: publish time - scheduled_at (ms)")
    ax.set_ylabel("follow-ups")
    ax.set_title(
        f"Firing latency, {steady.follow_ups:,} follow-ups due at a steady "
        f"{figures['rate']:,}/s (target p99 < 1 s)"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(DOCS / "perf_firing_latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    names = ["baseline:\none tx per event", "ours:\nbatched, 1 instance"]
    values = [figures["baseline_rate"], runs[0].rate]
    bars = ax.bar(names, values, color=["tab:grey", "tab:blue"])
    ax.bar_label(bars, labels=[f"{v:,.0f}/s" for v in values])
    ax.set_ylabel("events/s")
    ax.set_title(f"Ingest: ours / baseline = {figures['ratio']:,.1f}x")
    ax.grid(axis="y", alpha=0.3)
    mem_names = ["loop.call_at\ntimer"]
    mem_values = [figures["call_at_bytes"]]
    if figures.get("apscheduler_bytes") is not None:
        mem_names.append("APScheduler\nDateTrigger job")
        mem_values.append(figures["apscheduler_bytes"])
    mem_names.append("ours\n(row in PostgreSQL)")
    mem_values.append(0.0)
    colors = ["tab:grey"] * (len(mem_values) - 1) + ["tab:blue"]
    bars = ax2.bar(mem_names, mem_values, color=colors)
    ax2.bar_label(bars, labels=[f"{v:,.0f} B" for v in mem_values])
    ax2.set_ylabel("process memory per pending follow-up (bytes)")
    ax2.set_title("Firing side: in-process memory per pending follow-up")
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(DOCS / "perf_vs_baseline.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# --- markdown ------------------------------------------------------------------------


def markdown(
    args: argparse.Namespace,
    runs: list[IngestRun],
    burst_fig: dict[str, float],
    steady: Steady,
    base: baseline.IngestBaseline,
    mem: baseline.TimerMemory,
    figures: dict[str, Any],
    charts_: list[Path],
) -> str:
    rows: list[tuple[str, str, str]] = []
    for run in runs:
        tag = f"{run.instances} instance{'s' if run.instances > 1 else ''}"
        rows += [
            (
                f"ingest, {tag}: events/s",
                f"{run.rate:,.0f}",
                f"target >= 20,000/s; {run.steady_rate:,.0f}/s after the first commit",
            ),
            (
                f"ingest, {tag}: replay time of {run.events:,} events",
                f"{run.seconds:.1f} s",
                f"incl. {run.first_seconds:.1f} s to the first commit; "
                f"target < {60 * args.events / 1_000_000:.0f} s (60 s per million)"
                + ("" if run.complete else "; DID NOT FINISH"),
            ),
            (
                f"ingest, {tag}: peak RSS",
                f"{run.peak_rss_mib:,.0f} MiB",
                "VmHWM"
                + (f", {run.peak_rss_total_mib:,.0f} MiB together" if run.instances > 1 else ""),
            ),
        ]
    rows += [
        (
            f"dispatch burst: publications/s ({burst_fig['follow-ups']:,} due at once)",
            f"{burst_fig['publications per second']:,.0f}",
            f"target >= 10,000/s; {burst_fig['published records']:,} published, "
            f"{burst_fig['distinct event ids']:,} distinct",
        ),
        (
            "firing latency p50",
            f"{steady.pct(50) * 1000:,.0f} ms",
            f"{args.rate:,}/s for {args.seconds} s",
        ),
        ("firing latency p99", f"{steady.pct(99) * 1000:,.0f} ms", "target < 1 s"),
        (
            "firing latency max",
            f"{steady.latencies[-1] * 1000:,.0f} ms",
            f"{steady.published:,} of {steady.follow_ups:,} published",
        ),
        (
            f"baseline ingest: events/s (one transaction per event, {base.events:,} events)",
            f"{base.rate:,.0f}",
            f"{base.seconds:.1f} s, {base.statements_written:,} single-row writes; no Kafka",
        ),
        ("ratio ours (1 instance) / baseline", f"{figures['ratio']:,.1f}x", ""),
        (
            f"baseline timer memory: loop.call_at ({mem.timers:,} timers)",
            f"{mem.call_at_bytes:,.0f} B each",
            f"{mem.call_at_bytes * 1_000_000 / 2**20:,.0f} MiB per million pending",
        ),
    ]
    if mem.apscheduler_bytes is not None:
        rows.append(
            (
                "baseline timer memory: APScheduler DateTrigger job",
                f"{mem.apscheduler_bytes:,.0f} B each",
                f"{mem.apscheduler_bytes * 1_000_000 / 2**20:,.0f} MiB per million pending",
            )
        )
    rows.append(
        (
            "ours: process memory per pending follow-up",
            "0 B",
            f"a row in PostgreSQL instead: {steady.pg_bytes_per_row:,.0f} B on disk incl. "
            "indexes; one dispatcher loop",
        )
    )
    table = ["| figure | value | notes |", "|---|---:|---|"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    imgs = "\n\n".join(f"![{p.stem}]({p.name})" for p in charts_)
    return f"""# Performance

Generated by `.venv/bin/python -m bench.report --events {args.events}` on
{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, code `{git_state()}`, {os.cpu_count()} CPUs,
against the local services (`scripts/services`). The machine is shared: treat
the figures as indicative, compare runs made back to back.

## Headline figures

{chr(10).join(table)}

## What was measured

- **Ingest**: {args.events:,} generated events (a year of a booking business over
  {args.users:,} users: 50% activity, 30% emotion scores, 15% confirmations,
  5% cancellations; Avro) are produced into fresh topics ({PARTITIONS} partitions),
  then the real service (`python -m consumer run`, scheduler off) replays them
  into an empty database. Throughput is sampled as `sum(next_offset)` of its group
  in `consumer_offsets` every 0.5 s; the replay time ends when it reaches N.
  Offsets move once per committed batch, so the 0.5 s series is a staircase;
  the chart also shows the rate over a trailing 2 s window.
- **Dispatch**: `bench.dispatch_throughput.burst` (all follow-ups due at once;
  publications/s) and a steady stream of {args.rate:,} follow-ups/s falling due
  for {args.seconds} s; latency = Kafka record timestamp (publish time) minus
  `scheduled_at`.
- **Baseline** (`bench/baseline.py`): the old design measured in the same run.
  Ingest applies {base.events:,} events of the same kind of stream one
  transaction per event (lock and load the event's rows, `consumer.domain.rules.decide`,
  every changed row written with its own statement, commit), single connection,
  events decoded beforehand (no Kafka: this flatters the baseline). Timers: the
  memory of {mem.timers:,} `loop.call_at` timers (and APScheduler 3 DateTrigger
  jobs in the memory job store) measured with tracemalloc; our design keeps no
  per-follow-up state in the process.

## Charts

{imgs}
"""


# --- main ----------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> None:
    ep = endpoints()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    DOCS.mkdir(exist_ok=True)
    instances = [1] if args.no_scaling else [1, 2]
    runs = await ingest(ep, args.events, args.users, instances)

    print(f"dispatch burst of {args.burst:,} ...", flush=True)
    burst_fig = await burst(ep, args.burst)
    print(f"  {burst_fig['publications per second']:,.0f} publications/s", flush=True)
    print(f"dispatch steady {args.rate:,}/s for {args.seconds} s ...", flush=True)
    steady = Steady.of(await steady_run(ep, args.rate, args.seconds))
    print(
        f"  p50 {steady.pct(50) * 1000:,.0f} ms, p99 {steady.pct(99) * 1000:,.0f} ms, "
        f"max {steady.latencies[-1] * 1000:,.0f} ms",
        flush=True,
    )

    print(f"baseline: {args.baseline_events:,} events, one transaction each ...", flush=True)
    events = baseline.decode_stream(args.baseline_events, args.users, 42)
    base = await baseline.ingest_baseline(ep, events)
    print(f"  {base.rate:,.0f} events/s", flush=True)
    mem = await baseline.timer_memory(args.timers)
    print(f"  {mem.call_at_bytes:,.0f} B per call_at timer", flush=True)

    figures: dict[str, Any] = {
        "rate": args.rate,
        "baseline_rate": base.rate,
        "ratio": runs[0].rate / base.rate if base.rate else float("nan"),
        "call_at_bytes": mem.call_at_bytes,
        "apscheduler_bytes": mem.apscheduler_bytes,
    }
    paths = charts(runs, steady, figures)
    out = DOCS / "performance.md"
    out.write_text(markdown(args, runs, burst_fig, steady, base, mem, figures, paths))
    print(f"wrote {out}")
    for p in paths:
        print(f"wrote {p}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000, help="events in the ingest replay")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--burst", type=int, default=50_000, help="follow-ups due at once")
    p.add_argument("--rate", type=int, default=1000, help="follow-ups due per second (steady)")
    p.add_argument("--seconds", type=int, default=30, help="length of the steady stream")
    p.add_argument("--baseline-events", type=int, default=20_000)
    p.add_argument("--timers", type=int, default=100_000)
    p.add_argument("--no-scaling", action="store_true", help="skip the 2-instance replay")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
