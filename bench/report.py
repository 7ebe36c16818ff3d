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

from bench.lib.perf_report import run_report


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
    asyncio.run(run_report(p.parse_args()))


if __name__ == "__main__":
    main()
