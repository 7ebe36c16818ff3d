"""Ingest throughput: a realistic stream, a bare consumer, and the real service.

    .venv/bin/python -m bench.ingest_throughput [--events N] [--users U]
                                                [--format avro|json|mixed] [--keep]

One run, against the broker and PostgreSQL of KAFKA_BOOTSTRAP_SERVERS and
DATABASE_URL (else those `scripts/services env` names):

1. creates a fresh database `bench_<hex>` and fresh topics `bench<hex>.*`
   (6 partitions each);
2. generates N events over U users, timestamps spread over the past year up to
   now, keyed by user_id (50% user.activity, 30% message.emotion_scored, 15%
   booking.confirmed, 5% booking.cancelled of bookings confirmed earlier),
   pre-encodes them with the project's codec and produces them as fast as the
   producer allows;
3. (a) reads them all with a bare AIOKafkaConsumer that does nothing else, and
   once more running only the service's decode step (codec + validation);
4. (b) runs the service (`python -m consumer run`, SCHEDULER_ENABLED=false) in
   a subprocess until `sum(next_offset)` of its group in `consumer_offsets`
   reaches N, sampling its peak RSS and the CPU split between the processes;
5. prints a summary with the targets, the follow-ups by status, PostgreSQL's
   table counters and where the CPU went.

The database and topics are dropped at the end unless --keep.

Diagnostics: --profile FILE records the service with py-spy; --explain-ms MS
logs (auto_explain, on the bench database only) and summarises the plans of
statements slower than MS; --instances K runs K service processes in one
consumer group; --service-cwd DIR runs the service from a scratch copy of
`consumer/` and `schemas/` (to measure a change without touching the
repository); --service-env KEY=VALUE passes settings.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from bench.lib.ingest import run_benchmark
from bench.lib.options import add_service_options, add_stream_options
from harness.paths import REPO


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest_throughput", description=__doc__.split("\n\n")[0]
    )
    add_stream_options(p, events=1_000_000)
    add_service_options(p)
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds per read phase (default: scaled)"
    )
    p.add_argument(
        "--service-cwd",
        type=Path,
        default=REPO,
        help="directory `python -m consumer run` starts in (a scratch copy to try a change)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the service with py-spy into this file (.svg flamegraph, .txt raw, "
        "else speedscope JSON)",
    )
    p.add_argument("--py-spy", default=None, help="py-spy binary (default: found)")
    p.add_argument(
        "--instances",
        type=int,
        default=1,
        help="service processes in the same consumer group (horizontal scaling)",
    )
    p.add_argument(
        "--explain-ms",
        type=int,
        default=None,
        help="log plans of the service's statements slower than this (auto_explain on the "
        "bench database) and summarise them",
    )
    p.add_argument(
        "--pg-log",
        type=Path,
        default=REPO / ".services" / "postgres" / "log" / "postgres.log",
        help="the PostgreSQL server log, for --explain-ms",
    )
    args = p.parse_args(argv)
    if args.events < 1 or args.users < 1:
        p.error("--events and --users must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    asyncio.run(run_benchmark(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
