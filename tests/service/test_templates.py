"""Templates as data through the use cases, on both stores: a French user gets the
French text with a French date, the row and followup.due say which version; an
edit is used by the next firing of another dispatcher; versions are kept; the
operations refuse what cannot render."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from consumer.adapters.memory import MemoryDeadLetters, MemoryDuePublisher, MemoryStore
from consumer.domain.policy import Policy, RetryPolicy
from consumer.domain.template_seeds import ENGLISH, FRENCH
from consumer.domain.template_text import StoredTemplate, TemplateId
from consumer.service.dispatch import Dispatcher
from consumer.service.ports import Store
from consumer.service.template_operations import BadTemplate, TemplateOperations, UnknownTemplate
from tests.integration.helpers import activity, confirmed, ms
from tests.service.conftest import T0, FixedClock, custom, ingestor, recs, seed

H = timedelta(hours=1)
NEUTRAL = TemplateId.POST_EVENT_NEUTRAL.value


def dispatcher(
    store: Store,
    publisher: MemoryDuePublisher,
    clock: FixedClock,
    owner: str,
    default_locale: str = "en",
) -> Dispatcher:
    policy = Policy(default_locale=default_locale)
    return Dispatcher(store, publisher, policy, RetryPolicy(), clock, owner=owner)


async def test_a_french_user_gets_the_french_text_with_a_french_date(
    store: Store, publisher: MemoryDuePublisher, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    # The event on 20 March 18:00 UTC; its follow-up due 24 h later.
    event = datetime(2026, 3, 20, 18, 0, tzinfo=UTC)
    events = [
        confirmed("u-fr", "b-fr", event, T0, timezone="Europe/Paris", locale="fr-CA"),
        confirmed("u-en", "b-en", event, T0),
    ]
    await ingestor(store, dead_letters, clock).process(recs(events))
    clock.now = event + 24 * H
    assert await dispatcher(store, publisher, clock, "d").dispatch_due() == 2
    by_user = {m.key: m.record for m in publisher.published}
    fr, en = by_user["u-fr"], by_user["u-en"]
    assert fr["template_id"] == NEUTRAL  # no scores: neutral
    assert fr["message"] == FRENCH[TemplateId.POST_EVENT_NEUTRAL].format(event_date="20 mars 2026")
    assert (fr["locale"], fr["template_version"]) == ("fr", 1)
    assert en["message"] == ENGLISH[TemplateId.POST_EVENT_NEUTRAL].format(
        event_date="March 20, 2026"
    )
    assert (en["locale"], en["template_version"]) == ("en", 1)
    row = await store.get_followup(str(fr["followup_id"]))
    assert row is not None
    assert (row.status, row.locale, row.template_version) == ("executed", "fr", 1)
    assert row.message_content == fr["message"]


async def test_an_edit_is_used_by_the_next_firing_of_another_dispatcher(
    store: Store, publisher: MemoryDuePublisher, clock: FixedClock
) -> None:
    first, second = await seed(store, [custom(1, T0), custom(2, T0 + H)], T0)
    one = dispatcher(store, publisher, clock, "instance-1")
    other = dispatcher(store, publisher, clock, "instance-2")
    assert await one.dispatch_due() == 1
    ops = TemplateOperations(store, Policy(), clock)
    added, created = await ops.put("custom", "en", "Note from us: {custom_message}")
    assert (added.version, created) == (2, True)
    clock.advance(H)
    assert await other.dispatch_due() == 1
    sent = {m.record["followup_id"]: m.record for m in publisher.published}
    assert (sent[first]["message"], sent[first]["template_version"]) == ("message 1", 1)
    assert (sent[second]["message"], sent[second]["template_version"]) == (
        "Note from us: message 2",
        2,
    )


async def test_a_user_locale_from_activity_with_a_regional_text_of_its_own(
    store: Store, publisher: MemoryDuePublisher, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    ops = TemplateOperations(store, Policy(), clock)
    await ops.put("custom", "fr-CA", "Bonjour de Montréal : {custom_message}")
    await ingestor(store, dead_letters, clock).process(
        recs([activity("user-1", ms(T0 - H), locale="fr-CA")])
    )
    await seed(store, [custom(1, T0)], T0)
    await dispatcher(store, publisher, clock, "d").dispatch_due()
    (sent,) = [m.record for m in publisher.published if m.record["trigger_type"] == "custom"]
    assert (sent["message"], sent["locale"]) == ("Bonjour de Montréal : message 1", "fr-CA")


async def test_default_locale_serves_users_without_a_text_in_their_language(
    store: Store, publisher: MemoryDuePublisher, dead_letters: MemoryDeadLetters, clock: FixedClock
) -> None:
    ops = TemplateOperations(store, Policy(), clock)
    await ops.put("custom", "fr", "FR: {custom_message}")
    await ingestor(store, dead_letters, clock).process(
        recs([activity("user-1", ms(T0 - H), locale="de-AT")])
    )
    await seed(store, [custom(1, T0)], T0)
    await dispatcher(store, publisher, clock, "d", default_locale="fr").dispatch_due()
    (sent,) = [m.record for m in publisher.published]
    assert (sent["message"], sent["locale"]) == ("FR: message 1", "fr")


async def test_versions_are_kept_and_an_unchanged_body_adds_none(
    store: Store, clock: FixedClock
) -> None:
    ops = TemplateOperations(store, Policy(), clock)
    body = "Checking in: {custom_message}"
    first, created = await ops.put("custom", "FR-ca", body)
    assert (first.locale, first.version, created) == ("fr-CA", 1, True)
    again, created = await ops.put("custom", "fr-CA", body)
    assert (again.version, created) == (1, False)
    clock.advance(H)
    second, _ = await ops.put("custom", "fr-CA", body + "!")
    assert second.version == 2
    versions = [(t.locale, t.version, t.body) for t in await ops.versions("custom")]
    assert versions == [
        ("en", 1, "{custom_message}"),
        ("fr", 1, "{custom_message}"),
        ("fr-CA", 2, body + "!"),
        ("fr-CA", 1, body),
    ]
    current = {(t.template_id, t.locale): t.version for t in await ops.current()}
    assert current[("custom", "fr-CA")] == 2
    assert len(current) == 2 * len(TemplateId) + 1


async def test_what_cannot_render_is_refused_and_nothing_is_stored(
    store: Store, clock: FixedClock
) -> None:
    ops = TemplateOperations(store, Policy(), clock)
    with pytest.raises(BadTemplate, match=r"unknown placeholder \{first_name\}"):
        await ops.put("custom", "en", "Hi {first_name}")
    with pytest.raises(BadTemplate, match="broken braces"):
        await ops.put("custom", "en", "Hi {custom_message")
    with pytest.raises(BadTemplate, match="BCP 47"):
        await ops.put("custom", "en_GB", "Hi")
    with pytest.raises(UnknownTemplate, match="no template 'welcome'"):
        await ops.put("welcome", "en", "Hi")
    with pytest.raises(UnknownTemplate):
        await ops.versions("welcome")
    assert [t.version for t in await ops.versions("custom")] == [1, 1]


async def test_preview_renders_the_pick_for_a_locale_or_a_body_to_try(
    store: Store, clock: FixedClock
) -> None:
    ops = TemplateOperations(store, Policy(), clock)
    shown = await ops.preview(
        TemplateId.POST_EVENT_HIGH.value,
        locale="fr-CA",
        event_date=datetime(2026, 7, 14).date(),
    )
    assert (shown.locale, shown.version) == ("fr", 1)
    assert "votre événement du 14 juillet 2026 a été merveilleux" in shown.message
    tried = await ops.preview("custom", body="[{custom_message}] {days_inactive}", days_inactive=3)
    assert tried.version is None
    assert tried.message.endswith("] 3")
    assert [t.version for t in await ops.versions("custom")] == [1, 1]


async def test_a_row_edited_by_hand_past_the_check_falls_back_to_the_seeded_text(
    memory_store: MemoryStore,
    publisher: MemoryDuePublisher,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing the API accepts can fail to render; a body written straight into the
    table might: the follow-up still goes out, with the seeded text, and the log
    names the row."""
    memory_store._tables.templates[("custom", "en")].append(
        StoredTemplate("custom", "en", 2, "Hi {first_name}")
    )
    await seed(memory_store, [custom(1, T0)], T0)
    with caplog.at_level(logging.ERROR, logger="consumer.service.dispatch"):
        assert await dispatcher(memory_store, publisher, clock, "d").dispatch_due() == 1
    (sent,) = [m.record for m in publisher.published]
    assert (sent["message"], sent["template_version"]) == ("message 1", 1)
    (line,) = caplog.records
    assert line.getMessage() == "stored template cannot be rendered; the seeded text is used"
    assert (line.template_id, line.version) == ("custom", 2)  # type: ignore[attr-defined]
