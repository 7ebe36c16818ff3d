"""Long replay: a very long realistic stream through one instance of the real service.

    .venv/bin/python -m bench.long_replay [--events N] [--users U] [--keep]
                                          [--csv PATH] [--chart PATH]
    .venv/bin/python -m bench.long_replay --chart-from PATH [--chart PATH]

Is the service as fast after 10,000,000 events as after the first million, and does its
memory stay flat? One run, against the broker and PostgreSQL of KAFKA_BOOTSTRAP_SERVERS
and DATABASE_URL (else those `scripts/services env` names):

1. creates a fresh database `bench_<hex>` and fresh topics `bench<hex>.*` (6
   partitions each);
2. generates N events over U users (the stream of bench/ingest_throughput.py: a year
   of a booking business, keyed by user_id) chunk by chunk (`--part` records at a
   time) and produces each chunk before the next is made, so the benchmark's own
   memory stays bounded;
3. runs one service (`python -m consumer run`, SCHEDULER_ENABLED=false, default
   settings otherwise; --service-env KEY=VALUE passes settings) until
   `sum(next_offset)` of its group in `consumer_offsets` reaches N (time limit: N/1000
   s, at least 300 s, or --timeout), sampling every `--sample-every` seconds the
   events applied and the service's VmRSS, and printing progress every 10 s;
4. prints a summary: events/s overall and per 10% of the replay, peak RSS and RSS
   at 10%, 50% and 100% (target: under 300 MiB);
5. writes the samples to --csv (seconds,applied,rss_mib) and a chart to --chart: two
   panels over events applied, events/s over a trailing --window and RSS with the
   300 MiB target (matplotlib, the `bench` extra).

The database and topics are dropped at the end unless --keep. --chart-from CSV only
redraws the chart (and the summary) from a saved series, without the services.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from bench.lib.long_replay import chart_from, run_long_replay
from bench.lib.options import add_service_options, add_stream_options
from harness.paths import REPO


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.long_replay", description=__doc__.split("\n\n")[0]
    )
    add_stream_options(p, events=10_000_000)
    add_service_options(p)
    p.add_argument("--part", type=int, default=200_000, help="records generated at a time")
    p.add_argument(
        "--sample-every", type=float, default=2.0, help="seconds between samples of the series"
    )
    p.add_argument(
        "--window",
        type=float,
        default=30.0,
        help="seconds of the chart's trailing events/s window (shorter for a short replay)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds the service gets (default: events/1000, at least 300)",
    )
    p.add_argument("--csv", type=Path, default=Path("/tmp/long_replay.csv"), help="the series")
    p.add_argument(
        "--chart", type=Path, default=REPO / "docs" / "perf_long_replay.png", help="the PNG"
    )
    p.add_argument(
        "--native",
        action="store_true",
        help="run the working tree compiled with mypyc, as the image ships it (hatch_build.py)",
    )
    p.add_argument(
        "--chart-from",
        type=Path,
        default=None,
        metavar="CSV",
        help="only draw the chart from a saved series (no services)",
    )
    args = p.parse_args(argv)
    if args.events < 1 or args.users < 1 or args.part < 1 or args.chunk < 1:
        p.error("--events, --users, --part and --chunk must be positive")
    if args.sample_every <= 0 or args.window <= 0:
        p.error("--sample-every and --window must be positive")
    if any("=" not in kv for kv in args.service_env):
        p.error("--service-env takes KEY=VALUE")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.chart_from is not None:
        return chart_from(args.chart_from, args.chart, args.window)
    return asyncio.run(run_long_replay(args))


if __name__ == "__main__":
    raise SystemExit(main())
