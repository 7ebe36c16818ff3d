"""The fast path of decoding: a record the codec hands over, when it is plainly fine,
straight to its domain event.

What the codec hands over is almost always fine, and pydantic spends more on it
than the rest of decoding. These builders take a record only when every field is
of the exact type the schema gives and passes the same rules (consumer.domain.limits
and the checks of `consumer.adapters.wire`); anything else, even a value the model
might coerce, is declined and left to `wire.validated_event`, which decides and
names the problem. A property test holds the two to the same events.

No pydantic here: mypyc compiles this module (hatch_build.py), and it cannot
compile one that imports pydantic's models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final
from zoneinfo import available_timezones

from consumer.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    EmotionScored,
    EventKind,
    InputEvent,
    UserActivity,
)
from consumer.domain.limits import (
    ACTIVITY_TYPE_MAX_CHARS,
    FREE_TEXT_MAX_CHARS,
    bounded_text_problem,
    identifier_problem,
    locale_problem,
    timestamp_problem,
)
from consumer.domain.locales import canonical_locale
from consumer.domain.model import default_conversation_id

_Builder = Callable[[Mapping[str, Any]], InputEvent]


@cache
def iana_zones() -> frozenset[str]:
    # Scanned once (tens of ms). ZoneInfo() alone would also accept host
    # files such as "localtime" or "posix/...", which are not IANA names and
    # could mean something else on another machine; "Factory" is a placeholder
    # zone, never a customer's.
    return frozenset(available_timezones() - {"localtime", "posixrules", "Factory"})


class _Declined(Exception):
    pass


def _text(value: object) -> str:
    if type(value) is not str:
        raise _Declined
    return value


def _passing(problem: Callable[[str], str | None]) -> Callable[[object], str]:
    """A check of a text field: the text when it is one and `problem` has none."""

    def check(value: object) -> str:
        text = _text(value)
        if problem(text) is not None:
            raise _Declined
        return text

    return check


_fast_id = _passing(identifier_problem)
_fast_activity_type = _passing(lambda t: bounded_text_problem(t, ACTIVITY_TYPE_MAX_CHARS))
_fast_free_text = _passing(lambda t: bounded_text_problem(t, FREE_TEXT_MAX_CHARS, required=False))
_fast_zone = _passing(lambda t: None if t in iana_zones() else "not an IANA zone")


def _fast_locale(value: object) -> str:
    text = _text(value)
    if locale_problem(text) is not None:
        raise _Declined
    return canonical_locale(text)


def _fast_time(value: object) -> datetime:
    if type(value) is not datetime or value.tzinfo is None:
        raise _Declined
    if timestamp_problem(value) is not None:
        raise _Declined
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _optional(record: Mapping[str, Any], key: str, check: Callable[[object], str]) -> str | None:
    value = record.get(key)
    return None if value is None else check(value)


def _fast_booking_confirmed(r: Mapping[str, Any]) -> BookingConfirmed:
    booking_id = _fast_id(r["booking_id"])
    return BookingConfirmed(
        event_id=_fast_id(r["event_id"]),
        occurred_at=_fast_time(r["occurred_at"]),
        user_id=_fast_id(r["user_id"]),
        booking_id=booking_id,
        event_date=_fast_time(r["event_date"]),
        conversation_id=_optional(r, "conversation_id", _fast_id)
        or default_conversation_id(booking_id),
        timezone=_optional(r, "timezone", _fast_zone),
        locale=_optional(r, "locale", _fast_locale),
    )


def _fast_booking_cancelled(r: Mapping[str, Any]) -> BookingCancelled:
    return BookingCancelled(
        event_id=_fast_id(r["event_id"]),
        occurred_at=_fast_time(r["occurred_at"]),
        user_id=_fast_id(r["user_id"]),
        booking_id=_fast_id(r["booking_id"]),
        reason=_optional(r, "reason", _fast_free_text),
    )


def _fast_emotion_scored(r: Mapping[str, Any]) -> EmotionScored:
    score = r["score"]
    if type(score) is not float or not 0.0 <= score <= 1.0:  # NaN fails both
        raise _Declined
    return EmotionScored(
        event_id=_fast_id(r["event_id"]),
        occurred_at=_fast_time(r["occurred_at"]),
        user_id=_fast_id(r["user_id"]),
        conversation_id=_fast_id(r["conversation_id"]),
        message_id=_fast_id(r["message_id"]),
        score=score,
        label=_optional(r, "label", _fast_free_text),
    )


def _fast_user_activity(r: Mapping[str, Any]) -> UserActivity:
    return UserActivity(
        event_id=_fast_id(r["event_id"]),
        occurred_at=_fast_time(r["occurred_at"]),
        user_id=_fast_id(r["user_id"]),
        activity_type=_fast_activity_type(r["activity_type"]),
        conversation_id=_optional(r, "conversation_id", _fast_id),
        locale=_optional(r, "locale", _fast_locale),
    )


_FAST: Final[dict[EventKind, _Builder]] = {
    EventKind.BOOKING_CONFIRMED: _fast_booking_confirmed,
    EventKind.BOOKING_CANCELLED: _fast_booking_cancelled,
    EventKind.EMOTION_SCORED: _fast_emotion_scored,
    EventKind.USER_ACTIVITY: _fast_user_activity,
}


def fast_event(kind: EventKind, record: Mapping[str, Any]) -> InputEvent | None:
    """The event when the record is plainly fine; None: ask `validated_event`."""
    if type(record) is not dict:
        return None
    try:
        return _FAST[kind](record)
    except (_Declined, KeyError):
        return None
