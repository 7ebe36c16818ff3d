"""`followup-consumer migrate` (its arguments: cli.py): the schema to this release's
newest revision (head), `--to REV` up or down to a revision (down only with `--yes`:
it loses what the revisions undone added), `--current` where it is.

One line on stdout for what was done or found, one on stderr for a refusal; exit
codes in exit_codes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from consumer.adapters.postgres.engine import create_engine
from consumer.adapters.postgres.schema import (
    BASE,
    HEAD,
    DowngradeNotConfirmed,
    Migration,
    NotPermitted,
    SchemaAhead,
    SchemaRefused,
    SchemaStatus,
    SchemaUnrecognised,
    UnknownRevision,
    migrate,
    status,
)
from consumer.config import Settings
from consumer.entrypoints.exit_codes import (
    EXIT_NOT_AT_HEAD,
    EXIT_OK,
    EXIT_SCHEMA,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from consumer.service.ports import Unavailable


def execute(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_execute(args, settings))
    except (UnknownRevision, NotPermitted) as exc:
        return _refused(str(exc), EXIT_USAGE)
    except DowngradeNotConfirmed as exc:
        return _refused(f"{exc}; repeat with --yes to do it", EXIT_USAGE)
    except (SchemaAhead, SchemaUnrecognised) as exc:
        return _refused(str(exc), EXIT_SCHEMA)
    except SchemaRefused as exc:
        return _refused(str(exc), EXIT_USAGE)
    except Unavailable as exc:
        return _refused(f"database error: {str(exc).removeprefix('database: ')}", EXIT_UNAVAILABLE)


async def _execute(args: argparse.Namespace, settings: Settings) -> int:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        if args.current:
            found = await status(engine)
            sys.stdout.write(describe_status(found) + "\n")
            if not found.known:
                return EXIT_SCHEMA
            return EXIT_OK if found.at_head else EXIT_NOT_AT_HEAD
        done = await migrate(engine, args.to or HEAD, allow_downgrade=args.yes)
        sys.stdout.write(describe_migration(done) + "\n")
        return EXIT_OK
    finally:
        await engine.dispose()


def _refused(message: str, code: int) -> int:
    sys.stderr.write(f"followup-consumer: {message}\n")
    return code


def _at(revision: str | None, head: str) -> str:
    if revision == head:
        return f"{revision} (head)"
    return f"{revision or BASE} (head is {head})"


def describe_status(found: SchemaStatus) -> str:
    if found.current is None and found.adoptable is not None:
        return (
            f"none recorded: the schema schema.sql made, which is {found.adoptable} "
            f"(head is {found.head}; `followup-consumer migrate` adopts it)"
        )
    if found.current is None:
        return f"none: no table of the service yet (head is {found.head})"
    if not found.known:
        return f"{found.current}: not a revision of this release (its head is {found.head})"
    return _at(found.current, found.head)


def describe_migration(done: Migration) -> str:
    adopted = (
        f"recorded the schema schema.sql made as {done.adopted}; "
        if done.adopted is not None
        else ""
    )
    start = done.adopted or done.before
    if done.applied:
        return f"{adopted}upgraded {start or BASE} -> {_at(done.after, done.head)}"
    if done.undone:
        return f"{adopted}downgraded {start} -> {_at(done.after, done.head)}"
    return f"{adopted}already at {_at(done.after, done.head)}"
