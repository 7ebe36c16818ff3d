"""Fault scenarios against the real local broker and PostgreSQL.

    .venv/bin/python -m bench.faults [--events N] [--quick] [--only 1,2,3,4,5]

Every scenario runs the real service (`python -m consumer run`, subprocesses,
HTTP_PORT=0, dispatch active) on fresh topics and a fresh database, and compares
the final state with an uninterrupted reference run over the same input (fresh
topics and database too, computed after the fault run, when every follow-up of
the run window is due): the canonical snapshot of `scheduled_followups` (minus
created_at, updated_at, executed_at, lease_owner, lease_until, retry_count,
error_message, due_at) and of the projections, and the set of `followup.due`
event ids.

The input is `mixed_stream` (harness/events.py: every follow-up days
ahead or long expired) plus "soon" users: one booking each whose post-event
follow-up falls due inside the run window, on a conversation without scores
(template independent of when it fires), so publication runs during the faults.

1. SIGKILL at random moments, restart after each.
2. Kafka broker stopped (SIGTERM) ~10 s and restarted; PostgreSQL stopped
   (pg_ctl -m fast) ~10 s and restarted; the consumer must recover by itself.
3. Three instances, one leaving (SIGTERM) or joining every 10 s.
4. Bad values of many kinds interleaved with valid traffic.
5. Replay of the whole history into the existing database of scenario 1's reference.

The scenarios live in `harness/faults/` (tests/faults runs short versions of 1, 4 and 5).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from harness.endpoints import endpoints
from harness.faults.outcome import Row, table
from harness.faults.scenarios import run_scenarios


async def main_async(args: argparse.Namespace) -> list[Row]:
    ep = endpoints()
    n = args.events or (20_000 if args.quick else 200_000)
    kills = 5 if args.quick else 20
    churn = 30.0 if args.quick else 120.0
    only = {int(x) for x in args.only.split(",")} if args.only else {1, 2, 3, 4, 5}
    return await run_scenarios(ep, n, kills, churn, only)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers")
    args = parser.parse_args(argv)
    rows = asyncio.run(main_async(args))
    print(table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
