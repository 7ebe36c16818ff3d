"""The stored rows' JSON (orjson, with the standard library behind it): whatever the
standard library writes and reads back, these write and read back the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from consumer.adapters.postgres.rows import _dumps, _loads, history, history_json
from consumer.domain.model import Score

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),  # lone surrogates included: orjson refuses them, json escapes them
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_written_and_read_back_as_the_standard_library_does(value: Any) -> None:
    assert _loads(_dumps(value)) == json.loads(json.dumps(value))


@given(json_values)
def test_reads_what_the_standard_library_wrote(value: Any) -> None:
    assert _loads(json.dumps(value)) == json.loads(json.dumps(value))


# Instants as the edges leave them: UTC, to the microsecond, any year.
_UTC_INSTANTS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
_SCORES = st.lists(
    st.builds(
        Score,
        st.text(),  # a lone surrogate takes the standard library's path
        _UTC_INSTANTS,
        st.floats(0, 1),
    ),
    max_size=6,
)


@given(_SCORES)
def test_a_score_history_is_written_as_isoformat_writes_it_and_read_back(
    scores: list[Score],
) -> None:
    # The stored text is what it was when the datetimes went through `isoformat`
    # (rows written before and after read alike), and it reads back as the scores.
    by_isoformat = [[s.message_id, s.scored_at.isoformat(), s.value] for s in scores]
    assert _loads(history_json(scores)) == json.loads(json.dumps(by_isoformat))
    if all(c < "\ud800" or c > "\udfff" for s in scores for c in s.message_id):
        assert history_json(scores) == orjson.dumps(by_isoformat).decode()
        assert history(history_json(scores)) == tuple(scores)
