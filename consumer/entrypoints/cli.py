"""`followup-consumer` command line: run, migrate (cli_migrate.py), replay, the
operator commands (followups list/show/cancel/schedule, erase-user, health; cli_ops.py),
the message templates (templates list/show/set/preview; cli_templates*.py),
and the tools to watch it work (produce-sample, tail; kafka_tools.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta

from consumer.config import ConfigError, Settings, load_settings
from consumer.domain.limits import (
    LIST_LIMIT_MAX,
    MESSAGE_MAX_CHARS,
    identifier_problem,
    message_problem,
    timestamp_problem,
)
from consumer.domain.model import Status, TriggerType
from consumer.entrypoints import cli_templates
from consumer.entrypoints.exit_codes import EXIT_USAGE
from consumer.entrypoints.local_services import settings_from_services
from consumer.entrypoints.sample import parse_duration
from consumer.logs import configure_logging

log = logging.getLogger("consumer.entrypoints.cli")


OPERATOR_COMMANDS = frozenset({"followups", "erase-user", "health"})
# Commands whose logs are the output (the others print a result and log warnings only).
LONG_RUNNING = frozenset({"run", "replay"})
KAFKA_TOOLS = frozenset({"produce-sample", "tail"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="followup-consumer",
        description="Kafka consumer that schedules and publishes customer follow-ups.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="consume the input topics and dispatch due follow-ups")
    _migrate_command(sub)
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
    cli_templates.add_parser(sub)
    _kafka_tools(sub)
    return parser


def _migrate_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = sub.add_parser(
        "migrate",
        help="bring the database schema to this release's newest revision (safe to repeat)",
        description="Without options: upgrade to head, under an advisory lock (instances "
        "may run it at once); a database made by the schema.sql of earlier releases is "
        "adopted. Exit 1 (--current): not at head; 2: a downgrade without --yes, or a "
        "role that may not migrate; 5: database unreachable; 6: the schema is a newer "
        "release's, or not one this release knows.",
    )
    what = migrate.add_mutually_exclusive_group()
    what.add_argument(
        "--to",
        metavar="REV",
        type=_revision,
        help="up or down to this revision ('head', or 'base': before the first)",
    )
    what.add_argument(
        "--current", action="store_true", help="print the revision the database is at"
    )
    migrate.add_argument(
        "--yes", action="store_true", help="really go down (it drops what it undoes)"
    )


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
    schedule.add_argument(
        "--ignore-quiet-hours",
        action="store_true",
        help="send at --at even inside the user's QUIET_HOURS (the daily cap still applies)",
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


def _kafka_tools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sample = sub.add_parser(
        "produce-sample",
        help="send one user's sample story to the input topics and say when it fires",
        description="Sends a booking whose post-event follow-up falls due --due-in from now, "
        "three emotion scores in its conversation and two activities, all for one user; "
        "prints each event and when the follow-up will fire.",
    )
    sample.add_argument("--user", type=_identifier, help="user id (default: a new user-xxxxxx)")
    sample.add_argument(
        "--due-in",
        type=_duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help="the follow-up falls due this long from now: 90s, 5m, 2h (default 60s)",
    )
    sample.add_argument(
        "--format", choices=["json", "avro"], default="json", help="wire format (default json)"
    )
    sample.add_argument(
        "--locale",
        type=cli_templates.locale_tag,
        help="the customer's locale on the booking (BCP 47, e.g. fr): text and date in it",
    )

    tail = sub.add_parser(
        "tail",
        help="print the records of followup.due or followup.dlq as they come",
        description="Prints each record of the output topic, decoded; for dead letters "
        "where they came from and why. Runs until Ctrl-C, --max or --timeout.",
    )
    tail.add_argument(
        "topic",
        nargs="?",
        choices=["followup.due", "followup.dlq"],
        default="followup.due",
        help="which output topic (its name is TOPIC_FOLLOWUP_DUE or TOPIC_DLQ; "
        "default followup.due)",
    )
    tail.add_argument(
        "--from-beginning", action="store_true", help="every record, not only new ones"
    )
    tail.add_argument("--max", type=_count, metavar="N", help="stop after N records")
    tail.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="stop after S seconds (exit 1 if --max was given and not reached)",
    )
    _json_flag(tail)


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


def _revision(value: str) -> str:
    if not (value.isascii() and value.replace("_", "").isalnum() and len(value) <= 32):
        raise argparse.ArgumentTypeError(f"not a revision id: {value!r}")
    return value


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from exc
    if not 1 <= number <= LIST_LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"must be between 1 and {LIST_LIMIT_MAX}: {number}")
    return number


def _duration(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _seconds(value: str) -> float:
    seconds = _duration(value).total_seconds()
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {value!r}")
    return seconds


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from exc
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {number}")
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
        # From a checkout, what the environment lacks comes from `scripts/services up`.
        settings: Settings = load_settings(
            **settings_from_services(os.environ, Settings.model_fields)
        )
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

    if args.command in KAFKA_TOOLS:
        from consumer.entrypoints import kafka_tools

        return kafka_tools.execute(args, settings, utc_now)
    if args.command in OPERATOR_COMMANDS:
        from consumer.entrypoints import cli_ops

        return cli_ops.execute(args, settings, utc_now)
    if args.command == "templates":
        from consumer.entrypoints import cli_templates_ops

        return cli_templates_ops.execute(args, settings, utc_now)
    if args.command == "replay":
        from consumer.entrypoints.replay import replay

        report = asyncio.run(replay(settings, utc_now, args.since, progress=not args.no_progress))
        sys.stdout.write(report.summary() + "\n")
        return 0
    if args.command == "migrate":
        from consumer.entrypoints import cli_migrate

        return cli_migrate.execute(args, settings)
    from consumer.entrypoints import runner

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
