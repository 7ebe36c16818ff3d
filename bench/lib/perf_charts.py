"""The performance report's charts (matplotlib, Agg backend), written into docs/."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from bench.lib.perf_runs import IngestRun, Steady
from harness.paths import REPO

DOCS = REPO / "docs"


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
