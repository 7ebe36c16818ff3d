"""`followup-consumer` command line: run, migrate, replay, and the operator commands
(followups list/show/cancel/schedule, erase-user, health; see consumer/cli_ops.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import datetime

from consumer.config import ConfigError, Settings, load_settings
from consumer.domain.limits import (
    LIST_LIMIT_MAX,
    MESSAGE_MAX_CHARS,
    identifier_problem,
    message_problem,
    timestamp_problem,
)
from consumer.domain.model import Status, TriggerType
from consumer.entrypoints.exit_codes import EXIT_USAGE
from consumer.logs import configure_logging

log = logging.getLogger("consumer.entrypoints.cli")


OPERATOR_COMMANDS = frozenset({"followups", "erase-user", "health"})
# Commands whose logs are the output (the others print a result and log warnings only).
LONG_RUNNING = frozenset({"run", "replay"})


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
    _operator_commands(sub)
    return parser


def _operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    followups = sub.add_parser("followups", help="list, show, cancel or schedule follow-ups")
    fsub = followups.add_subparsers(dest="action", required=True)

    listing = fsub.add_parser("list", help="follow-ups, newest first (by creation time)")
    listing.add_argument("--user", type=_identifier, help="only this user's")
    listing.add_argument("--status", choices=[s.value for s in Status], help="only this status")
    listing.add_argument(
        "--trigger", choices=[t.value for t in TriggerType], help="only this trigger type"
    )
    listing.add_argument(
        "--limit",
        type=_limit,
        default=100,
        help=f"at most this many (1..{LIST_LIMIT_MAX}, default 100)",
    )
    _json_flag(listing)

    show = fsub.add_parser("show", help="every field of one follow-up (message decrypted)")
    show.add_argument("id", type=_identifier, help="follow-up id")
    _json_flag(show)

    cancel = fsub.add_parser(
        "cancel",
        help="cancel a pending follow-up (exit 1: unknown, 3: not pending)",
    )
    cancel.add_argument("id", type=_identifier, help="follow-up id")
    _json_flag(cancel)

    schedule = fsub.add_parser(
        "schedule",
        help="schedule a custom follow-up (exit 4: the user's limit is reached; "
        "6: the time is past MAX_LATENESS_HOURS)",
    )
    schedule.add_argument("--user", type=_identifier, required=True, help="user id")
    schedule.add_argument("--conversation", type=_identifier, required=True, help="conversation id")
    schedule.add_argument(
        "--message",
        type=_message,
        required=True,
        help=f"the text to send (not blank, no NUL, at most {MESSAGE_MAX_CHARS} characters)",
    )
    schedule.add_argument(
        "--at", type=_aware_datetime, required=True, help="when (ISO-8601 with offset)"
    )
    _json_flag(schedule)

    erase = sub.add_parser(
        "erase-user", help="delete every row about a user (right to be forgotten)"
    )
    erase.add_argument("user", type=_identifier, help="user id")
    erase.add_argument("--yes", action="store_true", help="really delete; required")
    _json_flag(erase)

    health = sub.add_parser(
        "health",
        help="figures, database and Kafka reachability, consumer lag (exit 1: unhealthy)",
    )
    _json_flag(health)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _aware_datetime(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs an offset (Z or +02:00): {value!r}")
    problem = timestamp_problem(parsed)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{problem}: {value!r}")
    return parsed


def _identifier(value: str) -> str:
    problem = identifier_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from exc
    if not 1 <= number <= LIST_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"must be between 1 and {LIST_LIMIT_MAX}: {number}")
    return number


def _message(value: str) -> str:
    problem = message_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "erase-user" and not args.yes:
        sys.stderr.write(
            f"followup-consumer: erase-user deletes every follow-up, booking, conversation "
            f"and activity row of user {args.user!r} and cannot be undone; "
            "repeat the command with --yes to do it\n"
        )
        return EXIT_USAGE
    try:
        settings: Settings = load_settings()
    except ConfigError as exc:
        return _failed(str(exc), EXIT_USAGE)
    # The operator commands print a result: only warnings and errors beside it.
    quiet = args.command not in LONG_RUNNING
    configure_logging(
        settings.log_level, settings.log_format, at_least=logging.WARNING if quiet else 0
    )
    # Heavy imports (Kafka, SQLAlchemy, FastAPI) only once the configuration is valid.
    from consumer.entrypoints.startup import StartupFailed

    try:
        return _dispatch(args, settings)
    except StartupFailed as exc:
        return _failed(str(exc), exc.code)


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.bootstrap import utc_now

    if args.command in OPERATOR_COMMANDS:
        from consumer.entrypoints import cli_ops

        return cli_ops.execute(args, settings, utc_now)
    if args.command == "replay":
        from consumer.entrypoints.replay import replay

        report = asyncio.run(replay(settings, utc_now, args.since, progress=not args.no_progress))
        sys.stdout.write(report.summary() + "\n")
        return 0
    from consumer.entrypoints import runner

    if args.command == "migrate":
        if not asyncio.run(runner.run_migrations(settings)):
            return _failed(
                "this database role may not change the schema; "
                "run `followup-consumer migrate` as the schema's owner",
                EXIT_USAGE,
            )
        sys.stdout.write("schema is up to date\n")
        return 0
    if settings.workers > 1:
        from consumer.entrypoints.workers import supervise

        return supervise(settings.workers)
    asyncio.run(runner.run_service(settings))
    return 0


def _failed(message: str, code: int) -> int:
    sys.stderr.write(f"followup-consumer: {message}\n")
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
