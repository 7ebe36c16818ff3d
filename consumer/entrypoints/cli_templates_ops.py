"""`followup-consumer templates list|show|set|preview`: the message templates, as
the admin API serves them (consumer.service.template_operations).

Results go to stdout (text or JSON); a failure is one line on stderr and an exit
code: 1 no such template, 2 a body or locale refused, 5 the database unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from consumer.config import Settings
from consumer.domain.template_text import StoredTemplate
from consumer.entrypoints.cli_ops import (
    Clock,
    Failed,
    OperationsCommand,
    _with_operations,
    _write,
    _write_error,
    _write_json,
    table,
)
from consumer.entrypoints.exit_codes import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from consumer.entrypoints.terminal import printable
from consumer.service.operations import Operations
from consumer.service.template_operations import BadTemplate, UnknownTemplate

__all__ = ["execute", "format_templates"]

log = logging.getLogger("consumer.entrypoints.cli")


def execute(args: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    try:
        return asyncio.run(_with_operations(settings, clock, _command(args)))
    except Failed as exc:
        _write_error(str(exc))
        return exc.code


def _command(args: argparse.Namespace) -> OperationsCommand:
    async def run(ops: Operations) -> int:
        try:
            if args.action == "list":
                _show_versions(await ops.templates.current(), as_json=args.json)
            elif args.action == "show":
                _show_versions(await ops.templates.versions(args.id), as_json=args.json)
            elif args.action == "set":
                await _set(ops, args)
            else:
                await _preview(ops, args)
        except UnknownTemplate as exc:
            raise Failed(str(exc), EXIT_NOT_FOUND) from exc
        except BadTemplate as exc:
            raise Failed(str(exc), EXIT_USAGE) from exc
        return EXIT_OK

    return run


async def _set(ops: Operations, args: argparse.Namespace) -> None:
    added, created = await ops.templates.put(args.id, args.locale, args.body)
    log.info(
        "template version added by an operator" if created else "template unchanged",
        extra={"template_id": added.template_id, "locale": added.locale, "version": added.version},
    )
    if args.json:
        _write_json({**added.as_json(), "created": created})
    elif created:
        _write(f"{added.template_id} {added.locale}: version {added.version} is current\n")
    else:
        _write(
            f"{added.template_id} {added.locale}: unchanged, version {added.version} "
            "has this text already\n"
        )


async def _preview(ops: Operations, args: argparse.Namespace) -> None:
    shown = await ops.templates.preview(
        args.id,
        locale=args.locale,
        body=args.body,
        event_date=args.event_date,
        booking_id=args.booking_id,
        days_inactive=args.days_inactive,
        custom_message=args.custom_message,
    )
    if args.json:
        _write_json(
            {
                "template_id": shown.template_id,
                "locale": shown.locale,
                "version": shown.version,
                "body": shown.body,
                "message": shown.message,
            }
        )
        return
    source = "the body given" if shown.version is None else f"version {shown.version}"
    _write(f"{shown.template_id} {shown.locale} ({source}):\n")
    _write("".join(f"    | {printable(line)}\n" for line in shown.message.split("\n")))


def _show_versions(found: Sequence[StoredTemplate], *, as_json: bool) -> None:
    if as_json:
        _write_json([t.as_json() for t in found])
        return
    _write(format_templates(found))


def format_templates(found: Sequence[StoredTemplate]) -> str:
    """One line per version: id, locale, version, when, the text's first line."""
    return table(
        ("template", "locale", "version", "created_at", "text"),
        (
            (
                t.template_id,
                t.locale,
                t.version,
                t.created_at,
                _first_line(t.body),
            )
            for t in found
        ),
    )


def _first_line(body: str, width: int = 60) -> str:
    line = body.split("\n", 1)[0]
    more = "\n" in body or len(line) > width
    return line[:width] + ("…" if more else "")
