"""produce-sample's story (entrypoints.sample): pure, so no services and no clock.

The story must be what the issue asks for (a booking whose follow-up falls due
`due_in` from now, a few emotion scores, some activity), valid on the wire in both
formats, and the consumer's own rules must schedule its follow-up exactly when the
command says."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer.adapters.codec import Codec
from consumer.adapters.wire import parse_event
from consumer.domain.events import EventKind
from consumer.domain.model import Status, TriggerType
from consumer.domain.policy import Policy
from consumer.domain.rules import decide, emotion_band
from consumer.domain.templates import FiringContext, TemplateId, choose_template
from consumer.domain.working_set import WorkingSet
from consumer.entrypoints import cli
from consumer.entrypoints.sample import (
    DUE_IN_MAX,
    Sent,
    Story,
    build_story,
    format_sent,
    in_words,
    parse_duration,
)

NOW = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
NOW_MS = NOW.replace(microsecond=123000)
DAY = timedelta(hours=24)
CODEC = Codec.load()


def story(
    due_in: timedelta = timedelta(seconds=60), delay: timedelta = DAY, user: str = "u-1"
) -> Story:
    return build_story(now=NOW, user_id=user, due_in=due_in, followup_delay=delay, suffix="abc123")


# --- the story ----------------------------------------------------------------------------


def test_a_booking_a_few_scores_and_some_activity_for_one_user() -> None:
    s = story()
    kinds = [e.kind for e in s.events]
    assert kinds == [
        EventKind.BOOKING_CONFIRMED,
        EventKind.USER_ACTIVITY,
        EventKind.EMOTION_SCORED,
        EventKind.EMOTION_SCORED,
        EventKind.EMOTION_SCORED,
        EventKind.USER_ACTIVITY,
    ]
    assert {e.key for e in s.events} == {"u-1"}
    assert {e.record["user_id"] for e in s.events} == {"u-1"}
    assert len({e.record["event_id"] for e in s.events}) == len(s.events)
    booking = s.events[0].record
    assert booking["booking_id"] == s.booking_id
    assert booking["conversation_id"] == s.conversation_id
    scores = [e.record for e in s.events if e.kind is EventKind.EMOTION_SCORED]
    assert {r["conversation_id"] for r in scores} == {s.conversation_id}
    assert all(0 <= r["score"] <= 1 for r in scores)


@pytest.mark.parametrize(
    ("due_in", "delay"),
    [
        (timedelta(seconds=60), DAY),
        (timedelta(seconds=3), DAY),
        (timedelta(0), DAY),
        (timedelta(seconds=60), timedelta(0)),  # FOLLOWUP_DELAY_HOURS=0
        (timedelta(days=3), DAY),  # the event is still to come
        (timedelta(seconds=1.5), timedelta(hours=0.5)),
    ],
)
def test_the_follow_up_falls_due_due_in_from_now(due_in: timedelta, delay: timedelta) -> None:
    s = story(due_in, delay)
    booking = s.events[0].record
    assert s.followup_due_at == NOW_MS + due_in
    assert booking["event_date"] + delay == s.followup_due_at
    # Booked a week before the event, and never in the future.
    assert booking["occurred_at"] <= min(booking["event_date"], NOW) - timedelta(days=7)


def test_times_happened_in_order_and_fit_the_wire() -> None:
    s = story()
    times = [e.occurred_at for e in s.events]
    assert times == sorted(times)
    assert all(t <= NOW for t in times)
    for e in s.events:
        for value in e.record.values():
            if isinstance(value, datetime):
                assert value.tzinfo is not None
                assert value.microsecond % 1000 == 0  # whole milliseconds


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_every_event_passes_the_consumers_input_rules(fmt: str) -> None:
    for e in story().events:
        value = (CODEC.encode_json if fmt == "json" else CODEC.encode_avro)(e.kind, e.record)
        event = parse_event(e.kind, value, CODEC)  # raises BadInput on anything wrong
        assert event.event_id == e.record["event_id"]


def test_the_consumers_rules_schedule_it_when_the_command_says() -> None:
    """Through the domain's own `decide`: one post-event follow-up, due exactly at
    `followup_due_at`, whose template at firing is the happy one; and a re-engagement."""
    policy = Policy()
    s = story()
    ws = WorkingSet()
    for e in s.events:
        event = parse_event(e.kind, CODEC.encode_json(e.kind, e.record), CODEC)
        ws.apply(decide(ws, event, policy, NOW))
    by_trigger = {f.trigger_type: f for f in ws.followups.values()}
    assert set(by_trigger) == {TriggerType.POST_EVENT, TriggerType.RE_ENGAGEMENT}
    post = by_trigger[TriggerType.POST_EVENT]
    assert post.status is Status.PENDING
    assert post.scheduled_at == s.followup_due_at
    assert post.conversation_id == s.conversation_id
    scores = ws.conversations[s.conversation_id].scores
    assert emotion_band(scores) == "high"
    ctx = FiringContext(scores=scores, timezone=policy.default_timezone, has_live_booking=True)
    assert choose_template(post, ctx) is TemplateId.POST_EVENT_HIGH


# --- --due-in --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60", timedelta(seconds=60)),
        ("60s", timedelta(seconds=60)),
        ("1.5s", timedelta(seconds=1.5)),
        ("250ms", timedelta(milliseconds=250)),
        ("5m", timedelta(minutes=5)),
        ("5min", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        (" 3 s ", timedelta(seconds=3)),
        ("0s", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "s", "-5s", "5 years", "1e3", "five", "31d", "5s5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|at most"):
        parse_duration(text)
    assert parse_duration(f"{DUE_IN_MAX.days}d") == DUE_IN_MAX


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli._parser().parse_args(["produce-sample"])
    assert (args.user, args.due_in, args.format) == (None, timedelta(seconds=60), "json")
    args = cli._parser().parse_args(
        ["produce-sample", "--user", "ann", "--due-in", "5s", "--format", "avro"]
    )
    assert (args.user, args.due_in, args.format) == ("ann", timedelta(seconds=5), "avro")
    for bad in (["--due-in", "soon"], ["--format", "xml"], ["--user", ""]):
        with pytest.raises(SystemExit) as exc:
            cli._parser().parse_args(["produce-sample", *bad])
        assert exc.value.code == 2
    assert "produce-sample" in capsys.readouterr().err


# --- what it prints ----------------------------------------------------------------------------


def sent_of(s: Story) -> list[Sent]:
    return [
        Sent(f"topic.{e.kind}", 1, n, e.key, CODEC.encode_json(e.kind, e.record).decode())
        for n, e in enumerate(s.events)
    ]


def test_it_prints_each_event_and_when_the_follow_up_fires() -> None:
    s = story()
    out = format_sent(
        s,
        sent_of(s),
        now=NOW,
        local=timezone(timedelta(hours=2), "CEST"),
        bootstrap="127.0.0.1:19092",
        value_format="JSON",
        delay_hours=24,
        due_topic="followup.due",
    )
    assert "Sent 6 events (JSON) for user u-1 to Kafka at 127.0.0.1:19092" in out
    assert "1. topic.booking_confirmed [partition 1, offset 0], key u-1:" in out
    for e in s.events:  # the JSON of each event, on its own line, as sent
        line = CODEC.encode_json(e.kind, e.record).decode()
        assert f"\n   {line}\n" in out
        assert json.loads(line)["event_id"] == e.record["event_id"]
    assert "falls due at 14:01:00 CEST on Fri 01 May 2026, in 60 s" in out
    assert "followup-consumer followups list --user u-1" in out
    assert "followup-consumer tail" in out


def test_a_hostile_user_id_is_printed_escaped() -> None:
    s = story(user="evil\x1b[2J\r\nuser")
    out = format_sent(
        s,
        sent_of(s),
        now=NOW,
        local=UTC,
        bootstrap="k:9092",
        value_format="JSON",
        delay_hours=24,
        due_topic="followup.due",
    )
    assert "\x1b" not in out
    assert "\r" not in out
    assert "evil\\x1b[2J\\r\\nuser" in out
    assert all(line.isprintable() for line in out.splitlines())


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (-3, "now"),
        (0, "now"),
        (0.4, "now"),
        (1, "in 1 s"),
        (60, "in 60 s"),
        (119, "in 119 s"),
        (120, "in 2 min"),
        (3600, "in 60 min"),
        (7200, "in 2 h"),
        (7200 + 5 * 60, "in 2 h 5 min"),
    ],
)
def test_in_words(seconds: float, words: str) -> None:
    assert in_words(timedelta(seconds=seconds)) == words


def test_argparse_types_are_argparse_errors() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli._duration("soon")
    with pytest.raises(argparse.ArgumentTypeError):
        cli._seconds("0s")
    with pytest.raises(argparse.ArgumentTypeError):
        cli._count("0")
    assert cli._seconds("2m") == 120.0
    assert cli._count("3") == 3


def test_two_stories_share_no_id() -> None:
    a = build_story(now=NOW, user_id="u", due_in=DAY, followup_delay=DAY, suffix="aaaaaa")
    b = build_story(now=NOW, user_id="u", due_in=DAY, followup_delay=DAY, suffix="bbbbbb")
    ids_a = {e.record["event_id"] for e in a.events} | {a.booking_id, a.conversation_id}
    ids_b = {e.record["event_id"] for e in b.events} | {b.booking_id, b.conversation_id}
    assert not ids_a & ids_b


def test_a_locale_puts_the_customer_in_it() -> None:
    french = build_story(
        now=NOW, user_id="u", due_in=DAY, followup_delay=DAY, suffix="abc123", locale="fr"
    )
    booking = french.events[0]
    assert booking.kind is EventKind.BOOKING_CONFIRMED
    event = parse_event(booking.kind, CODEC.encode_avro(booking.kind, booking.record), CODEC)
    assert getattr(event, "locale", None) == "fr"
    assert "locale" not in story().events[0].record  # none unless asked
    args = cli._parser().parse_args(["produce-sample", "--locale", "FR-ca"])
    assert args.locale == "fr-CA"
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["produce-sample", "--locale", "fr_CA"])
