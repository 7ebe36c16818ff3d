"""Text for a terminal: what the CLI's commands share to print values they did not write."""

from __future__ import annotations

import unicodedata
from datetime import datetime


def shows_as_is(c: str) -> bool:
    """Printable, or a space (the no-break spaces of French typography, say): a
    terminal shows it as a blank, it moves nothing and starts no sequence."""
    return c.isprintable() or unicodedata.category(c) == "Zs"


def printable(value: object) -> str:
    """One line of terminal-safe text: control characters (newlines, escape
    sequences in a user id, say) shown escaped rather than acted on."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if shows_as_is(c) else c.encode("unicode_escape").decode() for c in text)
