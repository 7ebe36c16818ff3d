"""The domain's values: follow-ups and the projections the rules read.

Immutable values; the rules return new versions instead of mutating, so a batch
can be decided in memory and written back once.

Immutable by their `Final` fields rather than by `frozen=True`: mypy (strict, in
CI) refuses any assignment to them, and compiled by mypyc (hatch_build.py) they
are read-only at run time too. A frozen dataclass's generated `__init__` sets
each field through `object.__setattr__` and stays interpreted even when its
class is compiled: 8.6% of the compiled service's time. So each class has its
own plain `__init__`, compiled with it (0.06 µs for four fields against 1.1),
and the dataclass gives `__eq__`, `__hash__` and `__repr__`, as before. The
values in `consumer.domain.events` are built the same way.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final, TypeVar

_T = TypeVar("_T")


class TriggerType(StrEnum):
    POST_EVENT = "post_event"
    RE_ENGAGEMENT = "re_engagement"
    EMOTION_BASED = "emotion_based"
    CUSTOM = "custom"


class Status(StrEnum):
    PENDING = "pending"
    EXECUTED = "executed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    EXPIRED = "expired"


_ID_NAMESPACE = uuid.UUID("6f1e2a52-4c1b-4b39-9a57-1d0c5b0f7e11")
_NAMESPACE_BYTES = _ID_NAMESPACE.bytes


def followup_id(*parts: str) -> str:
    """A stable id from the facts that caused a follow-up.

    Replaying the same input (into this database or a fresh one) yields the same
    ids, so the `event_id` of `followup.due` lets the messaging service drop
    copies it has already seen.
    """
    # uuid.uuid5 without the UUID object: the same value, computed per user per batch.
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def default_conversation_id(booking_id: str) -> str:
    """The contract's conversation of a booking confirmed without one."""
    return f"booking_{booking_id}"


# The caches serve the ids asked again within a batch (10,000 records by default):
# the store asks for a user's re-engagement id to load it, the rules again to
# find it. Bounded at about 4 MiB each (measured), so the process does not grow
# with history.
@lru_cache(maxsize=1 << 14)
def reengagement_id(user_id: str, cycle: int) -> str:
    return followup_id(TriggerType.RE_ENGAGEMENT, user_id, str(cycle))


@lru_cache(maxsize=1 << 14)
def post_event_id(user_id: str, first_booking_id: str) -> str:
    """The follow-up of a user's chain of bookings, named after its first booking
    (by event date, then booking id): the same bookings give the same id whatever
    order they were confirmed in."""
    return followup_id(TriggerType.POST_EVENT, user_id, first_booking_id)


@lru_cache(maxsize=1 << 14)
def emotion_checkin_id(user_id: str, conversation_id: str, message_id: str) -> str:
    """The check-in of the conversation's user caused by the score of
    `message_id` (the one whose average fell below 0.4), whichever copy of that
    score arrived."""
    return followup_id(TriggerType.EMOTION_BASED, user_id, conversation_id, message_id)


@dataclass(init=False, slots=True, unsafe_hash=True)
class Followup:
    id: Final[str]
    user_id: Final[str]
    conversation_id: Final[str]
    trigger_type: Final[TriggerType]
    scheduled_at: Final[datetime]
    status: Final[Status]
    # post_event: every booking attached, and those of them not cancelled.
    booking_ids: Final[tuple[str, ...]]
    active_booking_ids: Final[tuple[str, ...]]
    # post_event: each attached booking's event date; `event_date` is the latest
    # of the active ones, so the time does not depend on which booking came first.
    booking_dates: Final[tuple[tuple[str, datetime], ...]]
    event_date: Final[datetime | None]
    # re_engagement: the last activity it was scheduled from.
    activity_basis: Final[datetime | None]
    custom_message: Final[str | None]
    cancelled_at: Final[datetime | None]
    # Claimed by a dispatcher right now (a live lease): ingest must not move,
    # cancel or remove it.
    in_flight: Final[bool]
    # Cancelled by an operator, not by a rule: a fact the rules never undo.
    operator_cancelled: Final[bool]
    # custom: the operator chose to send it even inside the user's quiet hours.
    ignore_quiet_hours: Final[bool]

    def __init__(
        self,
        id: str,
        user_id: str,
        conversation_id: str,
        trigger_type: TriggerType,
        scheduled_at: datetime,
        status: Status = Status.PENDING,
        booking_ids: tuple[str, ...] = (),
        active_booking_ids: tuple[str, ...] = (),
        booking_dates: tuple[tuple[str, datetime], ...] = (),
        event_date: datetime | None = None,
        activity_basis: datetime | None = None,
        custom_message: str | None = None,
        cancelled_at: datetime | None = None,
        in_flight: bool = False,
        operator_cancelled: bool = False,
        ignore_quiet_hours: bool = False,
    ) -> None:
        self.id = id
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.trigger_type = trigger_type
        self.scheduled_at = scheduled_at
        self.status = status
        self.booking_ids = booking_ids
        self.active_booking_ids = active_booking_ids
        self.booking_dates = booking_dates
        self.event_date = event_date
        self.activity_basis = activity_basis
        self.custom_message = custom_message
        self.cancelled_at = cancelled_at
        self.in_flight = in_flight
        self.operator_cancelled = operator_cancelled
        self.ignore_quiet_hours = ignore_quiet_hours

    @property
    def is_open(self) -> bool:
        """Still changeable by new events: pending and not being sent."""
        return self.status is Status.PENDING and not self.in_flight

    @property
    def is_fixed(self) -> bool:
        """A fact of the real world, outside what the events decide: sent
        (executed), given up (failed), being sent (in flight), or cancelled by an
        operator. The rules never change or remove such a row."""
        return (
            self.in_flight
            or self.status in (Status.EXECUTED, Status.FAILED)
            or (self.status is Status.CANCELLED and self.operator_cancelled)
        )


