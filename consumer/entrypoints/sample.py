"""`produce-sample`'s story: what one customer does, as input events with their times.

A tool for seeing the service work, not a rule of it. The story is a pure function
of `now`, the user, how soon the follow-up should fall due and the configured
delay, so it can be tested without a clock; `kafka_tools` sends it and prints it.

The story, in the order it happened:

1. a week before the event (or a week ago, if the event is still to come) the
   customer confirms a booking; the event is dated so that its post-event
   follow-up (`FOLLOWUP_DELAY_HOURS` after it) falls due `due_in` from now;
2. a few minutes ago they log in and chat in the booking's conversation: three
   messages scored high (a happy customer: the follow-up will use
   `post_event_high_emotion`), then a `message_sent` activity.

The activity also gives the user a re-engagement follow-up,
`REENGAGEMENT_INACTIVE_DAYS` later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from consumer.domain.events import EventKind
from consumer.entrypoints.terminal import printable

DUE_IN_MAX = timedelta(days=30)
BOOKED_BEFORE_EVENT = timedelta(days=7)
USER_TIMEZONE = "Europe/Berlin"
# (minutes before now, score, label) of the messages in the conversation.
SCORES = ((10, 0.78, "joy"), (7, 0.86, "gratitude"), (4, 0.92, "joy"))

_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|min|h|d)?\s*$")
_UNITS = {
    None: timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}


def parse_duration(text: str) -> timedelta:
    """`90s`, `5m`, `2h`, `1d`, `250ms` or plain seconds (`60`), from 0 to DUE_IN_MAX.

    Raises ValueError saying what is wrong."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration (like 60s, 5m, 2h): {text!r}")
    value = float(match["n"]) * _UNITS[match["unit"]]
    if value > DUE_IN_MAX:
        raise ValueError(f"at most {DUE_IN_MAX.days} days: {text!r}")
    return value


def to_millis(when: datetime) -> datetime:
    """`when` cut to whole milliseconds, the precision of the wire format."""
    return when.replace(microsecond=when.microsecond - when.microsecond % 1000)


@dataclass(frozen=True, slots=True)
class SampleEvent:
    """One input event: its kind (the schema name) and its record, as the codec takes it."""

    kind: EventKind
    record: dict[str, Any]
    what: str  # its part in the story, for people

    @property
    def key(self) -> str:
        return str(self.record["user_id"])

    @property
    def occurred_at(self) -> datetime:
        value = self.record["occurred_at"]
        assert isinstance(value, datetime)
        return value


@dataclass(frozen=True, slots=True)
class Story:
    user_id: str
    booking_id: str
    conversation_id: str
    events: tuple[SampleEvent, ...]  # in the order they happened
    followup_due_at: datetime  # when the post-event follow-up falls due


def build_story(
    *,
    now: datetime,
    user_id: str,
    due_in: timedelta,
    followup_delay: timedelta,
    suffix: str,
    locale: str | None = None,
) -> Story:
    """The story of one user whose post-event follow-up falls due `due_in` after `now`.

    `suffix` makes the ids (booking, conversation, messages, events) unique; every
    time is aware and in whole milliseconds, so what is sent is exactly what the
    consumer reads and `followup_due_at` is exactly when it schedules the follow-up.
    `locale`, when given, is on the booking: the follow-up's text and date in it.
    """
    now = to_millis(now)
    booking_id = f"bk-{suffix}"
    conversation_id = f"conv-{suffix}"
    event_date = to_millis(now + due_in - followup_delay)

    def event_id(name: str) -> str:
        return f"sample-{suffix}-{name}"

    booking: dict[str, Any] = {
        "event_id": event_id("booking"),
        "occurred_at": min(event_date, now) - BOOKED_BEFORE_EVENT,
        "user_id": user_id,
        "booking_id": booking_id,
        "event_date": event_date,
        "conversation_id": conversation_id,
        "timezone": USER_TIMEZONE,
    }
    if locale is not None:
        booking["locale"] = locale
    events = [
        SampleEvent(
            EventKind.BOOKING_CONFIRMED, booking, "the booking, confirmed a week before its event"
        ),
        SampleEvent(
            EventKind.USER_ACTIVITY,
            {
                "event_id": event_id("login"),
                "occurred_at": now - timedelta(minutes=12),
                "user_id": user_id,
                "activity_type": "login",
                "conversation_id": None,
            },
            "the customer logs in",
        ),
    ]
    for n, (minutes_ago, score, label) in enumerate(SCORES, start=1):
        events.append(
            SampleEvent(
                EventKind.EMOTION_SCORED,
                {
                    "event_id": event_id(f"score-{n}"),
                    "occurred_at": now - timedelta(minutes=minutes_ago),
                    "user_id": user_id,
                    "conversation_id": conversation_id,
                    "message_id": f"msg-{suffix}-{n}",
                    "score": score,
                    "label": label,
                },
                f"one of their messages, scored {score} ({label})",
            )
        )
    events.append(
        SampleEvent(
            EventKind.USER_ACTIVITY,
            {
                "event_id": event_id("message-sent"),
                "occurred_at": now - timedelta(minutes=SCORES[-1][0]),
                "user_id": user_id,
                "activity_type": "message_sent",
                "conversation_id": conversation_id,
            },
            "the activity of sending it",
        )
    )
    return Story(
        user_id=user_id,
        booking_id=booking_id,
        conversation_id=conversation_id,
        events=tuple(events),
        followup_due_at=event_date + followup_delay,
    )


# --- what the command prints (pure) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """One event as it went out: where it landed and its JSON text."""

    topic: str
    partition: int
    offset: int
    key: str
    json: str


def in_words(delta: timedelta) -> str:
    """`in 60 s`, `in 5 min`, `in 2 h 5 min`; `now` when it is not in the future."""
    seconds = round(delta.total_seconds())
    if seconds <= 0:
        return "now"
    if seconds < 120:
        return f"in {seconds} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"in {minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"in {hours} h {rest} min" if rest else f"in {hours} h"


def format_sent(
    story: Story,
    sent: Sequence[Sent],
    *,
    now: datetime,
    local: tzinfo | None,
    bootstrap: str,
    value_format: str,
    delay_hours: float,
    due_topic: str,
) -> str:
    """What `produce-sample` prints: each event sent, then when the follow-up fires."""
    due_local = story.followup_due_at.astimezone(local)
    when = in_words(story.followup_due_at - now)
    lines = [
        f"Sent {len(sent)} events ({value_format}) for user {printable(story.user_id)} "
        f"to Kafka at {printable(bootstrap)}:",
    ]
    for n, (s, event) in enumerate(zip(sent, story.events, strict=True), start=1):
        lines += [
            "",
            f"{n}. {printable(s.topic)} [partition {s.partition}, offset {s.offset}], "
            f"key {printable(s.key)}: {event.what}",
            f"   {printable(s.json)}",
        ]
    lines += [
        "",
        f"The post-event follow-up of booking {printable(story.booking_id)} falls due at "
        f"{due_local:%H:%M:%S %Z} on {due_local:%a %d %b %Y}, {when}",
        f"(FOLLOWUP_DELAY_HOURS={delay_hours:g} after its event); a running "
        "`followup-consumer run` then",
        f"publishes it to {printable(due_topic)}. Watch it with:",
        f"  followup-consumer followups list --user {printable(story.user_id)}",
        "  followup-consumer tail",
    ]
    return "".join(line + "\n" for line in lines)
