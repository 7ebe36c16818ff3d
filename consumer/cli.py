"""`followup-consumer` command line: run, migrate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import datetime

from consumer.config import ConfigError, Settings, load_settings
from consumer.logs import configure_logging

log = logging.getLogger("consumer.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="followup-consumer",
        description="Kafka consumer that schedules and publishes customer follow-ups.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="consume the input topics and dispatch due follow-ups")
    sub.add_parser("migrate", help="create or update the database schema (idempotent)")
    replay = sub.add_parser(
        "replay", help="re-read the input topics into the projections (backfill; idempotent)"
    )
    replay.add_argument(
        "--since",
        type=_aware_datetime,
        help="start at this time (ISO-8601 with offset) instead of the beginning",
    )
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _aware_datetime(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs an offset (Z or +02:00): {value!r}")
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings: Settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"followup-consumer: {exc}\n")
        return 2
    configure_logging(settings.log_level)
    from consumer import app  # heavy imports only once the configuration is valid

    if args.command == "replay":
        from consumer.replay import replay

        report = asyncio.run(
            replay(settings, app.utc_now, args.since, progress=not args.no_progress)
        )
        log.info(
            "replayed",
            extra={"events": report.events, "dead": report.dead_lettered, "rate": report.rate},
        )
        return 0
    if args.command == "migrate":
        asyncio.run(app.run_migrations(settings))
        log.info("schema is up to date")
        return 0
    if settings.workers > 1:
        from consumer.workers import supervise

        return supervise(settings.workers)
    asyncio.run(app.run_service(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
