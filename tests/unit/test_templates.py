"""consumer.domain.templates: which template a follow-up gets when it fires, and rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from string import Formatter
from typing import Any

import pytest

from consumer.domain.model import Followup, Score, TriggerType
from consumer.domain.template_seeds import ENGLISH
from consumer.domain.templates import (
    VARIABLES,
    FiringContext,
    StoredTemplate,
    TemplateId,
    choose_template,
    render,
)

NOW = datetime(2026, 4, 10, 9, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def fu(trigger: TriggerType = TriggerType.POST_EVENT, **kw: Any) -> Followup:
    return Followup(
        id="f1",
        user_id="u1",
        conversation_id="c1",
        trigger_type=trigger,
        scheduled_at=NOW,
        **kw,
    )


def scores(*values: float) -> tuple[Score, ...]:
    """Newest first, as the projection keeps them."""
    return tuple(Score(f"m{i}", T0 - timedelta(minutes=i), v) for i, v in enumerate(values))


def text(template: TemplateId | str) -> StoredTemplate:
    """A seeded English text, or a body of the test's own."""
    if isinstance(template, TemplateId):
        return StoredTemplate(template.value, "en", 1, ENGLISH[template])
    return StoredTemplate("custom", "en", 1, template)


def placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in Formatter().parse(template) if field is not None}


# --- choice ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((), TemplateId.POST_EVENT_NEUTRAL),
        ((1.0,), TemplateId.POST_EVENT_HIGH),
        ((0.7,), TemplateId.POST_EVENT_HIGH),
        ((0.7, 0.7, 0.7), TemplateId.POST_EVENT_HIGH),
        ((0.6, 0.8), TemplateId.POST_EVENT_HIGH),
        ((0.9, 0.5, 0.7), TemplateId.POST_EVENT_HIGH),
        ((0.69,), TemplateId.POST_EVENT_NEUTRAL),
        ((0.5,), TemplateId.POST_EVENT_NEUTRAL),
        ((0.4,), TemplateId.POST_EVENT_NEUTRAL),
        ((0.1, 0.7), TemplateId.POST_EVENT_NEUTRAL),
        ((0.4, 0.4, 0.4), TemplateId.POST_EVENT_NEUTRAL),
        ((1.0, 0.0), TemplateId.POST_EVENT_NEUTRAL),
        ((0.39,), TemplateId.POST_EVENT_LOW),
        ((0.1, 0.69), TemplateId.POST_EVENT_LOW),
        ((0.0,), TemplateId.POST_EVENT_LOW),
        ((0.1, 0.2, 0.3, 0.4, 0.5), TemplateId.POST_EVENT_LOW),
    ],
    ids=lambda v: ("+".join(map(str, v)) or "none") if isinstance(v, tuple) else str(v),
)
def test_post_event_template_follows_the_average_emotion(
    values: tuple[float, ...], expected: TemplateId
) -> None:
    assert choose_template(fu(), FiringContext(scores=scores(*values))) is expected


@pytest.mark.parametrize(
    ("live", "expected"),
    [(True, TemplateId.REENGAGEMENT_PAST_CUSTOMER), (False, TemplateId.REENGAGEMENT_GENERAL)],
)
def test_reengagement_template_depends_on_a_live_booking(live: bool, expected: TemplateId) -> None:
    ctx = FiringContext(scores=scores(0.1), has_live_booking=live, last_activity_at=T0)
    assert choose_template(fu(TriggerType.RE_ENGAGEMENT), ctx) is expected


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (TriggerType.EMOTION_BASED, TemplateId.EMOTION_CHECK_IN),
        (TriggerType.CUSTOM, TemplateId.CUSTOM),
    ],
)
@pytest.mark.parametrize(
    "ctx",
    [FiringContext(), FiringContext(scores=scores(0.9), has_live_booking=True)],
    ids=["empty", "high-live"],
)
def test_fixed_templates_do_not_depend_on_the_context(
    trigger: TriggerType, expected: TemplateId, ctx: FiringContext
) -> None:
    assert choose_template(fu(trigger), ctx) is expected


def test_post_event_template_is_chosen_from_the_scores_at_firing_time() -> None:
    f = fu()
    assert choose_template(f, FiringContext(scores=scores(0.9))) is TemplateId.POST_EVENT_HIGH
    assert choose_template(f, FiringContext(scores=scores(0.1))) is TemplateId.POST_EVENT_LOW


def test_post_event_template_ignores_the_booking_state() -> None:
    ctx = FiringContext(scores=scores(0.5), has_live_booking=True)
    assert choose_template(fu(), ctx) is TemplateId.POST_EVENT_NEUTRAL


@pytest.mark.parametrize("trigger", list(TriggerType))
def test_every_trigger_type_has_a_template(trigger: TriggerType) -> None:
    assert choose_template(fu(trigger), FiringContext()) in ENGLISH


def test_every_template_id_has_a_text_using_only_the_documented_variables() -> None:
    assert set(ENGLISH) == set(TemplateId)
    assert {str(t) for t in TemplateId} == {
        "post_event_high_emotion",
        "post_event_neutral_emotion",
        "post_event_low_emotion",
        "reengagement_general",
        "reengagement_past_customer",
        "emotion_check_in",
        "custom",
    }
    for body in ENGLISH.values():
        assert placeholders(body) <= set(VARIABLES)
    assert set(VARIABLES) == {"event_date", "booking_id", "days_inactive", "custom_message"}


