"""Templates as data, pure: the locale fallback chain, the check an edited body
must pass (and the renderer it protects, by property), dates in the reader's
language with Babel, and the seeded texts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from string import Formatter
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.config import ConfigError, load_settings
from consumer.domain.limits import locale_problem
from consumer.domain.locales import canonical_locale, fallback_chain, long_date
from consumer.domain.model import Followup, TriggerType
from consumer.domain.template_seeds import ENGLISH, FRENCH, SEEDS
from consumer.domain.template_text import (
    VARIABLES,
    StoredTemplate,
    TemplateError,
    TemplateId,
    body_problem,
    placeholders,
    render_body,
)
from consumer.domain.templates import (
    FiringContext,
    pick_template,
    render,
    sample_values,
    seeded_book,
)

NOW = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)
VALUES = {"event_date": "D", "booking_id": "B", "days_inactive": "7", "custom_message": "M"}


def book(*entries: tuple[str, str, int]) -> dict[tuple[str, str], StoredTemplate]:
    """(template id, locale, version): a body naming them, to see which was picked."""
    return {(t, loc): StoredTemplate(t, loc, v, f"{t}/{loc}/v{v}") for t, loc, v in entries}


# --- the fallback chain -------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "default", "chain"),
    [
        ("fr-CA", "en", ("fr-CA", "fr", "en")),
        ("fr", "en", ("fr", "en")),
        (None, "en", ("en",)),
        ("de-AT", "fr", ("de-AT", "de", "fr", "en")),
        ("zh-Hant-TW", "en", ("zh-Hant-TW", "zh-Hant", "zh", "en")),
        (None, "pt-BR", ("pt-BR", "pt", "en")),
        ("en-GB", "en", ("en-GB", "en")),
    ],
)
def test_fallback_chain_is_the_locale_then_its_language_then_the_default(
    user: str | None, default: str, chain: tuple[str, ...]
) -> None:
    assert fallback_chain(user, default) == chain


def test_fr_ca_falls_back_to_fr_then_to_en() -> None:
    texts = book(("custom", "en", 1), ("custom", "fr", 2))
    assert pick_template(texts, "custom", "fr-CA", "en").body == "custom/fr/v2"
    texts |= book(("custom", "fr-CA", 1))
    assert pick_template(texts, "custom", "fr-CA", "en").body == "custom/fr-CA/v1"
    assert pick_template(texts, "custom", "fr-BE", "en").body == "custom/fr/v2"
    assert pick_template(texts, "custom", "de", "en").body == "custom/en/v1"
    assert pick_template(texts, "custom", None, "en").body == "custom/en/v1"


def test_default_locale_comes_before_english() -> None:
    texts = book(("custom", "en", 1), ("custom", "fr", 1))
    assert pick_template(texts, "custom", "de", "fr").locale == "fr"
    assert pick_template(texts, "custom", None, "fr").locale == "fr"
    assert pick_template(texts, "custom", "de", "it").locale == "en"


def test_without_any_stored_text_the_seeded_english_goes_out() -> None:
    picked = pick_template({}, TemplateId.POST_EVENT_HIGH.value, "ja", "ja")
    assert (picked.locale, picked.version, picked.body) == (
        "en",
        1,
        ENGLISH[TemplateId.POST_EVENT_HIGH],
    )


# --- locale tags ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag", ["en", "fr", "fr-CA", "FR-ca", "zh-Hant-TW", "es-419", "sl-rozaj", "de-CH-1901", "haw"]
)
def test_bcp47_tags_are_accepted(tag: str) -> None:
    assert locale_problem(tag) is None


@pytest.mark.parametrize(
    "tag",
    [
        "",
        "f",
        "fr_CA",
        "français",
        "fr-",
        "-fr",
        "fr CA",
        "12",
        "en-US-x-private",
        "e\x00n",
        "a" * 40,
    ],
)
def test_anything_else_is_refused_naming_it(tag: str) -> None:
    problem = locale_problem(tag)
    assert problem is not None
    if len(tag) <= 35:
        assert "BCP 47" in problem


@pytest.mark.parametrize(
    ("tag", "canonical"),
    [("FR-ca", "fr-CA"), ("zh-hant-tw", "zh-Hant-TW"), ("ES-419", "es-419"), ("en", "en")],
)
def test_locales_are_kept_in_one_spelling(tag: str, canonical: str) -> None:
    assert canonical_locale(tag) == canonical


tags = st.from_regex(r"[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?", fullmatch=True)


@given(tags)
def test_canonical_spelling_is_stable_and_still_valid(tag: str) -> None:
    once = canonical_locale(tag)
    assert canonical_locale(once) == once
    assert locale_problem(once) is None
    assert once.lower() == tag.lower()


# --- the body check -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("Hello {name}", "unknown placeholder {name}"),
        ("Hello {event_date} {user_id}", "unknown placeholder {user_id}"),
        ("{0}", "unknown placeholder {0}"),
        ("{}", "unknown placeholder {}"),
        ("{event_date:%Y}", "unknown placeholder {event_date:%Y}"),
        ("{booking_id!r}", "unknown placeholder {booking_id!r}"),
        ("{event_date.year}", "unknown placeholder {event_date.year}"),
        ("{custom_message[0]}", "unknown placeholder {custom_message[0]}"),
        ("Hello {event_date", "broken braces"),
        ("Hello }", "broken braces"),
        ("} {event_date}", "broken braces"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 4001, "at most 4000"),
        ("nul\x00", "NUL"),
    ],
)
def test_a_body_that_cannot_render_is_refused_naming_the_culprit(body: str, named: str) -> None:
    problem = body_problem(body)
    assert problem is not None
    assert named in problem


@pytest.mark.parametrize(
    "body",
    [
        "Plain text, no placeholder.",
        "{event_date}{booking_id}{days_inactive}{custom_message}",
        "Braces written {{like this}} stay literal; {event_date}.",
        "Grüße 🎉 {custom_message}",
    ],
)
def test_bodies_with_known_placeholders_are_accepted(body: str) -> None:
    assert body_problem(body) is None
    assert render_body(body, VALUES)


segments = st.lists(
    st.one_of(
        st.sampled_from(VARIABLES).map(lambda v: ("var", v)),
        st.text(min_size=1, max_size=12).map(lambda t: ("text", t)),
    ),
    min_size=1,
    max_size=8,
)


@given(segments)
def test_any_body_of_text_and_known_placeholders_renders_exactly(
    parts: list[tuple[str, str]],
) -> None:
    """Literal text (braces doubled) and placeholders, in any order: accepted (when not
    blank), and rendered as the text with each placeholder replaced by its value."""
    body = "".join(
        "{" + v + "}" if kind == "var" else v.replace("{", "{{").replace("}", "}}")
        for kind, v in parts
    )
    expected = "".join(VALUES[v] if kind == "var" else v for kind, v in parts)
    if body.strip() and len(body) <= 4000 and "\x00" not in body:
        assert body_problem(body) is None
    assert render_body(body, VALUES) == expected


# Pieces an operator might type: braces, names known and not, specs, conversions.
typed = st.lists(st.sampled_from([*"{}ab_:!.0 ", *VARIABLES]), max_size=12).map("".join)


@given(typed)
def test_the_check_accepts_exactly_what_renders(body: str) -> None:
    """Whatever an operator types: the check and the renderer agree, so a body the
    admin API accepts can never fail at firing time, and one it refuses would have."""
    try:
        rendered: str | None = render_body(body, VALUES)
    except TemplateError:
        rendered = None
    if body.strip():
        assert (body_problem(body) is None) == (rendered is not None), body
    if rendered is not None:
        assert set(placeholders(body)) <= set(VARIABLES)


def test_values_are_inserted_literally_never_parsed() -> None:
    values = dict(VALUES, custom_message="{event_date} {{ } {0.__class__}")
    assert render_body("[{custom_message}]", values) == "[{event_date} {{ } {0.__class__}]"


# --- dates in the reader's language -------------------------------------------------


def followup(event_date: datetime | None) -> Followup:
    return Followup(
        id="f1",
        user_id="u1",
        conversation_id="c1",
        trigger_type=TriggerType.POST_EVENT,
        scheduled_at=NOW,
        event_date=event_date,
        booking_ids=("b1",),
    )


def test_a_french_date_in_french_text() -> None:
    assert long_date(date(2026, 11, 25), "fr") == "25 novembre 2026"
    assert long_date(date(2026, 11, 25), "en") == "November 25, 2026"
    assert long_date(date(2026, 11, 25), "de") == "25. November 2026"


def test_the_date_is_the_users_day_in_their_zone_and_language() -> None:
    # 23:30 UTC on the 25th is already the 26th in Paris.
    event = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    fr = StoredTemplate("post_event_high_emotion", "fr", 1, FRENCH[TemplateId.POST_EVENT_HIGH])
    ctx = FiringContext(timezone=ZoneInfo("Europe/Paris"), locale="fr")
    message = render(fr, followup(event), ctx, NOW)
    assert "votre événement du 26 novembre 2026 a été merveilleux" in message
    ctx_ny = FiringContext(timezone=ZoneInfo("America/New_York"), locale="fr-CA")
    assert "du 25 novembre 2026" in render(fr, followup(event), ctx_ny, NOW)


def test_an_english_text_for_a_user_without_one_in_their_language_has_an_english_date() -> None:
    en = StoredTemplate("post_event_high_emotion", "en", 1, "On {event_date}.")
    ctx = FiringContext(locale="de")
    assert render(en, followup(datetime(2026, 3, 5, 12, tzinfo=UTC)), ctx, NOW) == (
        "On March 5, 2026."
    )


def test_an_unknown_regional_locale_formats_with_its_language() -> None:
    assert long_date(date(2026, 1, 2), "fr-XY") == "2 janvier 2026"


def test_preview_values_fill_what_is_not_given() -> None:
    values = sample_values("fr", event_date=date(2026, 7, 14), days_inactive=12)
    assert values["event_date"] == "14 juillet 2026"
    assert values["days_inactive"] == "12"
    assert values["booking_id"] == "bk-1234"
    assert values["custom_message"].startswith("Your table")


# --- the seeded texts ---------------------------------------------------------------


def test_every_template_is_seeded_in_english_and_french_with_the_same_placeholders() -> None:
    assert set(ENGLISH) == set(FRENCH) == set(TemplateId)
    for template in TemplateId:
        en, fr = ENGLISH[template], FRENCH[template]
        assert body_problem(en) is None
        assert body_problem(fr) is None
        fields = [f for _, f, _, _ in Formatter().parse(en) if f]
        assert fields == [f for _, f, _, _ in Formatter().parse(fr) if f]
        assert en != fr or template is TemplateId.CUSTOM
    assert {loc for _, loc in SEEDS} == {"en", "fr"}
    assert all(t.version == 1 for t in seeded_book().values())


def test_the_french_texts_read_as_french() -> None:
    assert FRENCH[TemplateId.REENGAGEMENT_GENERAL].startswith("Bonjour\u00a0! Cela fait un moment")
    assert "({days_inactive} jours)" in FRENCH[TemplateId.REENGAGEMENT_GENERAL]
    assert "prendre de vos nouvelles" in FRENCH[TemplateId.EMOTION_CHECK_IN]


def test_default_locale_is_a_checked_setting_in_one_spelling() -> None:
    assert load_settings(default_locale="FR-ca").default_locale == "fr-CA"
    assert load_settings().default_locale == "en"
    with pytest.raises(ConfigError, match="DEFAULT_LOCALE"):
        load_settings(default_locale="fr_FR")
