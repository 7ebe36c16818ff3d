"""Array literals (`consumer.adapters.postgres.arrays`) read back by PostgreSQL as
the very values they were made of, whatever the text: quotes, backslashes,
braces, commas, blanks, control characters, the word NULL, any Unicode that
PostgreSQL stores (the edges refuse NUL and lone surrogates before this)."""

from __future__ import annotations

import asyncio

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.adapters.postgres.arrays import literal
from tests.integration.conftest import Services, _dsn

_TRICKY = st.sampled_from(
    ['"', "\\", "\\n", "\n", "\t", "\x01", "{", "}", ",", " ", "NULL", "null", "\u2028", "é", "😀"]
)
_TEXT = st.lists(st.one_of(_TRICKY, st.characters(exclude_categories=["Cs"]))).map("".join)
_STORABLE = _TEXT.filter(lambda s: "\x00" not in s)


async def _round_trip(dsn: str, texts: list[str | None], ints: list[int | None]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        got = await conn.fetchval("SELECT CAST(CAST($1 AS text) AS varchar[])", literal(texts))
        assert got == texts
        # The same statement shape the store runs: unnest of several literals.
        rows = await conn.fetch(
            "SELECT t, i FROM unnest(CAST(CAST($1 AS text) AS text[]), "
            "CAST(CAST($2 AS text) AS integer[])) AS v(t, i)",
            literal(texts),
            literal(ints),
        )
        width = max(len(texts), len(ints))
        padded = (texts + [None] * width)[:width], (ints + [None] * width)[:width]
        assert [(r["t"], r["i"]) for r in rows] == list(zip(*padded, strict=True))
    finally:
        await conn.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.none() | _STORABLE, max_size=20),
    ints=st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), max_size=5),
)
def test_postgresql_reads_back_what_the_literal_was_made_of(
    services: Services, texts: list[str | None], ints: list[int | None]
) -> None:
    asyncio.run(_round_trip(_dsn(services.database_url), texts, ints))


def test_plain_ids_take_the_fast_path() -> None:
    # orjson's output as it is, brackets made braces: no per-element Python work.
    assert literal(["u-1", 'say "hi"', None, 7]) == '{"u-1","say \\"hi\\"",null,7}'
    assert literal([]) == "{}"
