"""The long replay's run: the stream produced chunk by chunk into fresh topics, one service
instance replaying it while its progress and memory are sampled, the summary, the CSV and
the chart; the database and topics dropped at the end unless kept."""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.lib.compare import compiled, working_tree
from bench.lib.kafka import COMPRESSION, create_topics, delete_topics, end_offsets, produce_parts
from bench.lib.names import Names
from bench.lib.service import ServiceRun, run_service
from consumer.adapters.codec import Codec
from harness.booking_stream import chunks
from harness.endpoints import Endpoints, create_database, drop_database, endpoints
from harness.paths import REPO
from harness.replay_series import (
    Sample,
    fitting_window,
    read_csv,
    rss_at,
    slice_rates,
    trailing_rates,
    write_csv,
)

TARGET_RSS_MIB = 300.0
TARGET_RATE = 20_000  # the ingest target (bench/ingest_throughput.py)
PROGRESS_S = 10.0


async def run_long_replay(args: argparse.Namespace) -> int:
    """The whole run; 0 if every event was applied, 1 if the time limit came first."""
    ep = endpoints()
    names = Names.fresh()
    n = args.events
    limit_s = args.timeout or max(300.0, n / 1000.0)
    extra_env = dict(kv.split("=", 1) for kv in args.service_env)
    service_cwd = compiled(working_tree()).directory if args.native else REPO
    print(
        f"long replay {names.prefix} ({'compiled' if args.native else 'interpreted'}):"
        f" {n:,} events, {args.users:,} users, format "
        f"{args.format}, database {names.database}, kafka {ep.bootstrap}, "
        f"time limit {limit_s:,.0f} s",
        flush=True,
    )
    samples: list[Sample] = []
    await create_database(ep, names.database)
    try:
        await create_topics(ep.bootstrap, names.topics, args.partitions)
        try:
            await _produce(args, ep, names)
            print("service (one instance) replaying into the empty database ...", flush=True)
            run = await run_service(
                ep,
                names,
                n,
                partitions=args.partitions,
                limit_s=limit_s,
                extra_env=extra_env,
                cwd=service_cwd,
                profile=None,
                py_spy=None,
                explain_ms=None,
                pg_log=REPO / ".services" / "postgres" / "log" / "postgres.log",
                series=samples,
                sample_every=args.sample_every,
                report_every=PROGRESS_S,
            )
        finally:
            if not args.keep:
                await delete_topics(ep.bootstrap, names.topics)
    finally:
        if samples:  # also the part of a replay that failed
            write_csv(args.csv, samples)
            print(f"series: {args.csv} ({len(samples):,} samples)", flush=True)
        if args.keep:
            print(f"kept database {names.database} and topics {names.prefix}.*")
        else:
            await drop_database(ep, names.database)
    print(summary(samples, n, run=run, users=args.users), flush=True)
    draw(samples, args.chart, args.window)
    return 0 if run.complete else 1


@dataclass
class _Produced:
    """What the parts handed to the producer so far add up to."""

    records: int = 0
    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    value_bytes: int = 0


async def _produce(args: argparse.Namespace, ep: Endpoints, names: Names) -> None:
    n = args.events
    produced = _Produced()
    started = time.perf_counter()

    def parts() -> Iterator[Sequence[tuple[int, bytes, bytes]]]:
        last = started
        stream = chunks(
            n, args.users, args.format, args.seed, Codec.load(), datetime.now(UTC), args.part
        )
        for chunk in stream:
            produced.records += len(chunk.records)
            produced.counts = [a + b for a, b in zip(produced.counts, chunk.counts, strict=True)]
            produced.value_bytes += chunk.value_bytes
            now = time.perf_counter()
            if now - last >= PROGRESS_S:
                print(
                    f"  stream: {produced.records:>10,} / {n:,} generated and handed to the "
                    f"producer, {produced.records / (now - started):>8,.0f}/s",
                    flush=True,
                )
                last = now
            yield chunk.records

    seconds = await produce_parts(ep.bootstrap, names.inputs, parts(), args.chunk)
    written = await end_offsets(ep.bootstrap, names.inputs)
    if sum(written.values()) != n:
        raise RuntimeError(f"expected {n:,} records in the input topics, found {written}")
    print(
        f"generated and produced {n:,} events in {seconds:.1f} s ({n / seconds:,.0f}/s; "
        f"{produced.value_bytes / 2**20:,.0f} MiB of values, compression {COMPRESSION}; "
        f"by kind {produced.counts}); the benchmark's own peak RSS so far "
        f"{_own_peak_mib():,.0f} MiB",
        flush=True,
    )


def _own_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MiB"


