"""The chains a batch's booking events can change, as PostgreSQL finds them
(`sql.TOUCHED_BOOKINGS`, through `lock_and_load`), are the rules' own
(`rules.touched_chains`): the same cut at exactly a day, the same reach of a day
around each date, unconfirmed or undated bookings in no chain, one user's
bookings never another's."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.adapters.postgres.store import PostgresStore
from consumer.domain.model import Booking
from consumer.domain.rules import touched_chains
from consumer.service.ports import BatchKeys
from tests.service.conftest import T0

pytestmark = pytest.mark.integration

_US = timedelta(microseconds=1)
# Half days and a microsecond either side: gaps of exactly a day, and just over or
# under it, come up often.
_WHEN = st.builds(
    lambda halves, nudge: T0 + halves * timedelta(hours=12) + nudge * _US,
    st.integers(0, 10),
    st.sampled_from([-1, 0, 0, 1]),
)
# (event date or None, confirmed) of each booking.
_BOOKINGS = st.lists(st.tuples(st.none() | _WHEN, st.booleans()), max_size=12)


async def _touched(
    url: str, mine: list[tuple[datetime | None, bool]], wanted: list[datetime]
) -> tuple[set[int], set[int]]:
    """The bookings (by their index in `mine`) the store loads for booking events
    at `wanted`, and those the rules' chains say it must."""
    user, other = f"user-{uuid.uuid4().hex}", f"user-{uuid.uuid4().hex}"
    bookings = [
        Booking(f"{user}-bk-{i}", user, event_date=d, confirmed_at=T0 if confirmed else None)
        for i, (d, confirmed) in enumerate(mine)
    ]
    # Another user's bookings on the same dates: never part of this user's chains.
    bookings += [
        Booking(f"{other}-bk-{i}", other, event_date=d, confirmed_at=T0)
        for i, (d, _) in enumerate(mine)
    ]
    store = PostgresStore.connect(url, "group")
    try:
        await store.migrate()
        async with store.transaction() as tx:
            keys = BatchKeys(frozenset({user, other}), frozenset(b.booking_id for b in bookings))
            ws = await tx.lock_and_load(keys, T0)
            ws.apply(bookings)
            await tx.save(ws, {})
        async with store.transaction() as tx:
            keys = BatchKeys(
                frozenset({user}),
                booking_user_ids=frozenset({user}),
                booking_dates=frozenset((user, d) for d in wanted),
            )
            ws = await tx.lock_and_load(keys, T0)
            loaded = {b.booking_id for b in ws.bookings_of(user)}
            assert not list(ws.bookings_of(other))
    finally:
        await store.close()
    dated = [
        (b.event_date, b.booking_id)
        for b in bookings
        if b.user_id == user and b.confirmed_at is not None and b.event_date is not None
    ]
    index = {b.booking_id: i for i, b in enumerate(bookings)}
    return {index[k] for k in loaded}, {index[k] for k in touched_chains(dated, wanted)}


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mine=_BOOKINGS, wanted=st.lists(_WHEN, min_size=1, max_size=3))
def test_postgresql_finds_the_chains_the_rules_cut(
    database_url: str, mine: list[tuple[datetime | None, bool]], wanted: list[datetime]
) -> None:
    loaded, expected = asyncio.run(_touched(database_url, mine, wanted))
    assert loaded == expected


def test_a_day_apart_is_one_chain_and_a_microsecond_more_is_two(database_url: str) -> None:
    # Named cases the generated ones must not miss: bookings on days 0 and 1 share a
    # chain, so a date within a day of either reaches both; one a microsecond past
    # a day from day 1 is a chain of its own, out of reach of day 0.
    day = timedelta(days=1)
    mine: list[tuple[datetime | None, bool]] = [
        (T0, True),
        (T0 + day, True),
        (T0 + 2 * day + _US, True),
        (T0, False),  # cancelled before it was confirmed: in no chain
    ]
    assert asyncio.run(_touched(database_url, mine, [T0 - day])) == ({0, 1}, {0, 1})
    assert asyncio.run(_touched(database_url, mine, [T0 - day - _US])) == (set(), set())
    assert asyncio.run(_touched(database_url, mine, [T0 + 3 * day + _US])) == ({2}, {2})
    assert asyncio.run(_touched(database_url, mine, [T0 + 2 * day])) == ({0, 1, 2}, {0, 1, 2})