@dataclass(init=False, slots=True, unsafe_hash=True)
class UserState:
    user_id: Final[str]
    last_activity_at: Final[datetime | None]
    timezone: Final[str | None]
    # occurred_at of the booking that set `timezone`: the newest one wins.
    timezone_at: Final[datetime | None]
    # Which re-engagement is current (see reengagement_id); None: none yet.
    reengagement_cycle: Final[int | None]
    refused_followups: Final[int]
    # BCP 47, from booking.confirmed and user.activity: the newest one wins, as
    # for the zone (`locale_at` is its occurred_at).
    locale: Final[str | None]
    locale_at: Final[datetime | None]

    def __init__(
        self,
        user_id: str,
        last_activity_at: datetime | None = None,
        timezone: str | None = None,
        timezone_at: datetime | None = None,
        reengagement_cycle: int | None = None,
        refused_followups: int = 0,
        locale: str | None = None,
        locale_at: datetime | None = None,
    ) -> None:
        self.user_id = user_id
        self.last_activity_at = last_activity_at
        self.timezone = timezone
        self.timezone_at = timezone_at
        self.reengagement_cycle = reengagement_cycle
        self.refused_followups = refused_followups
        self.locale = locale
        self.locale_at = locale_at


@dataclass(init=False, slots=True, unsafe_hash=True)
class Booking:
    booking_id: Final[str]
    user_id: Final[str]
    event_date: Final[datetime | None]
    conversation_id: Final[str | None]
    timezone: Final[str | None]
    # Version of the confirmation applied: (occurred_at, event_id), newest wins.
    confirmed_at: Final[datetime | None]
    confirm_event_id: Final[str | None]
    cancelled_at: Final[datetime | None]
    cancel_reason: Final[str | None]
    followup_id: Final[str | None]

    def __init__(
        self,
        booking_id: str,
        user_id: str,
        event_date: datetime | None = None,
        conversation_id: str | None = None,
        timezone: str | None = None,
        confirmed_at: datetime | None = None,
        confirm_event_id: str | None = None,
        cancelled_at: datetime | None = None,
        cancel_reason: str | None = None,
        followup_id: str | None = None,
    ) -> None:
        self.booking_id = booking_id
        self.user_id = user_id
        self.event_date = event_date
        self.conversation_id = conversation_id
        self.timezone = timezone
        self.confirmed_at = confirmed_at
        self.confirm_event_id = confirm_event_id
        self.cancelled_at = cancelled_at
        self.cancel_reason = cancel_reason
        self.followup_id = followup_id

    @property
    def is_live(self) -> bool:
        """Confirmed and not cancelled."""
        return self.confirmed_at is not None and self.cancelled_at is None


@dataclass(init=False, slots=True, unsafe_hash=True)
class Score:
    message_id: Final[str]
    scored_at: Final[datetime]
    value: Final[float]

    def __init__(self, message_id: str, scored_at: datetime, value: float) -> None:
        self.message_id = message_id
        self.scored_at = scored_at
        self.value = value


@dataclass(init=False, slots=True, unsafe_hash=True)
class Conversation:
    conversation_id: Final[str]
    user_id: Final[str]
    # The score history, newest first by (scored_at, message_id), one per message,
    # at most Policy.score_history_cap of them. Templates read the newest
    # EMOTION_HISTORY_LIMIT (`window`); check-ins are computed from all of it.
    scores: Final[tuple[Score, ...]]
    # The latest check-in of the conversation, if any.
    checkin_id: Final[str | None]

    def __init__(
        self,
        conversation_id: str,
        user_id: str,
        scores: tuple[Score, ...] = (),
        checkin_id: str | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.scores = scores
        self.checkin_id = checkin_id

    def window(self, limit: int) -> tuple[Score, ...]:
        """The newest `limit` scores: what the average and the template use."""
        return self.scores[:limit]


@dataclass(init=False, slots=True, unsafe_hash=True)
class Removed:
    """A follow-up the events no longer call for, never sent: the row goes.

    Only rows that are not `is_fixed` are removed, so that the rows left are the
    same whatever order the events came in."""

    followup: Final[Followup]

    def __init__(self, followup: Followup) -> None:
        self.followup = followup


@dataclass(init=False, slots=True, unsafe_hash=True)
class Refused:
    """A follow-up the per-user limit kept out; counted, never an error."""

    user_id: Final[str]
    trigger_type: Final[TriggerType]

    def __init__(self, user_id: str, trigger_type: TriggerType) -> None:
        self.user_id = user_id
        self.trigger_type = trigger_type


Change = Followup | Removed | UserState | Booking | Conversation | Refused


# Per class: its fields in order, and as a set.
_FIELDS: dict[type, tuple[tuple[str, ...], frozenset[str]]] = {}


def evolve(obj: _T, **changes: Any) -> _T:
    """`dataclasses.replace` for the dataclasses of this module, at a fraction of
    the cost: the rules make a few of them per event, and replace's per-field
    inspection was 3-4% of ingest. The same result (a property test holds it to
    `replace`): every field copied, the named ones changed, an unknown name a
    TypeError. Only for classes whose `__init__` takes every field by name (all
    of this module's)."""
    cls = type(obj)
    known = _FIELDS.get(cls)
    if known is None:
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        known = _FIELDS[cls] = (names, frozenset(names))
    names, name_set = known
    if not name_set.issuperset(changes):
        unknown = ", ".join(sorted(set(changes) - name_set))
        raise TypeError(f"{cls.__name__} has no field {unknown}")
    return cls(**{n: changes[n] if n in changes else getattr(obj, n) for n in names})
