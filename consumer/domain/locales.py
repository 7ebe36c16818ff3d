"""Locales: one spelling per tag, the fallback chain, dates in the reader's language.

Tags are checked at the edges (`limits.locale_problem`); here they are valid.
Babel (CLDR data, no I/O after import) formats dates; a tag it has no data for
falls back along the same chain as the texts do.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_date

FALLBACK_LOCALE = "en"  # the seeded texts' locale: always there, whatever DEFAULT_LOCALE says


def canonical_locale(tag: str) -> str:
    """BCP 47's usual case: language lower, script title, region upper (`fr-CA`,
    `zh-Hant-TW`), so that `FR-ca` and `fr-CA` are one locale."""
    parts = tag.split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif len(part) == 2 or (len(part) == 3 and part.isdigit()):
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


def narrower_to_wider(tag: str) -> tuple[str, ...]:
    """`zh-Hant-TW` -> (`zh-Hant-TW`, `zh-Hant`, `zh`): the tag, then each prefix."""
    parts = tag.split("-")
    return tuple("-".join(parts[:n]) for n in range(len(parts), 0, -1))


@lru_cache(maxsize=1024)  # a few locales, asked once per follow-up fired
def fallback_chain(user_locale: str | None, default_locale: str) -> tuple[str, ...]:
    """Where to look for a text, in order: the user's locale, its language (`fr-CA`
    -> `fr`), then DEFAULT_LOCALE (and its language), then the seeded English."""
    chain: list[str] = []
    for tag in (user_locale, default_locale, FALLBACK_LOCALE):
        if tag:
            chain.extend(t for t in narrower_to_wider(tag) if t not in chain)
    return tuple(chain)


@lru_cache(maxsize=256)
def _babel(tag: str) -> Locale | None:
    try:
        return Locale.parse(tag, sep="-")
    except (UnknownLocaleError, ValueError):
        return None


def date_locale(tag: str) -> Locale:
    """Babel's locale for `tag`, or for the nearest wider tag it knows, else English."""
    for candidate in (*narrower_to_wider(tag), FALLBACK_LOCALE):
        found = _babel(candidate)
        if found is not None:
            return found
    raise AssertionError("Babel has no English")  # pragma: no cover


@lru_cache(maxsize=4096)  # many follow-ups of a round share event days
def long_date(day: date, tag: str) -> str:
    """CLDR's long date: 'November 25, 2026' (en), '25 novembre 2026' (fr)."""
    return format_date(day, format="long", locale=date_locale(tag))
