"""consumer.adapters.wire: bytes to domain events, and every contract rule as BadInput."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from consumer.adapters.codec import AVRO_MAGIC, Codec
from consumer.adapters.wire import (
    BadInput,
    WireDecoder,
    event_from_record,
    parse_event,
    validated_event,
)
from consumer.adapters.wire_fast import fast_event
from consumer.domain.events import (
    BookingCancelled,
    BookingConfirmed,
    EmotionScored,
    EventKind,
    UserActivity,
)

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
T0 = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
T1 = datetime(2024, 6, 2, 18, 0, tzinfo=UTC)

VALID: dict[EventKind, dict[str, Any]] = {
    EventKind.BOOKING_CONFIRMED: {
        "event_id": "e-1",
        "occurred_at": T0,
        "user_id": "u-1",
        "booking_id": "b-1",
        "event_date": T1,
    },
    EventKind.BOOKING_CANCELLED: {
        "event_id": "e-2",
        "occurred_at": T0,
        "user_id": "u-1",
        "booking_id": "b-1",
    },
    EventKind.EMOTION_SCORED: {
        "event_id": "e-3",
        "occurred_at": T0,
        "user_id": "u-1",
        "conversation_id": "c-1",
        "message_id": "m-1",
        "score": 0.5,
    },
    EventKind.USER_ACTIVITY: {
        "event_id": "e-4",
        "occurred_at": T0,
        "user_id": "u-1",
        "activity_type": "login",
    },
}
ID_FIELDS: dict[EventKind, tuple[str, ...]] = {
    EventKind.BOOKING_CONFIRMED: ("event_id", "user_id", "booking_id", "conversation_id"),
    EventKind.BOOKING_CANCELLED: ("event_id", "user_id", "booking_id"),
    EventKind.EMOTION_SCORED: ("event_id", "user_id", "conversation_id", "message_id"),
    EventKind.USER_ACTIVITY: ("event_id", "user_id", "conversation_id"),
}
TIMESTAMP_FIELDS: dict[EventKind, tuple[str, ...]] = {
    EventKind.BOOKING_CONFIRMED: ("occurred_at", "event_date"),
    EventKind.BOOKING_CANCELLED: ("occurred_at",),
    EventKind.EMOTION_SCORED: ("occurred_at",),
    EventKind.USER_ACTIVITY: ("occurred_at",),
}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.load()


def encode(codec: Codec, kind: EventKind, record: dict[str, Any], fmt: str) -> bytes:
    if fmt == "avro":
        return codec.encode_avro(kind.value, record)
    # Written by hand, as a producer would, so the test does not lean on encode_json.
    return json.dumps(
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in record.items()}
    ).encode()


def bad(codec: Codec, kind: EventKind, changes: dict[str, Any], fmt: str = "json") -> BadInput:
    value = encode(codec, kind, {**VALID[kind], **changes}, fmt)
    with pytest.raises(BadInput) as info:
        parse_event(kind, value, codec)
    return info.value


def bad_record(kind: EventKind, changes: dict[str, Any]) -> BadInput:
    with pytest.raises(BadInput) as info:
        event_from_record(kind, {**VALID[kind], **changes})
    return info.value


# --- valid events ------------------------------------------------------------------------

FORMATS = pytest.mark.parametrize("fmt", ["avro", "json"])


@FORMATS
def test_booking_confirmed_defaults_conversation_id(codec: Codec, fmt: str) -> None:
    kind = EventKind.BOOKING_CONFIRMED
    event = parse_event(kind, encode(codec, kind, VALID[kind], fmt), codec)
    assert event == BookingConfirmed(
        event_id="e-1",
        occurred_at=T0,
        user_id="u-1",
        booking_id="b-1",
        event_date=T1,
        conversation_id="booking_b-1",
        timezone=None,
    )


@FORMATS
def test_booking_confirmed_with_all_fields(codec: Codec, fmt: str) -> None:
    kind = EventKind.BOOKING_CONFIRMED
    record = {**VALID[kind], "conversation_id": "c-9", "timezone": "America/New_York"}
    event = parse_event(kind, encode(codec, kind, record, fmt), codec)
    assert isinstance(event, BookingConfirmed)
    assert event.conversation_id == "c-9"
    assert event.timezone == "America/New_York"


@FORMATS
def test_booking_cancelled(codec: Codec, fmt: str) -> None:
    kind = EventKind.BOOKING_CANCELLED
    record = {**VALID[kind], "reason": "weather"}
    event = parse_event(kind, encode(codec, kind, record, fmt), codec)
    assert event == BookingCancelled(
        event_id="e-2", occurred_at=T0, user_id="u-1", booking_id="b-1", reason="weather"
    )


@FORMATS
def test_emotion_scored(codec: Codec, fmt: str) -> None:
    kind = EventKind.EMOTION_SCORED
    record = {**VALID[kind], "label": "joy"}
    event = parse_event(kind, encode(codec, kind, record, fmt), codec)
    assert event == EmotionScored(
        event_id="e-3",
        occurred_at=T0,
        user_id="u-1",
        conversation_id="c-1",
        message_id="m-1",
        score=0.5,
        label="joy",
    )


@FORMATS
def test_user_activity(codec: Codec, fmt: str) -> None:
    kind = EventKind.USER_ACTIVITY
    event = parse_event(kind, encode(codec, kind, VALID[kind], fmt), codec)
    assert event == UserActivity(
        event_id="e-4", occurred_at=T0, user_id="u-1", activity_type="login", conversation_id=None
    )


def test_v1_booking_confirmed_gets_default_conversation_id(codec: Codec) -> None:
    v1 = json.loads((SCHEMAS_DIR / "history" / "booking_confirmed.v1.avsc").read_text())
    parsed = parse_schema(v1, {})
    body = BytesIO()
    schemaless_writer(body, parsed, VALID[EventKind.BOOKING_CONFIRMED])
    v1_fingerprint = bytes.fromhex("dec41bbd35ffed95")  # CRC-64-AVRO of v1's canonical form
    event = parse_event(
        EventKind.BOOKING_CONFIRMED, AVRO_MAGIC + v1_fingerprint + body.getvalue(), codec
    )
    assert isinstance(event, BookingConfirmed)
    assert event.conversation_id == "booking_b-1"
    assert event.timezone is None


def test_timestamps_end_up_in_utc(codec: Codec) -> None:
    kind = EventKind.USER_ACTIVITY
    plus2 = timezone(timedelta(hours=2))
    event = parse_event(
        kind,
        encode(codec, kind, {**VALID[kind], "occurred_at": T0.astimezone(plus2)}, "json"),
        codec,
    )
    assert event.occurred_at == T0
    assert event.occurred_at.tzinfo is UTC
    direct = event_from_record(kind, {**VALID[kind], "occurred_at": T0.astimezone(plus2)})
    assert direct.occurred_at.tzinfo is UTC


@pytest.mark.parametrize("score", [0.0, 1.0, 0, 1])
def test_score_bounds_are_inclusive(codec: Codec, score: float) -> None:
    kind = EventKind.EMOTION_SCORED
    event = parse_event(kind, encode(codec, kind, {**VALID[kind], "score": score}, "json"), codec)
    assert isinstance(event, EmotionScored)
    assert event.score == score


@pytest.mark.parametrize(
    "when",
    [datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)],
)
def test_date_window_bounds_are_accepted(codec: Codec, when: datetime) -> None:
    kind = EventKind.BOOKING_CONFIRMED
    record = {**VALID[kind], "occurred_at": when, "event_date": when}
    assert parse_event(kind, encode(codec, kind, record, "avro"), codec).occurred_at == when


def test_longest_allowed_values_pass(codec: Codec) -> None:
    kind = EventKind.USER_ACTIVITY
    record = {**VALID[kind], "user_id": "u" * 255, "activity_type": "a" * 100}
    assert parse_event(kind, encode(codec, kind, record, "json"), codec).user_id == "u" * 255
    cancelled = EventKind.BOOKING_CANCELLED
    record = {**VALID[cancelled], "reason": "r" * 1000}
    event = parse_event(cancelled, encode(codec, cancelled, record, "json"), codec)
    assert isinstance(event, BookingCancelled)
    assert event.reason == "r" * 1000


def test_ids_are_kept_verbatim(codec: Codec) -> None:
    kind = EventKind.USER_ACTIVITY
    record = {**VALID[kind], "user_id": " u-1 "}
    assert parse_event(kind, encode(codec, kind, record, "json"), codec).user_id == " u-1 "


# --- decode and schema errors ------------------------------------------------------------


@pytest.mark.parametrize("kind", list(EventKind))
def test_tombstone(codec: Codec, kind: EventKind) -> None:
    with pytest.raises(BadInput) as info:
        parse_event(kind, None, codec)
    assert info.value.error_type == "decode_error"
    assert "tombstone" in info.value.message


@pytest.mark.parametrize("value", [b"", b"garbage", b"\xc3\x01\x00", b"[1, 2]"])
def test_undecodable_values(codec: Codec, value: bytes) -> None:
    with pytest.raises(BadInput) as info:
        parse_event(EventKind.USER_ACTIVITY, value, codec)
    assert info.value.error_type == "decode_error"
    assert info.value.message.startswith("user_activity: ")


def test_truncated_avro(codec: Codec) -> None:
    kind = EventKind.BOOKING_CONFIRMED
    value = encode(codec, kind, VALID[kind], "avro")
    with pytest.raises(BadInput) as info:
        parse_event(kind, value[:-3], codec)
    assert info.value.error_type == "decode_error"


def test_value_from_another_topic_is_a_schema_error(codec: Codec) -> None:
    value = encode(codec, EventKind.USER_ACTIVITY, VALID[EventKind.USER_ACTIVITY], "avro")
    with pytest.raises(BadInput) as info:
        parse_event(EventKind.BOOKING_CONFIRMED, value, codec)
    assert info.value.error_type == "schema_error"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"score": "0.5"}, "score"),
        ({"user_id": 42}, "user_id"),
        ({"occurred_at": "2024-05-01T12:30:00"}, "occurred_at"),
        ({"message_id": None}, "message_id"),
    ],
)
def test_json_schema_violations(codec: Codec, changes: dict[str, Any], field: str) -> None:
    err = bad(codec, EventKind.EMOTION_SCORED, changes)
    assert err.error_type == "schema_error"
    assert repr(field) in err.message


def test_missing_field_is_a_schema_error(codec: Codec) -> None:
    kind = EventKind.BOOKING_CONFIRMED
    record = {k: v for k, v in VALID[kind].items() if k != "event_date"}
    with pytest.raises(BadInput) as info:
        parse_event(kind, encode(codec, kind, record, "json"), codec)
    assert info.value.error_type == "schema_error"
    assert "'event_date'" in info.value.message


def test_naive_timestamp_in_a_record_is_refused() -> None:
    err = bad_record(EventKind.USER_ACTIVITY, {"occurred_at": datetime(2024, 5, 1)})
    assert err.error_type == "schema_error"
    assert "'occurred_at'" in err.message


def test_wrong_python_type_in_a_record_is_refused() -> None:
    err = bad_record(EventKind.EMOTION_SCORED, {"score": "0.5"})
    assert err.error_type == "schema_error"
    assert "'score'" in err.message


# --- rule violations -----------------------------------------------------------------------

ID_CASES = [
    pytest.param("", "empty", id="empty"),
    pytest.param("   ", "blank", id="blank"),
    pytest.param("\t\n", "blank", id="whitespace"),
    pytest.param("x" * 256, "255", id="too-long"),
    pytest.param("a\x00b", "NUL", id="nul"),
]


@pytest.mark.parametrize(("raw", "fragment"), ID_CASES)
@pytest.mark.parametrize(
    ("kind", "field"), [(kind, field) for kind, fields in ID_FIELDS.items() for field in fields]
)
@FORMATS
def test_id_rules(
    codec: Codec, kind: EventKind, field: str, raw: str, fragment: str, fmt: str
) -> None:
    err = bad(codec, kind, {field: raw}, fmt)
    assert err.error_type == "rule_violation"
    assert repr(field) in err.message
    assert fragment in err.message


@pytest.mark.parametrize(
    "score",
    [-0.01, 1.01, 2.0, -1e300],
)
@FORMATS
def test_score_out_of_range(codec: Codec, score: float, fmt: str) -> None:
    err = bad(codec, EventKind.EMOTION_SCORED, {"score": score}, fmt)
    assert err.error_type == "rule_violation"
    assert "'score'" in err.message


@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf")])
def test_score_not_finite(codec: Codec, score: float) -> None:
    # Avro can carry NaN/inf (JSON cannot); write it without the codec's checks.
    schema = json.loads((SCHEMAS_DIR / "message_emotion_scored.avsc").read_text())
    body = BytesIO()
    schemaless_writer(
        body, parse_schema(schema, {}), {**VALID[EventKind.EMOTION_SCORED], "score": score}
    )
    value = AVRO_MAGIC + codec.fingerprint("message_emotion_scored") + body.getvalue()
    with pytest.raises(BadInput) as info:
        parse_event(EventKind.EMOTION_SCORED, value, codec)
    assert info.value.error_type == "rule_violation"
    assert "'score'" in info.value.message
    assert "finite" in info.value.message
    assert bad_record(EventKind.EMOTION_SCORED, {"score": score}).error_type == "rule_violation"


ABSURD = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    datetime(2100, 1, 1, 0, 0, 0, 1000, tzinfo=UTC),
    datetime(9999, 1, 1, tzinfo=UTC),
]


@pytest.mark.parametrize("when", ABSURD, ids=str)
@pytest.mark.parametrize(
    ("kind", "field"),
    [(kind, field) for kind, fields in TIMESTAMP_FIELDS.items() for field in fields],
)
@FORMATS
def test_absurd_dates(codec: Codec, kind: EventKind, field: str, when: datetime, fmt: str) -> None:
    err = bad(codec, kind, {field: when}, fmt)
    assert err.error_type == "rule_violation"
    assert repr(field) in err.message


def test_absurd_date_with_offset_is_judged_in_utc(codec: Codec) -> None:
    # 2000-01-01T01:00+02:00 is 1999-12-31T23:00Z: too early.
    when = datetime(2000, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert bad(codec, EventKind.USER_ACTIVITY, {"occurred_at": when}).error_type == "rule_violation"


@pytest.mark.parametrize(
    "zone",
    [
        "Mars/Olympus_Mons",
        "europe/berlin",
        "",
        " UTC",
        "localtime",
        "posix/Europe/Berlin",
        "../etc/passwd",
        "Europe/Berlin\x00",
    ],
)
@FORMATS
def test_invalid_timezone(codec: Codec, zone: str, fmt: str) -> None:
    err = bad(codec, EventKind.BOOKING_CONFIRMED, {"timezone": zone}, fmt)
    assert err.error_type == "rule_violation"
    assert "'timezone'" in err.message


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "UTC", "Asia/Kolkata", "America/Argentina/Buenos_Aires"]
)
def test_valid_timezones(codec: Codec, zone: str) -> None:
    kind = EventKind.BOOKING_CONFIRMED
    event = parse_event(kind, encode(codec, kind, {**VALID[kind], "timezone": zone}, "json"), codec)
    assert isinstance(event, BookingConfirmed)
    assert event.timezone == zone


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [("", "blank"), ("  ", "blank"), ("a" * 101, "100"), ("log\x00in", "NUL")],
)
def test_activity_type_rules(codec: Codec, raw: str, fragment: str) -> None:
    err = bad(codec, EventKind.USER_ACTIVITY, {"activity_type": raw})
    assert err.error_type == "rule_violation"
    assert "'activity_type'" in err.message
    assert fragment in err.message


@pytest.mark.parametrize(
    ("kind", "field"),
    [(EventKind.BOOKING_CANCELLED, "reason"), (EventKind.EMOTION_SCORED, "label")],
)
@pytest.mark.parametrize(("raw", "fragment"), [("x" * 1001, "1000"), ("a\x00", "NUL")])
def test_free_text_rules(
    codec: Codec, kind: EventKind, field: str, raw: str, fragment: str
) -> None:
    err = bad(codec, kind, {field: raw}, "avro")
    assert err.error_type == "rule_violation"
    assert repr(field) in err.message
    assert fragment in err.message


def test_message_lists_every_broken_field(codec: Codec) -> None:
    err = bad(codec, EventKind.EMOTION_SCORED, {"score": 3.0, "message_id": ""})
    assert "'score'" in err.message
    assert "'message_id'" in err.message
    assert err.message.startswith("message_emotion_scored: ")


def test_bad_input_str_names_type_and_message() -> None:
    err = BadInput("rule_violation", "user_activity: field 'user_id': must not be empty")
    assert str(err) == "rule_violation: user_activity: field 'user_id': must not be empty"
    assert err.error_type == "rule_violation"
    assert err.message == "user_activity: field 'user_id': must not be empty"


def test_a_timestamp_with_no_utc_instant_is_refused_not_raised() -> None:
    when = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    err = bad_record(EventKind.USER_ACTIVITY, {"occurred_at": when})
    assert err.error_type == "rule_violation"
    assert "'occurred_at'" in err.message


def test_the_decoder_turns_an_unexpected_error_into_a_dead_letter(
    codec: Codec, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug of ours (here: simulated) must not stop the partition.
    def broken(*_: Any) -> dict[str, Any]:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Codec, "decode", broken)
    with pytest.raises(BadInput) as info:
        WireDecoder(codec)(EventKind.USER_ACTIVITY, b"{}")
    assert info.value.error_type == "decode_error"
    assert "RuntimeError" in info.value.message
    assert "simulated bug" in info.value.message
    assert "Traceback" in caplog.text


LOCALE_KINDS = pytest.mark.parametrize(
    "kind", [EventKind.BOOKING_CONFIRMED, EventKind.USER_ACTIVITY], ids=str
)


@LOCALE_KINDS
@pytest.mark.parametrize(
    ("given", "kept"), [("fr", "fr"), ("FR-ca", "fr-CA"), ("es-419", "es-419")]
)
@FORMATS
def test_locale_is_kept_in_its_canonical_spelling(
    codec: Codec, kind: EventKind, given: str, kept: str, fmt: str
) -> None:
    event = parse_event(kind, encode(codec, kind, {**VALID[kind], "locale": given}, fmt), codec)
    assert isinstance(event, BookingConfirmed | UserActivity)
    assert event.locale == kept


@LOCALE_KINDS
@pytest.mark.parametrize("locale", ["fr_CA", "", "français", "en-US-x-twain", "e" * 40])
@FORMATS
def test_a_bad_locale_is_a_dead_letter_like_a_bad_zone(
    codec: Codec, kind: EventKind, locale: str, fmt: str
) -> None:
    err = bad(codec, kind, {"locale": locale}, fmt)
    assert err.error_type == "rule_violation"
    assert "'locale'" in err.message


@LOCALE_KINDS
def test_no_locale_is_none(codec: Codec, kind: EventKind) -> None:
    event = parse_event(kind, encode(codec, kind, VALID[kind], "avro"), codec)
    assert isinstance(event, BookingConfirmed | UserActivity)
    assert event.locale is None


# --- the fast path declines what the rules refuse (pydantic then names it) ----------

_HOSTILE: list[tuple[EventKind, str, Any]] = [
    *[(EventKind.EMOTION_SCORED, "score", v) for v in (-1e-9, 1.0000001, math.nan, math.inf)],
    *[(EventKind.EMOTION_SCORED, "score", v) for v in (True, "0.5", None)],
    *[(k, f, v) for k, fs in ID_FIELDS.items() for f in fs for v in ("", " ", "a\x00b", "x" * 256)],
    *[(k, f, T0.replace(tzinfo=None)) for k, fs in TIMESTAMP_FIELDS.items() for f in fs],
    *[(k, f, datetime(1999, 12, 31, tzinfo=UTC)) for k, fs in TIMESTAMP_FIELDS.items() for f in fs],
    *[(k, f, "2024-05-01T12:30:00Z") for k, fs in TIMESTAMP_FIELDS.items() for f in fs],
    (EventKind.BOOKING_CONFIRMED, "timezone", "Mars/Base"),
    (EventKind.BOOKING_CONFIRMED, "timezone", "localtime"),
    (EventKind.BOOKING_CONFIRMED, "locale", "not a tag"),
    (EventKind.USER_ACTIVITY, "locale", "fr_FR!"),
    (EventKind.USER_ACTIVITY, "activity_type", " "),
    (EventKind.USER_ACTIVITY, "activity_type", "x" * 101),
    (EventKind.BOOKING_CANCELLED, "reason", "a\ud800b"),
    (EventKind.EMOTION_SCORED, "label", "x" * 1001),
]


@pytest.mark.parametrize(("kind", "field", "value"), _HOSTILE)
def test_the_fast_path_leaves_every_refused_value_to_the_model(
    kind: EventKind, field: str, value: Any
) -> None:
    record = {**VALID[kind], field: value}
    assert fast_event(kind, record) is None
    with pytest.raises(BadInput):
        validated_event(kind, record)


@pytest.mark.parametrize("kind", list(EventKind))
def test_the_fast_path_takes_a_plain_record(kind: EventKind) -> None:
    taken = fast_event(kind, dict(VALID[kind]))
    assert taken is not None
    assert taken == validated_event(kind, VALID[kind])


def test_the_fast_path_gives_utc_and_canonical_locales_as_the_model_does() -> None:
    plus2 = timezone(timedelta(hours=2))
    record = {
        **VALID[EventKind.BOOKING_CONFIRMED],
        "occurred_at": T0.astimezone(plus2),
        "event_date": T1.astimezone(plus2),
        "timezone": "Europe/Paris",
        "locale": "FR-ca",
    }
    taken = fast_event(EventKind.BOOKING_CONFIRMED, record)
    assert isinstance(taken, BookingConfirmed)
    assert repr(taken) == repr(validated_event(EventKind.BOOKING_CONFIRMED, record))
    assert taken.occurred_at.tzinfo is UTC
    assert taken.event_date.tzinfo is UTC
    assert taken.locale == "fr-CA"
