"""Which template a follow-up gets when it fires, in which locale, and its text.

The choice is made when a follow-up fires, from the projections as they are
then (CONTRACT.md: "The template is chosen when the follow-up fires"), and from
the templates as they are then: the texts are data (the store's current
versions, passed in), so an edit applies to the next firing without a restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from consumer.domain.locales import FALLBACK_LOCALE, fallback_chain, long_date, narrower_to_wider
from consumer.domain.model import Followup, Score, TriggerType
from consumer.domain.rules import emotion_band
from consumer.domain.template_seeds import SEEDS
from consumer.domain.template_text import (
    VARIABLES,
    StoredTemplate,
    TemplateError,
    TemplateId,
    render_body,
)

__all__ = [
    "VARIABLES",
    "FiringContext",
    "StoredTemplate",
    "TemplateBook",
    "TemplateError",
    "TemplateId",
    "choose_template",
    "pick_template",
    "render",
    "sample_values",
    "seeded_book",
    "values_for",
]

# The current version of each (template id, locale).
TemplateBook = Mapping[tuple[str, str], StoredTemplate]


@dataclass(frozen=True, slots=True)
class FiringContext:
    """What the projections say about a follow-up's user when it fires."""

    scores: Sequence[Score] = ()
    has_live_booking: bool = False
    last_activity_at: datetime | None = None
    # The customer's zone: their event date is shown as the date they lived it.
    timezone: ZoneInfo | None = None
    # The customer's locale (BCP 47), from their bookings and activity; None: unknown.
    locale: str | None = None


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


def seeded_book() -> dict[tuple[str, str], StoredTemplate]:
    """Version 1 of every seeded text: what a new database holds."""
    return {key: StoredTemplate(key[0], key[1], 1, body) for key, body in SEEDS.items()}


def pick_template(
    book: TemplateBook, template_id: str, user_locale: str | None, default_locale: str
) -> StoredTemplate:
    """The text in the user's locale, else its language (fr-CA -> fr), else
    DEFAULT_LOCALE, else the seeded English (in the book, or as seeded)."""
    for locale in fallback_chain(user_locale, default_locale):
        found = book.get((template_id, locale))
        if found is not None:
            return found
    return StoredTemplate(template_id, FALLBACK_LOCALE, 1, SEEDS[(template_id, FALLBACK_LOCALE)])


def date_locale_for(template: StoredTemplate, user_locale: str | None) -> str:
    """Dates in the user's own locale when the text is in their language (fr-CA's
    conventions in a `fr` text), else in the text's locale: never a French date
    in an English sentence."""
    if user_locale and template.locale in narrower_to_wider(user_locale):
        return user_locale
    return template.locale


def values_for(
    followup: Followup, ctx: FiringContext, now: datetime, date_locale: str
) -> dict[str, str]:
    """Every variable, always defined, so that any valid body renders."""
    days_inactive = (now - ctx.last_activity_at).days if ctx.last_activity_at else 0
    event_date = ""
    if followup.event_date is not None:
        event_date = long_date(followup.event_date.astimezone(ctx.timezone).date(), date_locale)
    return {
        "event_date": event_date,
        "booking_id": ", ".join(followup.active_booking_ids or followup.booking_ids),
        "days_inactive": str(max(days_inactive, 0)),
        "custom_message": followup.custom_message or "",
    }


def render(template: StoredTemplate, followup: Followup, ctx: FiringContext, now: datetime) -> str:
    """The message: `template`'s body filled for this follow-up; values are data,
    never parsed as format strings. Raises TemplateError for a body that the
    admin API would have refused (a row edited by hand)."""
    values = values_for(followup, ctx, now, date_locale_for(template, ctx.locale))
    return render_body(template.body, values)


def sample_values(
    date_locale: str,
    *,
    event_date: date,
    booking_id: str | None = None,
    days_inactive: int | None = None,
    custom_message: str | None = None,
) -> dict[str, str]:
    """A preview's variables: those given, sample values for the others."""
    return {
        "event_date": long_date(event_date, date_locale),
        "booking_id": booking_id if booking_id is not None else "bk-1234",
        "days_inactive": str(days_inactive if days_inactive is not None else 30),
        "custom_message": custom_message
        if custom_message is not None
        else "Your table for four is booked for Saturday at 8 pm.",
    }