def summary(
    samples: Sequence[Sample], events: int, *, run: ServiceRun | None = None, users: int = 0
) -> str:
    """The replay in figures. With `run` (a replay just made): its own timing and peak RSS
    (VmHWM); without (a saved series): the last sample's time and the largest sample."""
    if run is not None:
        applied, seconds, complete = run.phase.events, run.phase.seconds, run.complete
        peak = f"{run.peak_rss_mib:,.0f} MiB (VmHWM)"
    else:
        last = samples[-1] if samples else Sample(0.0, 0, 0.0)
        applied, seconds, complete = last.applied, last.seconds, last.applied >= events
        peak = f"{max((s.rss_mib for s in samples), default=0.0):,.0f} MiB (the largest sample)"
    of_users = f" over {users:,} users" if users else ""
    lines = [
        f"long replay: {events:,} events{of_users}, one service instance"
        + ("" if complete else f" (INCOMPLETE: {applied:,} applied)"),
        f"  applied {applied:,} in {seconds:,.1f} s: "
        f"{applied / seconds if seconds else 0.0:,.0f} events/s overall",
    ]
    if run is not None and run.phase.first_seconds is not None:
        lines[-1] += f" (first events applied after {run.phase.first_seconds:.1f} s)"
    elif (seen := next((s.seconds for s in samples if s.applied), None)) is not None:
        lines[-1] += f" (first events applied by the sample at {seen:.1f} s)"
    rates = slice_rates(samples, events)
    lines.append("  events/s per 10% of the replay (the first slice includes the start-up):")
    lines.append("    " + " ".join(f"{f'{10 * k}-{10 * k + 10}%':>8}" for k in range(10)))
    lines.append("    " + " ".join(f"{'-' if r is None else f'{r:,.0f}':>8}" for r in rates))
    at = {p: rss_at(samples, events * p / 100) for p in (10, 50, 100)}
    largest = max((s.rss_mib for s in samples), default=0.0)
    peak_value = run.peak_rss_mib if run is not None else largest
    lines.append(
        f"  service RSS: peak {peak}; at 10% {_mib(at[10])}, at 50% {_mib(at[50])}, "
        f"at 100% {_mib(at[100])} (target {TARGET_RSS_MIB:,.0f} MiB: "
        f"{'met' if peak_value <= TARGET_RSS_MIB else 'EXCEEDED'})"
    )
    if run is not None:
        lines.append(f"  the benchmark's own peak RSS: {_own_peak_mib():,.0f} MiB")
    return "\n".join(lines)


def draw(samples: Sequence[Sample], path: Path, window: float) -> Path | None:
    """The chart (two panels over events applied: events/s and RSS), or None without
    matplotlib (the `bench` extra): `--chart-from` draws it later from the CSV."""
    try:
        import matplotlib
    except ImportError:
        print(
            "no chart: matplotlib is not installed (the bench extra); draw it later with "
            "--chart-from CSV"
        )
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    if len(samples) < 2:
        print("no chart: fewer than two samples")
        return None
    window = fitting_window(samples, window)
    events = samples[-1].applied
    overall = events / samples[-1].seconds
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    previous = Sample(0.0, 0, 0.0)
    xs, ys = [], []
    for s in samples:
        if s.seconds > previous.seconds:
            xs.append(s.applied / 1e6)
            ys.append((s.applied - previous.applied) / (s.seconds - previous.seconds))
        previous = s
    interval = (samples[-1].seconds - samples[0].seconds) / (len(samples) - 1)
    (line,) = ax.plot(xs, ys, drawstyle="steps-pre", alpha=0.3, linewidth=1)
    rated = trailing_rates(samples, window)
    ax.plot(
        [s.applied / 1e6 for s, _ in rated],
        [r for _, r in rated],
        color=line.get_color(),
        linewidth=2,
        label=f"trailing {window:.0f} s window",
    )
    ax.axhline(overall, color=line.get_color(), linestyle=":", label=f"overall {overall:,.0f}/s")
    ax.axhline(
        TARGET_RATE, color="grey", linestyle="--", linewidth=1, label=f"target {TARGET_RATE:,}/s"
    )
    ax.set_ylabel(f"events/s (faint: {interval:.0f} s samples)")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_title(
        f"Long replay: {events:,} events through one service instance, {samples[-1].seconds:,.0f} s"
    )
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)

    ax2.plot([s.applied / 1e6 for s in samples], [s.rss_mib for s in samples], label="VmRSS")
    ax2.axhline(
        TARGET_RSS_MIB,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"target {TARGET_RSS_MIB:,.0f} MiB",
    )
    ax2.set_ylim(0, max(TARGET_RSS_MIB, *(s.rss_mib for s in samples)) * 1.15)
    ax2.set_ylabel("service RSS (MiB)")
    ax2.set_xlabel("events applied (millions)")
    ax2.set_xlim(left=0)
    ax2.legend(loc="lower right", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"chart: {path}")
    return path


def chart_from(csv_path: Path, chart: Path, window: float) -> int:
    """Only redraw (and summarise) a saved series: its events are the last sample's."""
    samples = read_csv(csv_path)
    if not samples:
        print(f"{csv_path}: no samples")
        return 1
    print(summary(samples, samples[-1].applied), flush=True)
    return 0 if draw(samples, chart, window) is not None else 1
