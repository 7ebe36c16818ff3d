"""tail's lines (entrypoints.tail_format): readable, complete, and safe whatever the
records hold: nothing a producer wrote reaches the terminal as a control character."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from consumer.adapters.codec import AVRO_CONTENT_TYPE, JSON_CONTENT_TYPE, Codec
from consumer.entrypoints import cli
from consumer.entrypoints.tail_format import (
    MESSAGE_LINES_MAX,
    TEXT_MAX,
    Record,
    decode_due,
    format_dead,
    format_due,
    in_order,
    message_lines,
    record_json,
    show_bytes,
)
from consumer.entrypoints.terminal import printable, shows_as_is

CODEC = Codec.load()
T = datetime(2026, 5, 1, 12, 0, 1, 250000, tzinfo=UTC)
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\r\x00\u202e\x9b"


def due_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "f-1",
        "followup_id": "f-1",
        "user_id": "user-1",
        "conversation_id": "conv-1",
        "trigger_type": "post_event",
        "template_id": "post_event_high_emotion",
        "message": "Hi! 🎉 We hope your event was wonderful!\n\nTell us how it went.",
        "scheduled_at": T - timedelta(seconds=2),
        "emitted_at": T,
        "booking_id": "bk-1",
        "attempt": 1,
    }
    event.update(overrides)
    return event


def record(
    value: bytes | None,
    *,
    key: bytes | None = b"user-1",
    headers: tuple[tuple[str, bytes | None], ...] = (),
    topic: str = "followup.due",
) -> Record:
    return Record(topic, 2, 17, int(T.timestamp() * 1000), key, value, headers)


def shown_due(r: Record) -> str:
    event, problem = decode_due(CODEC, r)
    return format_due(r, event, problem, UTC)


def safe(text: str) -> None:
    """Every line printable (or a space): no escape sequence, carriage return, NUL,
    bidi override..."""
    for line in text.splitlines():
        assert all(shows_as_is(c) for c in line), repr(line)
    assert "\r" not in text


# --- followup.due -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_a_follow_up_decoded_from_either_format(fmt: str) -> None:
    encode = CODEC.encode_json if fmt == "json" else CODEC.encode_avro
    content_type = JSON_CONTENT_TYPE if fmt == "json" else AVRO_CONTENT_TYPE
    r = record(
        encode("followup_due", due_event()), headers=(("content-type", content_type.encode()),)
    )
    out = shown_due(r)
    lines = out.splitlines()
    assert lines[0] == (
        "2026-05-01 12:00:01 UTC  followup.due [partition 2, offset 17]  "
        "post_event for user-1 (post_event_high_emotion, attempt 1)"
    )
    assert "    | Hi! 🎉 We hope your event was wonderful!" in lines
    assert "    | Tell us how it went." in lines  # blank lines of the message dropped
    assert "    due 2026-05-01 11:59:59 UTC, published 2.0 s later" in lines
    assert "    conversation conv-1, booking bk-1, follow-up f-1" in lines
    assert out.endswith("\n\n")  # a blank line between records
    safe(out)


def test_local_time_is_the_callers_zone() -> None:
    r = record(CODEC.encode_json("followup_due", due_event()))
    event, _ = decode_due(CODEC, r)
    out = format_due(r, event, None, timezone(timedelta(hours=2), "CEST"))
    assert out.startswith("2026-05-01 14:00:01 CEST  ")


def test_hostile_values_are_escaped() -> None:
    event = due_event(
        user_id=f"u{HOSTILE}",
        message=f"line one{HOSTILE}\nline two",
        conversation_id=HOSTILE,
        template_id=HOSTILE,
    )
    out = shown_due(record(CODEC.encode_json("followup_due", event)))
    safe(out)
    assert "\\x1b[2J\\x1b]0;pwned\\x07\\r\\x00\\u202e\\x9b" in out
    assert "| line one\\x1b[2J" in out


def test_a_long_message_is_cut() -> None:
    message = "\n".join(f"line {n} " + "x" * 500 for n in range(20))
    out = shown_due(record(CODEC.encode_json("followup_due", due_event(message=message))))
    message_lines = [line for line in out.splitlines() if line.startswith("    |")]
    assert len(message_lines) == MESSAGE_LINES_MAX + 1
    assert message_lines[-1] == f"    | … ({20 - MESSAGE_LINES_MAX} more lines)"
    assert all(len(line) <= len("    | ") + TEXT_MAX for line in message_lines)
    assert message_lines[0].endswith("…")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b'{"event_id": 1}', "cannot be decoded: followup_due: field 'event_id'"),
        (b"\xff\xfe not json", "cannot be decoded: followup_due: neither Avro nor valid UTF-8"),
        (b"\xc3\x01\x00\x00\x00\x00\x00\x00\x00\x00", "unknown writer schema fingerprint"),
        (b"\x00\x00\x00\x00\x07\x02ab", "Confluent wire format (schema registry): not decoded"),
        (None, "cannot be decoded: no value (a tombstone)"),
    ],
)
def test_what_cannot_be_decoded_is_shown_safely(value: bytes | None, says: str) -> None:
    out = shown_due(record(value, key=b"\xff" + HOSTILE.encode()))
    assert says in out
    assert "key (" in out
    safe(out)


def test_the_content_type_header_explains_a_failure() -> None:
    r = record(b"\x01\x02", headers=(("content-type", AVRO_CONTENT_TYPE.encode()),))
    assert f"(content-type {AVRO_CONTENT_TYPE})" in shown_due(r)


# --- followup.dlq -----------------------------------------------------------------------


def dlq_headers(**overrides: bytes | None) -> tuple[tuple[str, bytes | None], ...]:
    headers: dict[str, bytes | None] = {
        "content-type": b"application/json",
        "dlq.original.topic": b"message.emotion_scored",
        "dlq.original.partition": b"4",
        "dlq.original.offset": b"1234",
        "dlq.error.type": b"rule_violation",
        "dlq.error.message": b"message_emotion_scored: field 'score': must be <= 1 (got 7.5)",
    }
    headers.update(overrides)
    return tuple(headers.items())


def test_a_dead_letter_says_where_it_came_from_and_why() -> None:
    value = b'{"event_id":"e1","score":7.5}'
    out = format_dead(record(value, headers=dlq_headers(), topic="followup.dlq"), UTC)
    assert out.splitlines() == [
        "2026-05-01 12:00:01 UTC  followup.dlq [partition 2, offset 17]",
        "    from message.emotion_scored [partition 4, offset 1234]",
        "    rule_violation: message_emotion_scored: field 'score': must be <= 1 (got 7.5)",
        "    key (6 bytes) 'user-1'",
        f"    value ({len(value)} bytes) '{value.decode()}'",
        "",
    ]


def test_a_hostile_dead_letter_is_shown_safely() -> None:
    headers = dlq_headers(
        **{
            "dlq.original.topic": HOSTILE.encode(),
            "dlq.error.type": b"\xff\xfe",
            "dlq.error.message": (HOSTILE * 200).encode(),
        }
    )
    r = record(HOSTILE.encode() * 100, key=HOSTILE.encode(), headers=headers)
    out = format_dead(r, UTC)
    safe(out)
    assert "from \\x1b[2J" in out
    assert "\ufffd\ufffd: " in out  # undecodable header bytes replaced, not raw
    assert all(len(line) < 500 for line in out.splitlines())  # cut, not the whole value


def test_a_binary_value_is_shown_in_hex() -> None:
    value = b"\xc3\x01" + bytes(range(60))
    out = format_dead(record(value, key=None, headers=dlq_headers()), UTC)
    assert "    key none" in out
    assert f"    value ({len(value)} bytes, not text) c3 01 00 01 02" in out
    assert out.splitlines()[4].endswith("…")


def test_missing_headers_and_an_omitted_value() -> None:
    headers = (("dlq.omitted", b"value"), ("dlq.original.value.bytes", b"2000000"))
    out = format_dead(record(None, headers=headers), UTC)
    assert "from ? [partition ?, offset ?]" in out
    assert "unknown error: " in out
    assert "    value none" in out
    assert "value left out; the value had 2000000 bytes" in out


def test_show_bytes() -> None:
    assert show_bytes(None) == "none"
    assert show_bytes(b"abc") == "(3 bytes) 'abc'"
    assert show_bytes("é".encode()) == "(2 bytes) 'é'"
    assert show_bytes(b"a" * 300, 10) == "(300 bytes) 'aaaaaaaaa…'"
    assert show_bytes(b"\xff\x00") == "(2 bytes, not text) ff 00"


# --- --json -----------------------------------------------------------------------------


def test_json_of_a_follow_up() -> None:
    r = record(CODEC.encode_avro("followup_due", due_event()))
    event, problem = decode_due(CODEC, r)
    line = record_json(r, event, problem)
    assert line.endswith("\n")
    assert line.count("\n") == 1
    out = json.loads(line)
    assert (out["topic"], out["partition"], out["offset"]) == ("followup.due", 2, 17)
    assert out["timestamp"] == "2026-05-01T12:00:01.250Z"
    assert out["event"]["scheduled_at"] == "2026-05-01T11:59:59.250Z"
    assert out["event"]["message"] == due_event()["message"]


def test_json_of_a_dead_letter_with_hostile_bytes() -> None:
    r = record(b"\xff" + HOSTILE.encode(), key=HOSTILE.encode(), headers=dlq_headers())
    line = record_json(r, dead_letter=True)
    assert line.isascii()
    assert line[:-1].isprintable()  # control characters escaped by JSON
    out = json.loads(line)
    assert out["origin"] == {"topic": "message.emotion_scored", "partition": 4, "offset": 1234}
    assert out["error"]["type"] == "rule_violation"
    assert out["key"] == HOSTILE
    assert base64.b64decode(out["value"]["base64"]) == b"\xff" + HOSTILE.encode()
    assert out["headers"]["dlq.original.offset"] == "1234"


def test_json_of_what_cannot_be_decoded() -> None:
    r = record(b"nope")
    event, problem = decode_due(CODEC, r)
    out = json.loads(record_json(r, event, problem))
    assert out["value"] == "nope"
    assert "neither Avro nor valid UTF-8 JSON" in out["error"]


# --- order and the command line ----------------------------------------------------------


def test_records_of_several_partitions_in_time_order_each_partition_in_its_own() -> None:
    def r(partition: int, offset: int, ts: int) -> Record:
        return Record("t", partition, offset, ts, None, None)

    p0 = [r(0, 0, 10), r(0, 1, 5), r(0, 2, 30)]  # a producer's clock may step back
    p1 = [r(1, 0, 7), r(1, 1, 20)]
    merged = in_order([p0, p1])
    assert [(x.partition, x.offset) for x in merged] == [(1, 0), (0, 0), (0, 1), (1, 1), (0, 2)]
    for part in (p0, p1):
        assert [x for x in merged if x in part] == part


def test_the_command_line() -> None:
    args = cli._parser().parse_args(["tail"])
    assert (args.topic, args.from_beginning, args.json, args.max, args.timeout) == (
        "followup.due",
        False,
        False,
        None,
        None,
    )
    args = cli._parser().parse_args(
        ["tail", "followup.dlq", "--from-beginning", "--json", "--max", "3", "--timeout", "2.5"]
    )
    assert (args.topic, args.from_beginning, args.json, args.max, args.timeout) == (
        "followup.dlq",
        True,
        True,
        3,
        2.5,
    )
    for bad in (["other.topic"], ["--max", "0"], ["--timeout", "0"], ["--timeout", "soon"]):
        with pytest.raises(SystemExit) as exc:
            cli._parser().parse_args(["tail", *bad])
        assert exc.value.code == 2


def test_a_follow_up_says_which_locale_and_version_its_text_was() -> None:
    r = record(
        CODEC.encode_avro("followup_due", {**due_event(), "locale": "fr", "template_version": 3})
    )
    first = shown_due(r).splitlines()[0]
    assert first.endswith("post_event for user-1 (post_event_high_emotion fr v3, attempt 1)")


def test_french_spaces_show_as_spaces_controls_stay_escaped() -> None:
    assert printable("Bonjour\u00a0! Prix\u202f: 5\u2009€") == "Bonjour\u00a0! Prix\u202f: 5\u2009€"
    assert printable("a\u00a0b\x1b[2J\u202ec") == "a\u00a0b\\x1b[2J\\u202ec"
    lines = message_lines("Bonjour\u00a0! 🎉\nÀ bientôt\u00a0?")
    assert lines == ["| Bonjour\u00a0! 🎉", "| À bientôt\u00a0?"]
