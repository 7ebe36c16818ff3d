"""Dispatch benchmark: a burst of follow-ups due at once, then a steady stream.

    .venv/bin/python -m bench.dispatch_throughput [--burst 100000] [--rate 1000] [--seconds 60]

(1) `--burst` follow-ups all due at the same moment: publications per second and
the time until every one is `executed`. (2) `--rate` follow-ups per second falling
due for `--seconds`: firing latency (Kafka record timestamp, i.e. publish time,
minus `scheduled_at`), p50 / p99 / max. The real service runs as a subprocess
against the local broker and database; fresh topics and a fresh database per run.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from bench.lib.dispatch import burst, show, steady
from harness.endpoints import endpoints


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    ep = endpoints()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    show(
        f"burst: {args.burst:,} follow-ups due at once",
        await burst(ep, args.burst),
        {"publications per second": "target >= 10,000/s"},
    )
    show(
        f"steady: {args.rate:,} due per second for {args.seconds} s",
        await steady(ep, args.rate, args.seconds),
        {"latency p99 (s)": "target < 1 s"},
    )


if __name__ == "__main__":
    asyncio.run(main())
