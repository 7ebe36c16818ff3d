"""Arrays of text and integers sent as one array literal (`{"a","b",null}`).

asyncpg encodes a list parameter element by element and first asks of every
element whether it is itself a nested array: two `isinstance` checks against
abstract base classes, each a Python-level call. That is 0.35-0.4 µs of the
service's CPU an element; a batch's write-back sends a few hundred thousand.
orjson writes the whole list in C, and a JSON array of strings and integers is
already a PostgreSQL array literal once its brackets are braces, provided it
has no escape other than `\\"` and `\\\\` (which mean the same in both). The
statement casts the text to the array type (`CAST(CAST(:ids AS text) AS
varchar[])`); PostgreSQL parses it at the same cost as the binary array.

Only for arrays a statement expands with `unnest(...)`: there the cast is
evaluated once. Under `= ANY(...)` an expression that is not a constant can be
evaluated once per row scanned, so those statements keep asyncpg's arrays.
Timestamps stay binary too: PostgreSQL parses their text at four times the
cost asyncpg saves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

# A JSON escape PostgreSQL reads differently (`\n`, `\t`, `\u0001`...). A
# backslash that is part of the text is written `\\`; if another letter follows
# it this matches too, and the slow path is taken for nothing, which is still right.
_OTHER_ESCAPE = re.compile(rb'\\[^"\\]')


def literal(values: Sequence[str | int | None]) -> str:
    """The PostgreSQL array literal of `values` (strings, integers, None as NULL)."""
    out = orjson.dumps(values)
    if b"\\" in out and _OTHER_ESCAPE.search(out):
        return _quoted(values)
    return "{" + out[1:-1].decode() + "}"


def _quoted(values: Sequence[str | int | None]) -> str:
    """Every element quoted, `\\` and `"` escaped: what PostgreSQL's array syntax
    asks; control characters inside quotes are taken as they are."""
    return (
        "{"
        + ",".join(
            "NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
            for v in values
        )
        + "}"
    )
