"""The stored rows' JSON (orjson, with the standard library behind it): whatever the
standard library writes and reads back, these write and read back the same."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from consumer.adapters.postgres.rows import _dumps, _loads

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
