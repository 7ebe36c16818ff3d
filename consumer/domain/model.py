"""The domain's values: follow-ups and the projections the rules read.

Plain frozen dataclasses; the rules return new versions instead of mutating, so
a batch can be decided in memory and written back once.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVar

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


@dataclass(frozen=True, slots=True)
class Followup:
    id: str
    user_id: str
    conversation_id: str
    trigger_type: TriggerType
    scheduled_at: datetime
    status: Status = Status.PENDING
    # post_event: every booking attached, and those of them not cancelled.
    booking_ids: tuple[str, ...] = ()
    active_booking_ids: tuple[str, ...] = ()
    # post_event: each attached booking's event date; `event_date` is the latest
    # of the active ones, so the time does not depend on which booking came first.
    booking_dates: tuple[tuple[str, datetime], ...] = ()
    event_date: datetime | None = None
    # re_engagement: the last activity it was scheduled from.
    activity_basis: datetime | None = None
    custom_message: str | None = None
    cancelled_at: datetime | None = None
    # Claimed by a dispatcher right now (a live lease): ingest must not move,
    # cancel or remove it.
    in_flight: bool = False
    # Cancelled by an operator, not by a rule: a fact the rules never undo.
    operator_cancelled: bool = False
    # custom: the operator chose to send it even inside the user's quiet hours.
    ignore_quiet_hours: bool = False

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


@dataclass(frozen=True, slots=True)
class UserState:
    user_id: str
    last_activity_at: datetime | None = None
    timezone: str | None = None
    # occurred_at of the booking that set `timezone`: the newest one wins.
    timezone_at: datetime | None = None
    # Which re-engagement is current (see reengagement_id); None: none yet.
    reengagement_cycle: int | None = None
    refused_followups: int = 0
    # BCP 47, from booking.confirmed and user.activity: the newest one wins, as
    # for the zone (`locale_at` is its occurred_at).
    locale: str | None = None
    locale_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Booking:
    booking_id: str
    user_id: str
    event_date: datetime | None = None
    conversation_id: str | None = None
    timezone: str | None = None
    # Version of the confirmation applied: (occurred_at, event_id), newest wins.
    confirmed_at: datetime | None = None
    confirm_event_id: str | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    followup_id: str | None = None

    @property
    def is_live(self) -> bool:
        """Confirmed and not cancelled."""
        return self.confirmed_at is not None and self.cancelled_at is None


@dataclass(frozen=True, slots=True)
class Score:
    message_id: str
    scored_at: datetime
    value: float


@dataclass(frozen=True, slots=True)
class Conversation:
    conversation_id: str
    user_id: str
    # The score history, newest first by (scored_at, message_id), one per message,
    # at most Policy.score_history_cap of them. Templates read the newest
    # EMOTION_HISTORY_LIMIT (`window`); check-ins are computed from all of it.
    scores: tuple[Score, ...] = ()
    # The latest check-in of the conversation, if any.
    checkin_id: str | None = None

    def window(self, limit: int) -> tuple[Score, ...]:
        """The newest `limit` scores: what the average and the template use."""
        return self.scores[:limit]


@dataclass(frozen=True, slots=True)
class Removed:
    """A follow-up the events no longer call for, never sent: the row goes.

    Only rows that are not `is_fixed` are removed, so that the rows left are the
    same whatever order the events came in."""

    followup: Followup


@dataclass(frozen=True, slots=True)
class Refused:
    """A follow-up the per-user limit kept out; counted, never an error."""

    user_id: str
    trigger_type: TriggerType


Change = Followup | Removed | UserState | Booking | Conversation | Refused


# Per class: its fields in order, as a set, and whether it is a slotted Python class.
_FIELDS: dict[type, tuple[tuple[str, ...], frozenset[str], bool]] = {}


def evolve(obj: _T, **changes: Any) -> _T:
    """`dataclasses.replace` for the frozen, slotted dataclasses of this module,
    at half the cost: the rules make a few of them per event, and replace's
    per-field inspection was 3-4% of ingest. The same result (a property test
    holds it to `replace`): every field copied, the named ones changed, an
    unknown name a TypeError. Only for classes whose fields are all set by
    `__init__` and that have no `__post_init__` (all of this module's).
    Compiled by mypyc (hatch_build.py) the classes are native, without
    `__slots__`, and their own constructor is the fast way."""
    cls = type(obj)
    known = _FIELDS.get(cls)
    if known is None:
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        known = _FIELDS[cls] = (names, frozenset(names), hasattr(cls, "__slots__"))
    names, name_set, slotted = known
    if not name_set.issuperset(changes):
        unknown = ", ".join(sorted(set(changes) - name_set))
        raise TypeError(f"{cls.__name__} has no field {unknown}")
    if not slotted:
        return cls(**{n: changes[n] if n in changes else getattr(obj, n) for n in names})
    new = object.__new__(cls)
    for name in names:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(obj, name))
    return new
