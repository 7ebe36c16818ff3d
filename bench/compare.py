"""The previous main beside the new code, on the same input, in one run.

    .venv/bin/python -m bench.compare [--baseline main] [--events 200000] [--users 20000]
                                      [--instances 1 2] [--rounds 2]
                                      [--burst 100000] [--rate 1000] [--seconds 30]
                                      [--dispatch-rounds 3] [--native]
                                      [--skip-ingest] [--skip-dispatch]

Unpacks `--baseline` (a git revision) into a scratch directory, produces one
realistic stream, and replays it into a fresh database with each variant,
alternating (rounds x instance counts x variants); then dispatch bursts,
alternating (--dispatch-rounds x variants), and two steady firing runs per
variant, in A B B A order (one run of the same code can be twice as slow as the
next).
Prints the median events/s of each, the ratio to the baseline, the peak RSS, the
CPU per event of the service and PostgreSQL, the median burst publications/s and
its ratio, and the firing latency of both steady runs pooled.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from bench.lib.compare import (
    checkout,
    compare_dispatch,
    compare_ingest,
    compiled,
    dispatch_table,
    working_tree,
)
from harness.compare_table import ingest_table
from harness.endpoints import endpoints


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--baseline", default="main", help="git revision to compare with")
    p.add_argument(
        "--candidates",
        nargs="*",
        default=[],
        metavar="REV",
        help="git revisions to compare with the baseline (default: the working tree)",
    )
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--burst", type=int, default=100_000, help="follow-ups due at once")
    p.add_argument("--rate", type=int, default=1000, help="steady follow-ups due per second")
    p.add_argument("--seconds", type=int, default=30, help="steady run length")
    p.add_argument("--dispatch-rounds", type=int, default=3, help="bursts per variant")
    p.add_argument(
        "--native",
        action="store_true",
        help="also each candidate compiled with mypyc, as the image ships it (hatch_build.py)",
    )
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--skip-dispatch", action="store_true")
    return p.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    ep = endpoints()
    candidates = [checkout(ref) for ref in args.candidates] or [working_tree()]
    if args.native:
        candidates += [compiled(c) for c in candidates]
    variants = [checkout(args.baseline), *candidates]
    print(f"comparing {', '.join(v.name for v in variants)} (the first is the baseline)")
    if not args.skip_ingest:
        print(f"ingest: {args.events:,} events, {args.users:,} users", flush=True)
        figures = await compare_ingest(
            ep,
            variants,
            events=args.events,
            users=args.users,
            instances=args.instances,
            rounds=args.rounds,
        )
        table = ingest_table(figures, [v.name for v in variants])
        print("\ningest (median of rounds)\n" + table, flush=True)
    if not args.skip_dispatch:
        print(f"\ndispatch: burst {args.burst:,}, steady {args.rate}/s for {args.seconds} s")
        dispatch = await compare_dispatch(
            ep,
            variants,
            burst_size=args.burst,
            rate=args.rate,
            seconds=args.seconds,
            rounds=args.dispatch_rounds,
        )
        print("\ndispatch\n" + dispatch_table(dispatch), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(_run(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