# --- rendering ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2026, 3, 5, 18, 0, tzinfo=UTC), "March 5, 2026"),
        (datetime(2026, 11, 25, 0, 0, tzinfo=UTC), "November 25, 2026"),
        (datetime(2027, 1, 1, 23, 59, tzinfo=UTC), "January 1, 2027"),
    ],
)
def test_english_dates_read_like_march_5_2026(when: datetime, expected: str) -> None:
    assert render(text("{event_date}"), fu(event_date=when), FiringContext(), NOW) == expected


@pytest.mark.parametrize(
    "template",
    [TemplateId.POST_EVENT_HIGH, TemplateId.POST_EVENT_NEUTRAL, TemplateId.POST_EVENT_LOW],
)
def test_post_event_message_names_the_event_date(template: TemplateId) -> None:
    f = fu(event_date=datetime(2026, 3, 5, 18, 0, tzinfo=UTC), booking_ids=("b1",))
    out = render(text(template), f, FiringContext(), NOW)
    assert "March 5, 2026" in out
    assert not {"{", "}"} & set(out)


@pytest.mark.parametrize("template", list(TemplateId))
def test_every_template_renders_without_leftover_placeholders(template: TemplateId) -> None:
    f = fu(
        event_date=datetime(2026, 3, 5, 18, 0, tzinfo=UTC),
        booking_ids=("b1",),
        active_booking_ids=("b1",),
        custom_message="hello",
    )
    out = render(text(template), f, FiringContext(last_activity_at=T0), NOW)
    assert out
    assert not {"{", "}"} & set(out)


def test_every_template_renders_even_with_nothing_to_fill_in() -> None:
    for template in TemplateId:
        out = render(text(template), fu(), FiringContext(), NOW)
        assert not {"{", "}"} & set(out)


@pytest.mark.parametrize(
    ("idle", "days"),
    [
        (timedelta(days=30), "30"),
        (timedelta(days=30, hours=23, minutes=59), "30"),
        (timedelta(days=31), "31"),
        (timedelta(hours=5), "0"),
    ],
)
def test_days_inactive_is_whole_days_since_the_last_activity(idle: timedelta, days: str) -> None:
    ctx = FiringContext(last_activity_at=NOW - idle)
    out = render(text(TemplateId.REENGAGEMENT_GENERAL), fu(TriggerType.RE_ENGAGEMENT), ctx, NOW)
    assert f"({days} days)" in out


@pytest.mark.parametrize(
    "last", [None, NOW + timedelta(days=2)], ids=["no-activity", "activity-after-now"]
)
def test_days_inactive_is_never_negative_or_missing(last: datetime | None) -> None:
    ctx = FiringContext(last_activity_at=last)
    out = render(text(TemplateId.REENGAGEMENT_GENERAL), fu(TriggerType.RE_ENGAGEMENT), ctx, NOW)
    assert "(0 days)" in out


ALL_VARIABLES = "{event_date}|{booking_id}|{days_inactive}|{custom_message}"


def test_renderer_fills_every_variable() -> None:
    f = fu(
        TriggerType.CUSTOM,
        event_date=datetime(2026, 3, 5, 18, 0, tzinfo=UTC),
        booking_ids=("b1", "b2"),
        active_booking_ids=("b1", "b2"),
        custom_message="hi",
    )
    ctx = FiringContext(last_activity_at=NOW - timedelta(days=12))
    assert render(text(ALL_VARIABLES), f, ctx, NOW) == "March 5, 2026|b1, b2|12|hi"


@pytest.mark.parametrize(
    ("booking_ids", "active", "expected"),
    [
        (("b1", "b2"), ("b2",), "b2"),
        (("b1", "b2"), (), "b1, b2"),
        ((), (), ""),
    ],
    ids=["active-only", "all-cancelled-falls-back", "none"],
)
def test_booking_id_lists_the_active_bookings(
    booking_ids: tuple[str, ...],
    active: tuple[str, ...],
    expected: str,
) -> None:
    f = fu(booking_ids=booking_ids, active_booking_ids=active)
    assert render(text("[{booking_id}]"), f, FiringContext(), NOW) == f"[{expected}]"


@pytest.mark.parametrize(
    "message",
    [
        "Your table is ready.",
        "{user_id}",
        "{0}",
        "{}",
        "{{x}}",
        "{custom_message}",
        "{event_date}",
        "{event_date:%Y}",
        "{booking_id!r}",
        "{",
        "}",
        "}{",
        "{0.__class__.__mro__}",
        "50% off {} %s %(x)s",
        "Grüße 🎉 {naïve}",
        "",
    ],
)
def test_custom_message_comes_out_literally(message: str) -> None:
    f = fu(TriggerType.CUSTOM, custom_message=message, event_date=T0, booking_ids=("b1",))
    ctx = FiringContext(last_activity_at=T0)
    assert render(text(TemplateId.CUSTOM), f, ctx, NOW) == message


def test_custom_template_without_a_message_renders_empty() -> None:
    assert render(text(TemplateId.CUSTOM), fu(TriggerType.CUSTOM), FiringContext(), NOW) == ""


def test_booking_id_with_braces_is_not_reparsed() -> None:
    f = fu(booking_ids=("{event_date}",), active_booking_ids=("{event_date}",), event_date=T0)
    assert render(text("{booking_id}/{event_date}"), f, FiringContext(), NOW) == (
        "{event_date}/March 1, 2026"
    )
