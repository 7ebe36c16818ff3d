"""`model.evolve`, the rules' fast `dataclasses.replace`, gives replace's results.

For every value class of the domain model: generated values, a generated subset
of their fields changed to other generated values; `evolve` and `replace` must
build equal objects of the same class, leave the original as it was, and both
refuse a name that is not a field.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import os
import sys
import types
import typing
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import mypy.api
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain import model
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


def _source() -> ModuleType:
    """The model as written. Compiled by mypyc (harness.native) its classes keep
    only runtime types (an optional field's is `type`) and no signature, so the
    field types are read from an interpreted copy of the module's source."""
    path = Path(model.__file__)
    spec = importlib.util.spec_from_file_location("_model_source", path.with_name("model.py"))
    assert spec is not None
    assert spec.loader is not None
    source = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = source  # dataclasses look their module up while building
    spec.loader.exec_module(source)
    return source


_HINTS = {cls: typing.get_type_hints(getattr(_source(), cls.__name__)) for cls in CLASSES}


def _strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of a field's type; the model's own classes and enums are the ones
    under test (not the source copy's). Floats are finite, as the edge lets them
    in (a native class stores a float unboxed: NaN is not NaN again)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Final:
        return _strategy(args[0])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_strategy(args[0]), max_size=3).map(tuple)
        return st.tuples(*map(_strategy, args))
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*map(_strategy, args))
    if hint is float:
        return st.floats(allow_nan=False)
    own = getattr(model, getattr(hint, "__name__", ""), None)
    if own in CLASSES:
        return _instances(own)
    if isinstance(own, type) and issubclass(own, enum.Enum):
        return st.sampled_from(own)
    return st.from_type(hint)


def _instances(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Generated values of `cls`, every field drawn from its declared type."""
    return st.builds(cls, **{name: _strategy(hint) for name, hint in _HINTS[cls].items()})


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
        # The same object, not a copy (a native class boxes its ints and floats anew).
        assert got is value or (type(value) in (int, float) and got == value)
    assert dataclasses.astuple(original) == before


@given(st.sampled_from(CLASSES).flatmap(_instances))
def test_an_unknown_field_is_refused_like_replace_does(value: Any) -> None:
    with pytest.raises(TypeError):
        dataclasses.replace(value, no_such_field=1)
    with pytest.raises(TypeError, match="no_such_field"):
        evolve(value, no_such_field=1)


_ASSIGNING = """
from consumer.domain.events import UserActivity
from consumer.domain.model import Followup, UserState
def f(user: UserState, followup: Followup, event: UserActivity) -> None:
    user.refused_followups = 3
    followup.status = followup.status
    event.user_id = "u2"
"""


def test_mypy_refuses_to_change_a_value() -> None:
    """The values are immutable by their `Final` fields (not `frozen=True`, whose
    `__init__` is slow): the type check in CI is what refuses an assignment."""
    out, _, status = mypy.api.run(
        ["--config-file", os.devnull, "--strict", "--no-incremental", "-c", _ASSIGNING]
    )
    assert status == 1, out
    for name in ("refused_followups", "status", "user_id"):
        assert f'Cannot assign to final attribute "{name}"' in out, out
    assert "Found 3 errors" in out, out


def test_a_value_stays_as_it_was_built() -> None:
    user = evolve(UserState("u1"), refused_followups=2)
    assert user.refused_followups == 2
    assert hash(user) == hash(UserState("u1", refused_followups=2))
    if os.environ.get("FOLLOWUPS_EXPECT_BUILD") == "compiled":
        # Compiled, a `Final` attribute is read-only at run time as well.
        with pytest.raises(AttributeError):
            user.refused_followups = 3  # type: ignore[misc]
