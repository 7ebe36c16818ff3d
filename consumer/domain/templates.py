"""The message templates of the original design and how one is chosen.

The choice is made when a follow-up fires, from the projections as they are
then (CONTRACT.md: "The template is chosen when the follow-up fires").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from string import Formatter
from zoneinfo import ZoneInfo

from consumer.domain.model import Followup, Score, TriggerType
from consumer.domain.rules import emotion_band


class TemplateId(StrEnum):
    POST_EVENT_HIGH = "post_event_high_emotion"
    POST_EVENT_NEUTRAL = "post_event_neutral_emotion"
    POST_EVENT_LOW = "post_event_low_emotion"
    REENGAGEMENT_GENERAL = "reengagement_general"
    REENGAGEMENT_PAST_CUSTOMER = "reengagement_past_customer"
    EMOTION_CHECK_IN = "emotion_check_in"
    CUSTOM = "custom"


TEMPLATES: dict[TemplateId, str] = {
    TemplateId.POST_EVENT_HIGH: (
        "Hi! 🎉 We hope your event on {event_date} was wonderful!\n\n"
        "We'd love to hear how it went. Did everything meet your expectations? "
        "Any highlights or feedback you'd like to share?\n\n"
        "Looking forward to hearing from you!"
    ),
    TemplateId.POST_EVENT_NEUTRAL: (
        "Hello! We're checking in about your event on {event_date}.\n\n"
        "How did it go? Your feedback helps us serve you better.\n\n"
        "Reach out any time if you have questions or are planning another event."
    ),
    TemplateId.POST_EVENT_LOW: (
        "Hi there. We're following up on your event from {event_date}.\n\n"
        "You mentioned some concerns when we spoke, and we want to be sure everything "
        "went smoothly. If anything fell short, please tell us: we want to make it right."
    ),
    TemplateId.REENGAGEMENT_GENERAL: (
        "Hi! It's been a while ({days_inactive} days) since we last talked.\n\n"
        "Are you planning an event soon? We have new menus and services you might like, "
        "and we're happy to help."
    ),
    TemplateId.REENGAGEMENT_PAST_CUSTOMER: (
        "Hello! We hope you're doing well.\n\n"
        "We loved being part of your last event and would be glad to help with the next "
        "one. As a returning customer, ask us about special arrangements."
    ),
    TemplateId.EMOTION_CHECK_IN: (
        "Hi, we wanted to check in with you.\n\n"
        "It sounded like something was bothering you in our last conversation. "
        "Is there anything we can clarify or fix? We're here to help."
    ),
    TemplateId.CUSTOM: "{custom_message}",
}

VARIABLES = ("event_date", "booking_id", "days_inactive", "custom_message")


@dataclass(frozen=True, slots=True)
class FiringContext:
    """What the projections say about a follow-up's user when it fires."""

    scores: Sequence[Score] = ()
    has_live_booking: bool = False
    last_activity_at: datetime | None = None
    # The customer's zone: their event date is shown as the date they lived it.
    timezone: ZoneInfo | None = None


def choose_template(followup: Followup, ctx: FiringContext) -> TemplateId:
    match followup.trigger_type:
        case TriggerType.POST_EVENT:
            return {
                "high": TemplateId.POST_EVENT_HIGH,
                "neutral": TemplateId.POST_EVENT_NEUTRAL,
                "low": TemplateId.POST_EVENT_LOW,
            }[emotion_band(ctx.scores)]
        case TriggerType.RE_ENGAGEMENT:
            if ctx.has_live_booking:
                return TemplateId.REENGAGEMENT_PAST_CUSTOMER
            return TemplateId.REENGAGEMENT_GENERAL
        case TriggerType.EMOTION_BASED:
            return TemplateId.EMOTION_CHECK_IN
        case TriggerType.CUSTOM:
            return TemplateId.CUSTOM


def human_date(when: datetime) -> str:
    """'March 5, 2026': the format the original templates used."""
    return f"{when:%B} {when.day}, {when.year}"


def render(template: TemplateId, followup: Followup, ctx: FiringContext, now: datetime) -> str:
    """Fill a template; every variable is defined so no template can fail to render."""
    days_inactive = (now - ctx.last_activity_at).days if ctx.last_activity_at else 0
    values = {
        "event_date": human_date(followup.event_date.astimezone(ctx.timezone))
        if followup.event_date
        else "",
        "booking_id": ", ".join(followup.active_booking_ids or followup.booking_ids),
        "days_inactive": str(max(days_inactive, 0)),
        "custom_message": followup.custom_message or "",
    }
    # Format only our own text: values are data, never parsed as format strings.
    return "".join(
        literal + (values[field] if field is not None else "")
        for literal, field, _spec, _conv in Formatter().parse(TEMPLATES[template])
    )
