"""Text for a terminal: what the CLI's commands share to print values they did not write."""

from __future__ import annotations

from datetime import datetime


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
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
