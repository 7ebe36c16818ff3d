"""The previous code beside the new, on the same input, in one run.

`checkout(ref)` unpacks a git revision's `consumer/` and `schemas/` into a
scratch directory (`git archive`); the service then runs from there with
`python -m consumer run`, which imports that copy. Ingest replays one produced
stream into a fresh database per variant; dispatch publishes a burst of due
follow-ups and measures firing latency at a steady rate, per variant.
"""

from __future__ import annotations

import dataclasses
import io
import statistics
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.lib.dispatch import burst, steady_run
from bench.lib.kafka import create_topics, delete_topics, end_offsets, produce
from bench.lib.names import Names
from bench.lib.service import run_service
from bench.lib.stream import generate
from consumer.adapters.codec import Codec
from harness.compare_table import IngestFigure
from harness.endpoints import Endpoints, create_database, drop_database
from harness.native import hatch_build
from harness.paths import REPO


@dataclass(frozen=True)
class Variant:
    name: str  # e.g. "main@f6b9aa2" or "new"
    directory: Path


def checkout(ref: str) -> Variant:
    """`ref`'s consumer/ and schemas/ in a scratch directory."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", sha, "consumer", "schemas"],
        check=True,
        capture_output=True,
    ).stdout
    target = Path(tempfile.mkdtemp(prefix=f"bench-{sha}-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return Variant(f"{ref}@{sha}", target)


def working_tree() -> Variant:
    return Variant("new (working tree)", REPO)


def compiled(variant: Variant) -> Variant:
    """`variant` with its per-event modules compiled by mypyc, as the image ships
    them (hatch_build.py), in a scratch directory of its own."""
    target = Path(tempfile.mkdtemp(prefix="bench-native-"))
    hatch_build().compiled_copy(variant.directory, target, ("consumer", "schemas"))
    return Variant(f"{variant.name}, compiled", target)


async def compare_ingest(
    ep: Endpoints,
    variants: Sequence[Variant],
    *,
    events: int,
    users: int,
    instances: Sequence[int],
    rounds: int,
    seed: int = 42,
) -> list[IngestFigure]:
    """Produce one stream, then replay it with every variant, alternating, `rounds` times."""
    names = Names.fresh()
    await create_topics(ep.bootstrap, names.topics, 6)
    figures: list[IngestFigure] = []
    try:
        # Written with the baseline's schemas: every later variant still reads those
        # (schemas/history), while the baseline could not read a newer writer schema
        # and would dead-letter, not apply, what it cannot read (fast, and wrong).
        codec = Codec.load(variants[0].directory / "schemas")
        stream = generate(events, users, "avro", seed, codec, datetime.now(UTC))
        await produce(ep.bootstrap, names.inputs, stream, 20_000)
        del stream.records[:]
        if sum((await end_offsets(ep.bootstrap, names.inputs)).values()) != events:
            raise RuntimeError("the input topics do not hold the stream")
        for r in range(rounds):
            for count in instances:
                for i, variant in enumerate(variants):
                    run_names = dataclasses.replace(
                        names,
                        database=f"{names.database}_{r}_{count}_{i}",
                        service_group=f"{names.service_group}-{r}-{count}-{i}",
                    )
                    await create_database(ep, run_names.database)
                    try:
                        run = await run_service(
                            ep,
                            run_names,
                            events,
                            partitions=6,
                            limit_s=max(300.0, events / 500),
                            extra_env={"LOG_LEVEL": "WARNING"},
                            cwd=variant.directory,
                            profile=None,
                            py_spy=None,
                            explain_ms=None,
                            pg_log=REPO / ".services" / "postgres" / "log" / "postgres.log",
                            instances=count,
                        )
                    finally:
                        await drop_database(ep, run_names.database)
                    if not run.complete:
                        raise RuntimeError(f"{variant.name} did not finish: {run.log_path}")
                    if run.dead_lettered:
                        raise RuntimeError(
                            f"{variant.name} dead-lettered {run.dead_lettered} events instead of "
                            f"applying them: not a comparison ({run.log_path})"
                        )
                    figure = IngestFigure(
                        variant.name,
                        count,
                        run.phase.events,
                        run.phase.seconds,
                        run.peak_rss_mib,
                        service_cpu_s=run.cpu.get("consumer (python)", 0.0),
                        postgres_cpu_s=run.cpu.get("postgresql (bench db)", 0.0),
                    )
                    print(
                        f"  round {r + 1}, {count} instance(s), {variant.name}: "
                        f"{figure.rate:,.0f} events/s, peak RSS {figure.peak_rss_mib:.0f} MiB, "
                        f"CPU per event: service {figure.service_us:.0f} µs, "
                        f"PostgreSQL {figure.postgres_us:.0f} µs",
                        flush=True,
                    )
                    figures.append(figure)
    finally:
        await delete_topics(ep.bootstrap, names.topics)
    return figures


@dataclass(frozen=True)
class DispatchFigure:
    variant: str
    burst_rate: float
    p50: float
    p99: float
    worst: float


async def compare_dispatch(
    ep: Endpoints,
    variants: Sequence[Variant],
    *,
    burst_size: int,
    rate: int,
    seconds: int,
    rounds: int = 1,
) -> list[DispatchFigure]:
    """Bursts alternating between the variants, `rounds` times (the median counts:
    one burst on a shared machine varies by half); then two steady runs of each,
    in turn forwards and backwards (A B B A), their latencies pooled: one steady
    run of the same code can have twice the latency of the next (p50 30-39 ms
    against 18-19), and a single run each had made a variant look worse by which
    place it ran in."""
    bursts: dict[str, list[float]] = {v.name: [] for v in variants}
    for n in range(rounds):
        for variant in variants:
            b = await burst(ep, burst_size, variant.directory)
            bursts[variant.name].append(b["publications per second"])
            print(
                f"  round {n + 1}, {variant.name}: burst {b['publications per second']:,.0f}/s",
                flush=True,
            )
    latencies: dict[str, list[float]] = {v.name: [] for v in variants}
    for order in (list(variants), list(reversed(variants))):
        for variant in order:
            s = await steady_run(ep, rate, seconds, variant.directory)
            q = statistics.quantiles(s.latencies, n=100)
            latencies[variant.name] += s.latencies
            print(
                f"  steady, {variant.name}: latency p50 {q[49] * 1000:.0f} ms "
                f"p99 {q[98] * 1000:.0f} ms",
                flush=True,
            )
    out = []
    for variant in variants:
        pooled = sorted(latencies[variant.name])
        q = statistics.quantiles(pooled, n=100)
        figure = DispatchFigure(
            variant.name, statistics.median(bursts[variant.name]), q[49], q[98], pooled[-1]
        )
        print(
            f"  {variant.name}: burst {figure.burst_rate:,.0f}/s (median), "
            f"latency p50 {figure.p50 * 1000:.0f} ms p99 {figure.p99 * 1000:.0f} ms (both runs)",
            flush=True,
        )
        out.append(figure)
    return out


def dispatch_table(figures: Sequence[DispatchFigure]) -> str:
    base = figures[0].burst_rate
    lines = [
        f"{'variant':<28} {'burst/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    ]
    for f in figures:
        lines.append(
            f"{f.variant:<28} {f.burst_rate:>9,.0f} {f.burst_rate / base:>6.2f} "
            f"{f.p50 * 1000:>7.0f} {f.p99 * 1000:>7.0f} {f.worst * 1000:>7.0f}"
        )
    return "\n".join(lines)
