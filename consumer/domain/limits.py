"""The input rules every edge applies: Kafka values (wire), HTTP and the CLI.

Defined once so that a value accepted at one door is accepted at every other,
and nothing reaches PostgreSQL that it would refuse (NUL, lone surrogates) or
Python cannot compute with (a date whose UTC conversion leaves years 1..9999).
Each function says why a value is unusable, or None; the edges turn that into
their own answer: 422 naming the field, argparse's exit 2, a dead letter.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

ID_MAX_CHARS: Final = 255
ACTIVITY_TYPE_MAX_CHARS: Final = 100
FREE_TEXT_MAX_CHARS: Final = 1000
MESSAGE_MAX_CHARS: Final = 4000
LIST_LIMIT_MAX: Final = 1000
# Anything outside this window is a producer bug (epoch zero, ms-vs-s mix-ups),
# not a real booking; scheduling from it would fire or expire nonsense.
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
# Longer than any real token; an Authorization header beyond it is not compared.
CREDENTIAL_MAX_CHARS: Final = 1000


def text_problem(value: str) -> str | None:
    """Why PostgreSQL could not store this text, or None: NUL characters, and
    lone surrogates (bytes that were not UTF-8, or a JSON `\\ud800`)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if value.isascii():  # no surrogates, and no copy to find out
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (lone surrogate)"
    return None


def bounded_text_problem(value: str, max_chars: int, *, required: bool = True) -> str | None:
    """Why this text field is not acceptable: blank when required, too long, or
    not storable (see `text_problem`)."""
    if required and (not value or value.isspace()):  # `not value.strip()`, without a copy
        return "must not be empty or blank"
    if len(value) > max_chars:
        return f"must be at most {max_chars} characters, got {len(value)}"
    return text_problem(value)


def identifier_problem(value: str) -> str | None:
    """Why this is not a usable id (user, booking, conversation, follow-up).
    Ids are opaque: kept verbatim, never stripped."""
    return bounded_text_problem(value, ID_MAX_CHARS)


def message_problem(value: str) -> str | None:
    """Why this is not a usable custom message."""
    return bounded_text_problem(value, MESSAGE_MAX_CHARS)


def timestamp_problem(value: datetime) -> str | None:
    """Why this is not a plausible instant: no UTC offset, or outside
    EARLIEST..LATEST (which also keeps every later date computation in range)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return "needs a UTC offset (Z or +hh:mm)"
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 and 9999-12-31T23:59-01:00 have no UTC time.
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        return f"must be between {EARLIEST.date()} and {LATEST.date()}; not a plausible date"
    return None


def credential_problem(value: str) -> str | None:
    """Why this cannot be a bearer token worth comparing (the answer is 401 either way)."""
    if len(value) > CREDENTIAL_MAX_CHARS:
        return "too long"
    return text_problem(value)


# BCP 47 as people write it: a language (2-3 letters), then an optional script
# (4 letters), region (2 letters or 3 digits) and variants; e.g. fr, fr-CA,
# zh-Hant-TW, es-419. Extensions and private use (-u-, -x-) are not needed to
# choose a text and are refused rather than half understood.
LOCALE_MAX_CHARS: Final = 35
_LOCALE = re.compile(
    r"[A-Za-z]{2,3}(-[A-Za-z]{4})?(-(?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
)


def locale_problem(value: str) -> str | None:
    """Why this is not a locale tag (BCP 47: `fr`, `fr-CA`, `zh-Hant-TW`), or None."""
    if len(value) > LOCALE_MAX_CHARS:
        return f"must be at most {LOCALE_MAX_CHARS} characters, got {len(value)}"
    if not value.isascii() or _LOCALE.fullmatch(value) is None:
        shown = value[:LOCALE_MAX_CHARS].encode("utf-8", "backslashreplace").decode()
        return f"{shown!r} is not a BCP 47 locale tag (e.g. en, fr, fr-CA)"
    return None
