"""A baseline of the old design, measured on the same machine in the same run.

    .venv/bin/python -m bench.baseline [--events 20000] [--timers 100000]

(a) Ingest, one database transaction per event: for each event BEGIN; create
and lock (SELECT ... FOR UPDATE) the user's, booking's and conversation's rows
and the user's pending follow-ups; run `consumer.domain.rules.decide` on a WorkingSet
holding only those rows; write every changed row back with its own statement
(one round trip per row); COMMIT. The project's own SQL (`consumer.adapters.postgres.store`) is
used, so the difference to the service is the transaction and round-trip
granularity, not the statements. Kafka is left out (events are decoded
in-process beforehand), which flatters the baseline.

(b) Firing side: one in-memory timer per pending follow-up (`loop.call_at`, as
APScheduler's DateTrigger did), and, if it can be set up, real APScheduler 3 jobs
with a DateTrigger in the memory job store; the memory each one costs is
measured with tracemalloc. The current design keeps pending follow-ups as rows
in PostgreSQL and runs one dispatcher loop: its memory does not grow with them.
"""

from __future__ import annotations

import argparse
import asyncio

from bench.lib.baseline import run_baseline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--timers", type=int, default=100_000)
    asyncio.run(run_baseline(p.parse_args()))


if __name__ == "__main__":
    main()
