"""Input events as the rules see them: immutable values, already validated.

Built like `consumer.domain.model`'s values (`Final` fields, their own `__init__`):
one is made per event.

Wire concerns (Avro, JSON, pydantic) stop at `consumer.adapters.wire`; nothing here knows
about bytes or Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final


class EventKind(StrEnum):
    """Logical input streams; topic names are configurable, these are not."""

    BOOKING_CONFIRMED = "booking_confirmed"
    BOOKING_CANCELLED = "booking_cancelled"
    EMOTION_SCORED = "message_emotion_scored"
    USER_ACTIVITY = "user_activity"


@dataclass(init=False, slots=True, unsafe_hash=True)
class BookingConfirmed:
    event_id: Final[str]
    occurred_at: Final[datetime]
    user_id: Final[str]
    booking_id: Final[str]
    event_date: Final[datetime]
    conversation_id: Final[str]
    timezone: Final[str | None]
    locale: Final[str | None]  # BCP 47, canonical case (fr-CA)

    def __init__(
        self,
        event_id: str,
        occurred_at: datetime,
        user_id: str,
        booking_id: str,
        event_date: datetime,
        conversation_id: str,
        timezone: str | None,
        locale: str | None = None,
    ) -> None:
        self.event_id = event_id
        self.occurred_at = occurred_at
        self.user_id = user_id
        self.booking_id = booking_id
        self.event_date = event_date
        self.conversation_id = conversation_id
        self.timezone = timezone
        self.locale = locale


@dataclass(init=False, slots=True, unsafe_hash=True)
class BookingCancelled:
    event_id: Final[str]
    occurred_at: Final[datetime]
    user_id: Final[str]
    booking_id: Final[str]
    reason: Final[str | None]

    def __init__(
        self,
        event_id: str,
        occurred_at: datetime,
        user_id: str,
        booking_id: str,
        reason: str | None,
    ) -> None:
        self.event_id = event_id
        self.occurred_at = occurred_at
        self.user_id = user_id
        self.booking_id = booking_id
        self.reason = reason


@dataclass(init=False, slots=True, unsafe_hash=True)
class EmotionScored:
    event_id: Final[str]
    occurred_at: Final[datetime]
    user_id: Final[str]
    conversation_id: Final[str]
    message_id: Final[str]
    score: Final[float]
    label: Final[str | None]

    def __init__(
        self,
        event_id: str,
        occurred_at: datetime,
        user_id: str,
        conversation_id: str,
        message_id: str,
        score: float,
        label: str | None,
    ) -> None:
        self.event_id = event_id
        self.occurred_at = occurred_at
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.score = score
        self.label = label


@dataclass(init=False, slots=True, unsafe_hash=True)
class UserActivity:
    event_id: Final[str]
    occurred_at: Final[datetime]
    user_id: Final[str]
    activity_type: Final[str]
    conversation_id: Final[str | None]
    locale: Final[str | None]  # BCP 47, canonical case (fr-CA)

    def __init__(
        self,
        event_id: str,
        occurred_at: datetime,
        user_id: str,
        activity_type: str,
        conversation_id: str | None,
        locale: str | None = None,
    ) -> None:
        self.event_id = event_id
        self.occurred_at = occurred_at
        self.user_id = user_id
        self.activity_type = activity_type
        self.conversation_id = conversation_id
        self.locale = locale


InputEvent = BookingConfirmed | BookingCancelled | EmotionScored | UserActivity
