"""The fast path of the encoder's record check (`_final_form`): whenever it takes a
record, it returns what the field-by-field check returns; otherwise that check
decides (and raises its own errors)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from consumer.adapters.codec import (
    Codec,
    CodecError,
    _checked_field_by_field,
    _final_form,
)

CODEC = Codec.load()
SCHEMA = CODEC._schema("followup_due")
FIELDS = [f.name for f in SCHEMA.fields]

_VALUES = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.sampled_from(["", "user-1", "é", "\ud800", "x" * 40]),
    st.integers(),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, True, False]),
    st.floats(allow_nan=True),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), ZoneInfo("UTC")])),
    st.datetimes(),  # naive
)
_FINAL = {
    "string": st.text(st.characters(max_codepoint=127), max_size=8),
    "int": st.integers(-(2**31), 2**31 - 1),
    "timestamp-millis": st.datetimes(timezones=st.just(UTC)),
}
# Values one step away from their final form.
_NEAR_MISSES_LIST = [
    None,
    2**31,
    -(2**31) - 1,
    2**63,
    True,
    1.0,
    "é",
    "\ud800",
    datetime(2026, 1, 1),
    datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")),
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))),
]
_NEAR_MISSES = st.sampled_from(_NEAR_MISSES_LIST)
# Mostly values in their final form (so that the fast path is taken), some not.
_NEAR_FINAL = st.fixed_dictionaries(
    {f.name: (_FINAL[f.kind] | st.none()) if f.nullable else _FINAL[f.kind] for f in SCHEMA.fields}
).flatmap(
    lambda record: st.dictionaries(
        st.sampled_from([*FIELDS, "unknown"]), _NEAR_MISSES | _VALUES, max_size=2
    ).map(lambda changes: {**record, **changes})
)
_RECORDS = (
    _NEAR_FINAL
    | st.dictionaries(st.sampled_from([*FIELDS, "unknown"]), _VALUES, max_size=len(FIELDS) + 1)
    | st.fixed_dictionaries({name: _VALUES for name in FIELDS})
)


def _outcome(record: dict[str, Any]) -> object:
    try:
        return _checked_field_by_field(SCHEMA, record)
    except CodecError as exc:
        return exc


@settings(max_examples=400)
@given(_RECORDS)
def test_the_fast_path_agrees_with_the_full_check(record: dict[str, Any]) -> None:
    fast = _final_form(SCHEMA, record)
    event("fast path" if fast is not None else "full check")
    if fast is not None:
        assert fast == _outcome(record)


NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
DISPATCHED = {
    "event_id": "f-1",
    "followup_id": "f-1",
    "user_id": "u-1",
    "conversation_id": "c-1",
    "trigger_type": "custom",
    "template_id": "custom",
    "message": "Hello",
    "scheduled_at": NOW,
    "emitted_at": NOW,
    "booking_id": None,
    "attempt": 1,
    "locale": "en",
    "template_version": 2,
}


@pytest.mark.parametrize("field", [*FIELDS, "unknown"])
def test_every_near_miss_in_every_field_gets_the_full_checks_answer(field: str) -> None:
    for miss in _NEAR_MISSES_LIST:
        record = {**DISPATCHED, field: miss}
        fast = _final_form(SCHEMA, record)
        assert fast is None or fast == _outcome(record), (field, miss)
    if field in DISPATCHED:  # a field left out: the full check fills in or refuses
        assert _final_form(SCHEMA, {k: v for k, v in DISPATCHED.items() if k != field}) is None


def test_a_record_dispatch_builds_takes_the_fast_path() -> None:
    record = DISPATCHED
    assert _final_form(SCHEMA, record) == _checked_field_by_field(SCHEMA, record) == record
    # Not ASCII, or not in UTC: the full check converts.
    assert _final_form(SCHEMA, {**record, "message": "Merci, à bientôt"}) is None
    paris = NOW.astimezone(ZoneInfo("Europe/Paris"))
    assert _final_form(SCHEMA, {**record, "emitted_at": paris}) is None
