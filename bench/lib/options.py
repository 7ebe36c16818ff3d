"""Command-line options the benchmarks that produce a stream and run the service share."""

from __future__ import annotations

import argparse


def add_stream_options(p: argparse.ArgumentParser, *, events: int) -> None:
    """The generated stream: how many events, over how many users, how produced."""
    p.add_argument("--events", type=int, default=events, help="events to produce")
    p.add_argument("--users", type=int, default=100_000, help="distinct user ids")
    p.add_argument("--format", choices=("avro", "json", "mixed"), default="avro")
    p.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--chunk", type=int, default=20_000, help="sends per gathered chunk")


def add_service_options(p: argparse.ArgumentParser) -> None:
    """What is kept after the run, and the service's extra environment."""
    p.add_argument("--keep", action="store_true", help="keep the database and the topics")
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service (e.g. INGEST_BATCH_MAX_RECORDS=10000)",
    )
