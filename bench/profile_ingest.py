"""Where the ingest time goes: `Ingestor.process` on pre-fetched batches, timed.

    .venv/bin/python -m bench.profile_ingest [--events N] [--users U]
                                             [--format avro|json|mixed] [--cprofile OUT]

Produces a stream like `bench.ingest_throughput` into fresh topics, reads it
back into memory in the batches the service would see (`getmany`, 5000
records), then feeds them one after the other to a real `Ingestor` on a fresh,
migrated database, in this process, without Kafka in the loop. It reports the
wall time of each phase of a batch (decode, lock and load, decide, save,
commit), and for every SQL statement its count, wall time and this process's
CPU time while it ran (the rest is time spent waiting for PostgreSQL). With
--cprofile it also runs the same batches under cProfile (into a second fresh
database) and prints the top functions.

To measure a change without touching the repository, copy `consumer/` and
`schemas/` to a scratch directory, edit there and run from it:
`cd /tmp/scratch && PYTHONPATH=/work/main /work/main/.venv/bin/python -m bench.profile_ingest`
(the current directory comes first on sys.path, so its `consumer` is used).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.lib.ingest_profile import consumer_package, run_profile


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile_ingest", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--format", choices=("avro", "json", "mixed"), default="avro")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch", type=int, default=5000, help="max_records per getmany")
    p.add_argument("--cprofile", type=Path, default=None, help="also run under cProfile")
    p.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave the fetched records to the garbage collector (gc.freeze() otherwise)",
    )
    p.add_argument("--top", type=int, default=35, help="functions to print per cProfile table")
    args = p.parse_args(argv)
    print(f"consumer package: {consumer_package()}", file=sys.stderr)
    asyncio.run(run_profile(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
