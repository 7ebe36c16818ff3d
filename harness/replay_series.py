"""A replay's time series (seconds since the service started, events applied, the service's
resident memory) and the figures taken from it: events/s over a trailing window, events/s
per slice of the replay, memory at a point of it; saved as CSV."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("seconds", "applied", "rss_mib")


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the service started
    applied: int  # events applied: sum(next_offset) of the service's group
    rss_mib: float  # VmRSS of the service (all its processes)


def trailing_rates(
    samples: Sequence[Sample], window: float, min_share: float = 0.5
) -> list[tuple[Sample, float]]:
    """Events/s over the trailing `window` seconds at each sample: from the earliest
    sample at most `window` older. A sample with less than `min_share` of the window
    behind it (the first ones) gets none. Offsets move once per committed batch, so
    shorter windows show the batches rather than the rate."""
    out: list[tuple[Sample, float]] = []
    j = 0
    for s in samples:
        # As a difference, the way the window is read (`t - w < a` rounds otherwise).
        while s.seconds - samples[j].seconds > window:
            j += 1
        first = samples[j]
        span = s.seconds - first.seconds
        if span > 0 and span >= window * min_share:
            out.append((s, (s.applied - first.applied) / span))
    return out


def fitting_window(samples: Sequence[Sample], window: float, per_run: int = 5) -> float:
    """`window`, or shorter for a replay that lasted less than `per_run` windows (a short
    replay still gets a rate line): never below two sampling intervals."""
    if len(samples) < 2:
        return window
    duration = samples[-1].seconds - samples[0].seconds
    interval = duration / (len(samples) - 1)
    return min(window, max(duration / per_run, 2 * interval))


def time_at(samples: Sequence[Sample], applied: float) -> float | None:
    """When the service had applied `applied` events: interpolated between the last
    sample below and the first at or above (the series starts from 0 events at 0 s);
    None if it never got there."""
    if applied <= 0:
        return 0.0
    before = Sample(0.0, 0, 0.0)
    for s in samples:
        if s.applied >= applied:
            if s.applied == before.applied:
                return s.seconds
            share = (applied - before.applied) / (s.applied - before.applied)
            return before.seconds + share * (s.seconds - before.seconds)
        before = s
    return None


def slice_rates(samples: Sequence[Sample], events: int, slices: int = 10) -> list[float | None]:
    """Events/s over each of `slices` equal slices of the replay's `events` (the first
    one from the service's start, so it includes the start-up); None for a slice the
    replay did not finish."""
    size = events / slices
    bounds = [time_at(samples, k * size) for k in range(slices + 1)]
    return [
        size / (t1 - t0) if t0 is not None and t1 is not None and t1 > t0 else None
        for t0, t1 in itertools.pairwise(bounds)
    ]


def rss_at(samples: Sequence[Sample], applied: float) -> float | None:
    """Resident memory at the first sample with at least `applied` events applied."""
    return next((s.rss_mib for s in samples if s.applied >= applied), None)


def write_csv(path: Path, samples: Sequence[Sample]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(FIELDS)
        for s in samples:
            out.writerow((f"{s.seconds:.3f}", s.applied, f"{s.rss_mib:.1f}"))


def read_csv(path: Path) -> list[Sample]:
    with path.open(newline="") as f:
        rows = csv.DictReader(f)
        if tuple(rows.fieldnames or ()) != FIELDS:
            raise ValueError(f"{path}: expected the columns {', '.join(FIELDS)}")
        return [Sample(float(r["seconds"]), int(r["applied"]), float(r["rss_mib"])) for r in rows]
