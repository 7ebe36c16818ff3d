"""`model.evolve`, the rules' fast `dataclasses.replace`, gives replace's results.

For every value class of the domain model: generated values, a generated subset
of their fields changed to other generated values; `evolve` and `replace` must
build equal objects of the same class, leave the original as it was, and both
refuse a name that is not a field.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.model import (
    Booking,
    Conversation,
    Followup,
    Refused,
    Removed,
    Score,
    UserState,
    evolve,
)

CLASSES: list[type[Any]] = [Followup, UserState, Booking, Score, Conversation, Removed, Refused]


def _instances(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Generated values of `cls`. Compiled by mypyc (harness.native), an optional
    field's runtime hint is `type`: None there. Floats are finite, as the edge
    lets them in (a native class stores a float unboxed: NaN is not NaN again)."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        if hint is type:
            fields[name] = st.none()
        elif hint is float:
            fields[name] = st.floats(allow_nan=False)
        elif hint in CLASSES:
            fields[name] = _instances(hint)
    return st.builds(cls, **fields)


@st.composite
def _value_and_changes(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    cls = draw(st.sampled_from(CLASSES))
    original = draw(_instances(cls))
    other = draw(_instances(cls))
    names = [f.name for f in dataclasses.fields(cls)]
    chosen = draw(st.lists(st.sampled_from(names), unique=True))
    return original, {n: getattr(other, n) for n in chosen}


@given(_value_and_changes())
def test_evolve_builds_what_replace_builds(case: tuple[Any, dict[str, Any]]) -> None:
    original, changes = case
    before = dataclasses.astuple(original)
    evolved = evolve(original, **changes)
    assert type(evolved) is type(original)
    assert evolved == dataclasses.replace(original, **changes)
    for name, value in changes.items():
        got = getattr(evolved, name)
        # The same object, not a copy (a native class boxes its floats anew).
        assert got is value or (type(value) is float and got == value)
    assert dataclasses.astuple(original) == before


@given(st.sampled_from(CLASSES).flatmap(_instances))
def test_an_unknown_field_is_refused_like_replace_does(value: Any) -> None:
    with pytest.raises(TypeError):
        dataclasses.replace(value, no_such_field=1)
    with pytest.raises(TypeError, match="no_such_field"):
        evolve(value, no_such_field=1)


def test_a_frozen_value_stays_frozen() -> None:
    user = evolve(UserState("u1"), refused_followups=2)
    assert user.refused_followups == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        user.refused_followups = 3  # type: ignore[misc]
