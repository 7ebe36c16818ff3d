"""bench.compare's ingest figures and their table: pure, so that tests can hold
them (tests do not import bench/)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class IngestFigure:
    variant: str
    instances: int
    events: int
    seconds: float
    peak_rss_mib: float
    # CPU seconds of the service's processes and of PostgreSQL's backends for the
    # run's database: with two instances the 2-core machine is full, and the rate
    # is then set by their sum per event, not by waiting.
    service_cpu_s: float = 0.0
    postgres_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def service_us(self) -> float:
        """Service CPU µs per event."""
        return self.service_cpu_s / self.events * 1e6 if self.events else 0.0

    @property
    def postgres_us(self) -> float:
        """PostgreSQL CPU µs per event."""
        return self.postgres_cpu_s / self.events * 1e6 if self.events else 0.0


def ingest_table(figures: Sequence[IngestFigure], variants: Sequence[str]) -> str:
    """Median rate per variant and instance count, and each variant's ratio to the first."""
    lines = [
        f"{'instances':>9}  {'variant':<28} {'events/s':>10} {'ratio':>6} {'peak RSS':>9}"
        f"  {'CPU µs/event: service':>21} {'PostgreSQL':>10}"
    ]
    for count in sorted({f.instances for f in figures}):
        base = None
        for v in variants:
            mine = [f for f in figures if f.instances == count and f.variant == v]
            rate = statistics.median(f.rate for f in mine)
            rss = max(f.peak_rss_mib for f in mine)
            service = statistics.median(f.service_us for f in mine)
            postgres = statistics.median(f.postgres_us for f in mine)
            base = base or rate
            lines.append(
                f"{count:>9}  {v:<28} {rate:>10,.0f} {rate / base:>6.2f} {rss:>7.0f} MiB"
                f"  {service:>21.0f} {postgres:>10.0f}"
            )
    return "\n".join(lines)
