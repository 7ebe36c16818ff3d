"""The arguments of `followup-consumer templates list|show|set|preview`, checked
by the shared input rules (a body or locale refused: argparse's exit 2).
Light to import: the commands themselves are in cli_templates_ops.py."""

from __future__ import annotations

import argparse
from datetime import date

from consumer.domain.limits import locale_problem
from consumer.domain.locales import canonical_locale
from consumer.domain.template_text import TemplateId, body_problem

__all__ = ["add_parser", "locale_tag"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    templates = sub.add_parser(
        "templates",
        help="list, show, set or preview the message templates (versioned, per locale)",
    )
    tsub = templates.add_subparsers(dest="action", required=True)
    listing = tsub.add_parser("list", help="the current version of every template and locale")
    _json_flag(listing)

    show = tsub.add_parser("show", help="every version of one template (exit 1: unknown id)")
    show.add_argument("id", help=f"template id ({', '.join(t.value for t in TemplateId)})")
    _json_flag(show)

    put = tsub.add_parser(
        "set",
        help="add a version in a locale, used from the next firing on (exit 1: unknown id)",
    )
    put.add_argument("id", help="template id")
    put.add_argument("--locale", type=locale_tag, required=True, help="BCP 47: en, fr, fr-CA")
    text = put.add_mutually_exclusive_group(required=True)
    text.add_argument("--body", type=_body, help="the text, with {event_date} etc.")
    text.add_argument(
        "--file",
        type=_body_file,
        dest="body",
        metavar="PATH",
        help="read the text from this file (UTF-8)",
    )
    _json_flag(put)

    preview = tsub.add_parser(
        "preview", help="the message a user in a locale would get now (nothing is stored)"
    )
    preview.add_argument("id", help="template id")
    preview.add_argument("--locale", type=locale_tag, help="BCP 47 (default: DEFAULT_LOCALE)")
    preview.add_argument("--body", type=_body, help="try this text instead of the stored one")
    preview.add_argument("--event-date", type=_date, help="YYYY-MM-DD (default: today)")
    preview.add_argument("--booking-id", help="default: bk-1234")
    preview.add_argument("--days-inactive", type=_count, help="default: 30")
    preview.add_argument("--custom-message", help="default: a sample sentence")
    _json_flag(preview)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def locale_tag(value: str) -> str:
    """A BCP 47 argument, in its one spelling (argparse's exit 2 otherwise)."""
    problem = locale_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return canonical_locale(value)


def _body(value: str) -> str:
    problem = body_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def _body_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return _body(f.read())
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc}") from exc


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from exc


def _count(value: str) -> int:
    if not value.isdigit() or len(value) > 6:
        raise argparse.ArgumentTypeError(f"not a whole number from 0 to 999999: {value!r}")
    return int(value)
