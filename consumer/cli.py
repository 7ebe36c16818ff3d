"""`followup-consumer` command line: run, migrate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings: Settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"followup-consumer: {exc}\n")
        return 2
    configure_logging(settings.log_level)
    from consumer import app  # heavy imports only once the configuration is valid

    if args.command == "migrate":
        asyncio.run(app.run_migrations(settings))
        log.info("schema is up to date")
        return 0
    asyncio.run(app.run_service(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
