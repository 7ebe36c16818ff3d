"""Input events as the rules see them: plain frozen values, already validated.

Wire concerns (Avro, JSON, pydantic) stop at `consumer.adapters.wire`; nothing here knows
about bytes or Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class EventKind(StrEnum):
    """Logical input streams; topic names are configurable, these are not."""

    BOOKING_CONFIRMED = "booking_confirmed"
    BOOKING_CANCELLED = "booking_cancelled"
    EMOTION_SCORED = "message_emotion_scored"
    USER_ACTIVITY = "user_activity"


@dataclass(frozen=True, slots=True)
class BookingConfirmed:
    event_id: str
    occurred_at: datetime
    user_id: str
    booking_id: str
    event_date: datetime
    conversation_id: str
    timezone: str | None
    locale: str | None = None  # BCP 47, canonical case (fr-CA)


@dataclass(frozen=True, slots=True)
class BookingCancelled:
    event_id: str
    occurred_at: datetime
    user_id: str
    booking_id: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class EmotionScored:
    event_id: str
    occurred_at: datetime
    user_id: str
    conversation_id: str
    message_id: str
    score: float
    label: str | None


@dataclass(frozen=True, slots=True)
class UserActivity:
    event_id: str
    occurred_at: datetime
    user_id: str
    activity_type: str
    conversation_id: str | None
    locale: str | None = None  # BCP 47, canonical case (fr-CA)


InputEvent = BookingConfirmed | BookingCancelled | EmotionScored | UserActivity
